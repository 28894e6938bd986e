"""best.weights.h5 is Keras' own layout, written and read a slice at a time: plain Keras
reads keepbest's files, keepbest reads Keras' files, for every kind of layer a model is
made of, and neither direction holds a second copy of a large variable."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from keepbest import variable_memory, weights_h5
from keepbest.errors import KeepbestError


def build_model(seed: int):
    """Dense, Conv2D, BatchNormalization, Embedding, a nested model and a custom layer."""
    import keras

    @keras.saving.register_keras_serializable(package="keepbest_tests")
    class Scale(keras.layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(shape=(input_shape[-1],), initializer="random_normal")

        def call(self, x):
            return x * self.scale

    keras.utils.set_random_seed(seed)
    image = keras.Input((8, 8, 1), name="image")
    tokens = keras.Input((4,), dtype="int32", name="tokens")
    x = keras.layers.Conv2D(4, 3, padding="same")(image)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Flatten()(x)
    nested = keras.Sequential(
        [keras.Input((256,)), keras.layers.Dense(64), keras.layers.Dense(32)], name="nested"
    )
    x = nested(x)
    e = keras.layers.Flatten()(keras.layers.Embedding(500, 8)(tokens))
    x = keras.layers.Concatenate()([x, e])
    x = Scale()(x)
    model = keras.Model([image, tokens], keras.layers.Dense(3)(x))
    # Non-trivial BatchNormalization statistics, as after training.
    bn = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    bn.moving_mean.assign(np.linspace(-1, 1, 4).astype("float32"))
    bn.moving_variance.assign(np.linspace(1, 2, 4).astype("float32"))
    return model


def weights(model) -> list[np.ndarray]:
    return [np.asarray(v) for v in model.weights]


def layout(path) -> list[tuple]:
    found = []
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: found.append(
                (name, getattr(obj, "shape", None), str(getattr(obj, "dtype", "")), dict(obj.attrs))
            )
        )
    return found


@pytest.fixture(params=["view", "slices"])
def sliced(monkeypatch, request):
    """Slices of 1 KB: every variable above 256 floats is large. A CPU variable is written
    from a view of its memory; with ``slices`` it is written as a GPU or mirrored one
    would be, a slice at a time. Reading is always by slices."""
    monkeypatch.setattr(variable_memory, "SLICE_BYTES", 1024)
    if request.param == "slices":
        monkeypatch.setattr(variable_memory, "host_view", lambda variable: None)


def test_keras_reads_keepbest_files_and_keepbest_reads_keras_files(tmp_path, sliced):
    source = build_model(seed=1)
    ours, theirs = tmp_path / "ours.weights.h5", tmp_path / "keras.weights.h5"
    weights_h5.save(source, ours)
    source.save_weights(theirs)
    assert layout(ours) == layout(theirs)  # the same groups, datasets, shapes, dtypes, attrs

    read_by_keras = build_model(seed=2)
    read_by_keras.load_weights(ours)
    read_by_keepbest = build_model(seed=3)
    weights_h5.load(read_by_keepbest, theirs)
    round_trip = build_model(seed=4)
    weights_h5.load(round_trip, ours)
    expected = weights(source)
    assert any(
        not np.array_equal(a, b) for a, b in zip(expected, weights(build_model(5)), strict=True)
    )
    for model in (read_by_keras, read_by_keepbest, round_trip):
        for want, got in zip(expected, weights(model), strict=True):
            assert np.array_equal(want, got)


def test_a_file_that_does_not_fit_is_refused_with_keras_message(tmp_path, sliced):
    import keras

    path = tmp_path / "m.weights.h5"
    wide = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32), keras.layers.Dense(2)])
    weights_h5.save(wide, path)
    narrow = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16), keras.layers.Dense(2)])
    with pytest.raises(
        ValueError, match=r"variable\.shape=\(64, 16\), Received: value\.shape=\(64, 32\)"
    ):
        weights_h5.load(narrow, path)


def test_the_layout_is_pinned_to_the_installed_keras(monkeypatch, tmp_path):
    from keras.src.saving import saving_lib

    assert weights_h5.mismatches() == []

    def changed(self, key, value):  # a Keras upgrade that writes differently
        return None

    monkeypatch.setattr(saving_lib.H5IOStore, "__setitem__", changed)
    assert weights_h5.mismatches() == ["saving_lib.H5IOStore.__setitem__"]
    with pytest.raises(KeepbestError, match=r"changed saving_lib\.H5IOStore\.__setitem__"):
        weights_h5.save(build_model(seed=1), tmp_path / "x.weights.h5")


MEMORY = textwrap.dedent(
    """
    import sys
    import numpy as np, keras
    from keepbest import variable_memory, weights_h5

    def hwm_and_rss():
        fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return [int(fields[k].split()[0]) / 1024 for k in ("VmHWM", "VmRSS")]

    def measured(action):
        open("/proc/self/clear_refs", "w").write("5")  # reset the peak to the current RSS
        before = hwm_and_rss()[1]
        action()
        return hwm_and_rss()[0] - before

    from pathlib import Path
    from keepbest.rundir.resume_store import Progress, ResumeStore, restore

    rows = int(sys.argv[2])
    model = keras.Sequential([keras.Input((4096,)), keras.layers.Dense(rows, use_bias=False)])
    model.compile(optimizer="sgd", loss="mse")
    model.optimizer.build(model.trainable_variables)
    path = Path(sys.argv[1])
    x = np.ones((2, 4096), "float32")
    model.predict(x, verbose=0)  # traced before: the step below measures only a run
    save = measured(lambda: weights_h5.save(model, path))
    load = measured(lambda: weights_h5.load(model, path))
    use = measured(lambda: model.predict(x, verbose=0))  # reads every variable
    state = measured(lambda: ResumeStore(path.parent).save(model, Progress(epoch=1), 1, []))
    latest = ResumeStore(path.parent).latest()
    resume = measured(lambda: restore(model, latest))
    after = measured(lambda: model.predict(x, verbose=0))
    print(save, load, use, state, resume, after)
    """
)


def test_saving_and_loading_hold_no_copy_of_a_large_variable(tmp_path):
    """Peak memory above the model, for a 64 MiB and a 256 MiB variable: small (slices
    of 8 MiB), and not growing with the variable. Keras' own save_weights and
    load_weights each peak at two or three times the variable."""
    extra = {}
    for rows in (4096, 16384):  # a 4096 x rows float32 kernel: 64 MiB, 256 MiB
        (tmp_path / str(rows)).mkdir()
        weights = tmp_path / str(rows) / "best.weights.h5"
        done = subprocess.run(
            [sys.executable, "-c", MEMORY, str(weights), str(rows)],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        extra[rows] = [float(v) for v in done.stdout.split()]
    # One bound for both sizes, well below the smaller variable (64 MiB): neither holds a
    # copy of its variable, and a 4x larger variable may not take more. A load holds one
    # 8 MiB slice buffer, which TensorFlow reads in place (measured: 8 MiB for both; with a
    # fresh tensor per slice the allocator kept 8 to 72 MiB). A save writes a view of the
    # variable (measured ~1 MiB). After a load the model runs without copying its
    # variables (TensorFlow's copy-on-read mode, which the sliced writes set, is switched
    # off again). The resume state (weights and optimizer) is written and restored the
    # same way (measured 0 to 10 MiB).
    for save, load, use, state, resume, after in extra.values():
        assert save < 20 and load < 20 and use < 20, extra  # MiB
        assert state < 20 and resume < 20 and after < 20, extra


@pytest.mark.parametrize("stored", ["<f4", ">f4", "<f2", "bfloat16"])
def test_slices_reach_the_variable_in_place_whatever_dtype_they_were_stored_in(stored, monkeypatch):
    """A slice of the variable's own dtype is handed to TensorFlow over the read buffer
    itself (no copy); another dtype (big-endian or bfloat16, which DLPack cannot carry from
    numpy, or half) is converted. Either way the variable ends with the stored values."""
    import keras
    import ml_dtypes
    import tensorflow as tf

    dtype = np.dtype(ml_dtypes.bfloat16) if stored == "bfloat16" else np.dtype(stored)
    values = (np.arange(300 * 7, dtype="float32").reshape(300, 7) % 64) / 2  # exact in all
    variable = keras.Variable(np.zeros((300, 7), "float32"))
    reads = []

    def read_rows(view, start, stop):
        reads.append(view.ctypes.data)
        view[...] = values[start:stop].astype(dtype)

    monkeypatch.setattr(variable_memory, "SLICE_BYTES", 7 * dtype.itemsize * 64)  # 5 slices
    variable_memory.assign_in_slices(variable, (300, 7), dtype, read_rows)
    assert len(reads) == 5 and len(set(reads)) == 1  # one buffer, reused
    assert reads[0] % 64 == 0  # aligned as TensorFlow's CPU kernels expect
    np.testing.assert_array_equal(np.asarray(variable), values)

    # What DLPack carries is shared when aligned, and copied when not: TensorFlow's kernels
    # abort the process on a tensor whose data is not aligned to 64 bytes.
    aligned = variable_memory._aligned_empty((65, 7), dtype)
    aligned[...] = values[:65].astype(dtype)
    for array, share in ((aligned, stored in ("<f4", "<f2")), (aligned[1:], False)):
        assert array.ctypes.data % 64 == (0 if array is aligned else 7 * dtype.itemsize)
        tensor = variable_memory._shared_tensor(array)
        assert (np.asarray(tensor).ctypes.data == array.ctypes.data) == share, stored
        expected = values[: len(array)] if array is aligned else values[1:65]
        assert bool(tf.reduce_all(tf.cast(tensor, tf.float32) * 1 == expected))  # a kernel
