"""The features and code paths that make keepbest cheap (timings live in scripts/bench)."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile

import numpy as np
import pytest

from conftest import small_config
from keepbest.config import load_config
from keepbest.errors import ConfigError, CorruptFileError


@pytest.mark.parametrize("steps", [0, -1, True, 1.5])
def test_train_eval_steps_must_be_a_positive_count(steps):
    cfg = small_config(checkpoint={"monitor": "loss", "train_eval_steps": steps})
    with pytest.raises(ConfigError, match=r"checkpoint\.train_eval_steps"):
        load_config(cfg)


def test_bounded_train_eval_pass_measures_and_verifies_the_first_batches(tmp_path):
    import keepbest
    from keepbest.data.sources import read_sources

    cfg = small_config(
        output_dir=str(tmp_path),
        checkpoint={"monitor": "loss", "train_eval_steps": 2},
        train={"epochs": 2},
    )
    result = keepbest.train(cfg)

    # Measured independently: the training arrays in file order, in batches of 128.
    train, _, _ = read_sources(load_config(cfg))
    model = keepbest.load_best(result.run_dir)

    def loss(count: int) -> float:
        x, y = train.x[:count], train.y[:count]
        return model.evaluate(x, y, batch_size=128, verbose=0, return_dict=True)["loss"]

    first_two, everything = loss(2 * 128), loss(len(train))
    assert len(train) > 2 * 128
    assert result.record.value == first_two == result.record.verified_value
    assert everything != first_two
    assert [row["epoch_end_loss"] for row in result.history][result.record.epoch - 1] == (
        pytest.approx(first_two)
    )


# --------------------------------------------------------------------------- hashing writes


def test_hashing_writer_hashes_exactly_the_bytes_on_disk(tmp_path):
    from keepbest.atomic import HashingWriter, sha256_file

    reused = bytearray(b"a" * 1000)
    with HashingWriter(tmp_path / "f.bin") as out:
        out.write(b"header")
        out.write(reused)
        reused[:] = b"b" * 1000  # changed after write: what was written must count
        out.write(memoryview(np.arange(1000, dtype="float32")))
        assert out.tell() == 6 + 1000 + 4000
        assert not out.seekable()
        with pytest.raises(io.UnsupportedOperation):
            out.seek(0)
    data = (tmp_path / "f.bin").read_bytes()
    assert data[6:1006] == b"a" * 1000
    assert out.hexdigest() == hashlib.sha256(data).hexdigest() == sha256_file(tmp_path / "f.bin")


def test_hashing_writer_knows_its_hash_only_when_closed(tmp_path):
    from keepbest.atomic import HashingWriter

    out = HashingWriter(tmp_path / "f.bin")
    out.write(b"x")
    with pytest.raises(RuntimeError, match="closed"):
        out.hexdigest()
    out.close()
    assert out.hexdigest() == hashlib.sha256(b"x").hexdigest()


def test_a_zip_streamed_into_a_hashing_writer_reads_back_with_numpy(tmp_path):
    from keepbest.atomic import HashingWriter

    arrays = {"a": np.arange(12.0).reshape(3, 4), "b": np.array(7, dtype="int64")}
    with (
        HashingWriter(tmp_path / "s.npz") as out,
        zipfile.ZipFile(out, "w", zipfile.ZIP_STORED, allowZip64=True) as archive,
    ):
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array)
    with np.load(tmp_path / "s.npz") as loaded:
        for name, array in arrays.items():
            np.testing.assert_array_equal(loaded[name], array)


def test_sha256_file_with_fsync_syncs_that_file_and_hashes_it(tmp_path, monkeypatch):
    from keepbest import atomic

    path = tmp_path / "f.bin"
    path.write_bytes(b"payload" * 1000)
    synced = []

    def record_fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)

    monkeypatch.setattr(atomic.os, "fsync", record_fsync)
    assert atomic.sync_and_hash(path) == hashlib.sha256(b"payload" * 1000).hexdigest()
    assert synced == [path.stat().st_ino]


# --------------------------------------------------------------------------- resume states


def _dense_model(width: int):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((width,)), keras.layers.Dense(width)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


@pytest.mark.parametrize("way", ["view", "slices"])
def test_resume_state_written_in_slices_is_the_same_npy_and_restores(tmp_path, monkeypatch, way):
    """A large variable goes into the state from a view of its memory (a CPU variable) or
    in slices (as a GPU or mirrored one would); either way the same .npy as numpy's."""
    from keepbest import variable_memory
    from keepbest.atomic import sha256_file
    from keepbest.rundir.resume_store import Progress, ResumeStore, restore

    monkeypatch.setattr(variable_memory, "SLICE_BYTES", 1000)  # the 64x64 kernel: 16 slices
    if way == "slices":
        monkeypatch.setattr(variable_memory, "host_view", lambda variable: None)
    model = _dense_model(64)
    manifest = ResumeStore(tmp_path).save(model, Progress(epoch=1), 1, history=[])

    state = ResumeStore(tmp_path).latest()
    assert manifest.sha256 == sha256_file(state.weights_path)
    kernel = np.asarray(model.variables[0])
    whole = io.BytesIO()
    np.lib.format.write_array(whole, kernel)
    with zipfile.ZipFile(state.weights_path) as archive:
        assert archive.read("model/000000.npy") == whole.getvalue()

    model.variables[0].assign(np.zeros_like(kernel))
    restore(model, state)
    np.testing.assert_array_equal(np.asarray(model.variables[0]), kernel)


# --------------------------------------------------------------------------- load_best


def test_load_best_loads_nothing_from_a_file_whose_checksum_fails(tmp_path, monkeypatch):
    import keras

    import keepbest

    result = keepbest.train(small_config(output_dir=str(tmp_path), train={"epochs": 1}))
    weights = result.run_dir / "best.weights.h5"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    loads = []
    monkeypatch.setattr(keras.Model, "load_weights", lambda *args, **kwargs: loads.append(1))

    with pytest.raises(CorruptFileError, match="does not match the sha256"):
        keepbest.load_best(result.run_dir)
    assert loads == []
