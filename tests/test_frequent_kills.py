"""Issue 22, frequent kills: a run killed -9 again and again, each attempt living less
than 20 resume-state writes (what the default budget, max_overhead 0.05, waits before
the first state of a resumed attempt), still finishes, bit for bit, and ``show`` counts
the attempts that died without progress. Real processes, real SIGKILL, real files."""

from __future__ import annotations

import json
import signal
import textwrap
import time
from pathlib import Path

import pytest

from conftest import run_cli, small_config
from keepbest.atomic import sha256_file
from keepbest.callbacks.resume import Cadence
from keepbest.rundir.layout import RunDir
from keepbest.rundir.resume_store import ResumeStore, read_attempts
from test_resume import assert_same_run, start_training, write

# A model whose state costs much more to write than its steps cost to train: a frozen
# table (as pretrained embeddings are) of 256 MB that every state and best checkpoint
# holds and no step updates, beside a 64-unit MLP. A state takes about 0.35 s to write
# here, a step a few ms: the budget's first state after a resume comes ~7 s in.
FROZEN = textwrap.dedent(
    """
    import keras


    @keras.saving.register_keras_serializable(package="frequent_kills")
    class FrozenTable(keras.layers.Layer):
        def __init__(self, rows, **kwargs):
            super().__init__(**kwargs)
            self.rows = rows

        def build(self, input_shape):
            self.table = self.add_weight(
                shape=(self.rows, input_shape[-1]), initializer="ones", trainable=False,
                name="table",
            )

        def call(self, x):
            return x * self.table[0]

        def get_config(self):
            return {**super().get_config(), "rows": self.rows}


    def build(input_shape, num_classes, rows):
        inputs = keras.Input(input_shape)
        x = FrozenTable(rows)(keras.layers.Flatten()(inputs))
        x = keras.layers.Dropout(0.2)(keras.layers.Dense(64, activation="relu")(x))
        return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
    """
)
CFG = small_config(
    model={"builder": "frozen:build", "kwargs": {"rows": 1_000_000}},
    optimizer={"name": "adam", "learning_rate": 0.001},
    data={"batch_size": 8},  # 180 steps an epoch: states land mid-epoch
    train={"epochs": 9},  # about 6 s of training
)
MOST_ATTEMPTS = 16  # the run must finish within this many
BUDGET = Cadence()  # the default cadence, before any failure is seen (today's rule)


def with_builder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "frozen.py").write_text(FROZEN, encoding="utf-8")
    return write(folder, CFG)


def attempts_on_disk(run_dir: Path) -> int:
    return len(read_attempts(run_dir).attempts) if RunDir(run_dir).attempts_file.exists() else 0


def newest_state(run_dir: Path):
    state = ResumeStore(run_dir).latest()
    return state.manifest if state else None


@pytest.mark.slow
def test_attempts_killed_before_20_state_writes_still_finish_bit_for_bit(tmp_path_factory):
    reference = with_builder(tmp_path_factory.mktemp("frequent-ref"))
    done = run_cli("train", "--config", str(reference), cwd=reference.parent)
    assert done.returncode == 0, done.stderr
    reference_run = reference.parent / "runs" / "t"
    cost = newest_state(reference_run).write_seconds
    # Each attempt lives half of what the budget waits after a resume (20 state writes),
    # counted from when it starts training (its record in resume/attempts.json), so a
    # killed attempt's start-up (imports, restoring the state) is extra. 2.5 s at least:
    # room to trace the train function and write one state.
    lifetime = max(2.5, 0.5 * cost / BUDGET.max_overhead)

    config = with_builder(tmp_path_factory.mktemp("frequent"))
    run_dir = config.parent / "runs" / "t"
    without_progress, attempts, finished, seen = 0, 0, False, []
    while attempts < MOST_ATTEMPTS and not finished:
        before = newest_state(run_dir)
        process = start_training(config)
        deadline = time.monotonic() + 120
        while attempts_on_disk(run_dir) == attempts and process.poll() is None:
            assert time.monotonic() < deadline, "the attempt never began"
            time.sleep(0.01)
        if attempts_on_disk(run_dir) == attempts:  # nothing left to train: it ended
            stdout, stderr = process.communicate()  # (the last kill came after training)
            assert process.returncode == 0 and "nothing to train" in stdout, stderr
            finished = True
            break
        attempts += 1
        began = time.monotonic()
        # The second attempt dies at once, before any state: an attempt without progress
        # (the next one's first state comes twice as early); the others live `lifetime`.
        life = 0.0 if attempts == 2 else lifetime
        while time.monotonic() - began < life and process.poll() is None:
            time.sleep(0.01)
        if process.poll() is not None:
            _, stderr = process.communicate()
            assert process.returncode == 0, stderr
            finished = True
            break
        lived = time.monotonic() - began
        process.send_signal(signal.SIGKILL)
        process.communicate()
        assert process.returncode == -signal.SIGKILL
        after = newest_state(run_dir)
        steps = (before.global_step if before else 0, after.global_step if after else 0)
        seen.append(f"attempt {attempts}: {lived:.2f} s, from step {steps[0]} to {steps[1]}")
        without_progress += steps[1] <= steps[0]
        if before is not None:
            # Today's rule (the budget) would have written no state in this attempt: it
            # wants the first one 20 state writes after the attempt began.
            assert not BUDGET.due(10**9, lived, last_cost=before.write_seconds), seen
    assert finished, f"the run did not finish in {MOST_ATTEMPTS} attempts: {seen}"
    assert attempts >= 4 and without_progress >= 1, seen

    assert_same_run(run_dir, reference_run)
    assert sha256_file(run_dir / "best.weights.h5") == sha256_file(
        reference_run / "best.weights.h5"
    )

    shown = run_cli("show", str(run_dir))
    assert shown.returncode == 0, shown.stderr
    lines = dict(line.split(None, 1) for line in shown.stdout.splitlines() if line[:1] != " ")
    assert lines["attempts"] == (
        f"{attempts}; {without_progress} died without progress (no newer resume state)"
    )
    as_json = json.loads(run_cli("show", str(run_dir), "--json").stdout)
    assert as_json["attempts"] == {"count": attempts, "died_without_progress": without_progress}
    record = read_attempts(run_dir)
    assert [a.ended for a in record.attempts[:-1]] == [None] * (attempts - 1)  # all killed
    # the uninterrupted run: one attempt, nothing to say
    assert "attempts" not in run_cli("show", str(reference_run)).stdout
    assert json.loads(run_cli("show", str(reference_run), "--json").stdout)["attempts"] == {
        "count": 1,
        "died_without_progress": 0,
    }
