"""What the benchmarks train and save, and the probes that time keepbest's real code.

Models are stacks of square Dense layers (fast to build, parameter count set by width
and depth); data is a learnable synthetic classification problem. keepbest trains them
through a ``python`` data factory and a ``module:function`` builder from this module, and
the baselines use the very same model, data pipelines and compile arguments.

Timing never changes keepbest's code: ``patched`` wraps a method or function for the
duration of one run (an epoch clock in ``keras.Model.fit``, a stopwatch around
``ResumeStore.save``...) and puts the original back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from common import MIB

SEED = 0


@dataclasses.dataclass(frozen=True)
class Workload:
    """A model size and the data it trains on (input width = layer width)."""

    name: str
    width: int
    depth: int
    samples: int = 256
    val_samples: int = 64
    batch_size: int = 32
    classes: int = 10

    @property
    def params(self) -> int:
        hidden = self.depth * (self.width * self.width + self.width)
        return hidden + self.width * self.classes + self.classes

    @property
    def mib(self) -> float:
        return self.params * 4 / MIB

    @property
    def largest_mib(self) -> float:
        """The largest variable's size (a hidden kernel, width x width float32)."""
        return self.width * self.width * 4 / MIB

    @property
    def steps(self) -> int:
        return -(-self.samples // self.batch_size)

    def data_kwargs(self) -> dict[str, int]:
        return {
            "features": self.width,
            "classes": self.classes,
            "samples": self.samples,
            "val_samples": self.val_samples,
        }

    def describe(self) -> str:
        return (
            f"{self.name}: Dense {self.depth}x{self.width}, {self.params / 1e6:.1f}M params "
            f"({self.mib:.0f} MiB, largest variable {self.largest_mib:.0f} MiB), "
            f"{self.steps} steps of {self.batch_size}"
        )


WORKLOADS = {
    # steps dominated by framework overhead: ~1 ms of arithmetic each
    "small": Workload("small", width=32, depth=2, samples=32000, val_samples=4096),
    "10M": Workload("10M", width=1280, depth=6, samples=2048, val_samples=512, batch_size=64),
    # a mid-size model in very short epochs: where per-epoch saves cost the most
    "14M": Workload("14M", width=1536, depth=6, samples=64, val_samples=64, batch_size=16),
    "100M": Workload("100M", width=4096, depth=6),
    # as many parameters as 100M, in two layers: a largest variable 3x as large
    "100M-wide": Workload("100M-wide", width=7094, depth=2),
    "300M": Workload("300M", width=7094, depth=6),  # saved, never trained
}


def dense_model(width: int, depth: int, input_shape, num_classes: int):
    """The benchmark model (a keepbest builder): ``depth`` Dense(width) + a softmax classifier."""
    import keras

    inputs = keras.Input(input_shape)
    x = inputs
    for _ in range(depth):
        x = keras.layers.Dense(width, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))


def make_data(features: int, classes: int, samples: int, val_samples: int):
    """A keepbest ``python`` data factory: one Gaussian cluster per class (learnable, so
    ``val_loss`` improves from the first epochs on)."""
    rng = np.random.default_rng(SEED)
    centers = rng.standard_normal((classes, features), dtype=np.float32)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, classes, n)
        x = centers[y] + rng.standard_normal((n, features), dtype=np.float32)
        return x / np.float32(features**0.5), y

    return draw(samples), draw(val_samples)


def keepbest_config(
    workload: Workload,
    output_dir: Path,
    epochs: int,
    learning_rate: float,
    monitor: str = "val_loss",
    **checkpoint: Any,
) -> dict:
    """The keepbest config that trains ``workload`` (``checkpoint`` adds keys)."""
    return {
        "name": "bench",
        "output_dir": str(output_dir),
        "seed": SEED,
        "data": {
            "source": "python",
            "factory": "workloads:make_data",
            "kwargs": workload.data_kwargs(),
            "batch_size": workload.batch_size,
        },
        "model": {
            "builder": "workloads:dense_model",
            "kwargs": {"width": workload.width, "depth": workload.depth},
        },
        "optimizer": {"name": "sgd", "learning_rate": learning_rate},
        "loss": "sparse_categorical_crossentropy",
        "train": {"epochs": epochs},
        "checkpoint": {"monitor": monitor, **checkpoint},
    }


def bare_setup(config: dict):
    """The baseline's config, pipelines and compiled model: keepbest's own, so both sides
    train the same model on the same batches."""
    import keras

    from keepbest.config import load_config
    from keepbest.data.pipelines import load_pipelines
    from keepbest.models import build_model, compile_args

    cfg = load_config(config)
    pipes = load_pipelines(cfg)
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg, pipes.spec)
    compile_args(cfg).apply(model)
    return cfg, pipes, model


def bare_fit(model, pipes, epochs: int, callbacks: list, validation: bool = True) -> None:
    """``model.fit`` as a user would call it on the same data: no keepbest callbacks;
    Keras validates at each epoch end unless ``validation`` is False."""
    model.fit(
        pipes.train_stream(0),
        steps_per_epoch=pipes.steps_per_epoch,
        epochs=epochs,
        validation_data=pipes.validation if validation else None,
        callbacks=callbacks,
        verbose=0,
        shuffle=False,
    )


def built_model(workload: Workload):
    """A compiled model with its optimizer built (what ResumeStore.save needs)."""
    import keras

    keras.utils.set_random_seed(SEED)
    model = dense_model(workload.width, workload.depth, (workload.width,), workload.classes)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    return model


def epoch_clock():
    """A callback that timestamps epoch starts (wall and process CPU time), the first
    train step and the end of fit."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.starts: list[tuple[float, float]] = []
            self.first_step: float | None = None
            self.ended: tuple[float, float] | None = None

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.starts.append((time.perf_counter(), time.process_time()))

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            if self.first_step is None:
                self.first_step = time.perf_counter()

        def on_train_end(self, logs: dict | None = None) -> None:
            self.ended = (time.perf_counter(), time.process_time())

        @property
        def durations(self) -> list[float]:
            """Each epoch's wall time from its start to the next one's (all epoch-end work
            included)."""
            return self._spans(0)

        @property
        def cpu_times(self) -> list[float]:
            """The same spans in CPU time of the whole process (every thread): less
            sensitive than wall time to other processes on a busy machine."""
            return self._spans(1)

        def _spans(self, clock: int) -> list[float]:
            ends = [*self.starts[1:], self.ended]
            return [end[clock] - start[clock] for start, end in zip(self.starts, ends, strict=True)]

    return EpochClock()


@contextlib.contextmanager
def patched(owner: Any, name: str, wrap: Callable[[Callable], Callable]) -> Iterator[None]:
    """Replace ``owner.name`` by ``wrap(original)`` for the duration of the block."""
    had_own = name in vars(owner)
    original = getattr(owner, name)
    setattr(owner, name, wrap(original))
    try:
        yield
    finally:
        if had_own:
            setattr(owner, name, original)
        else:
            delattr(owner, name)


def _timer(record: Callable[[float, float], None]) -> Callable[[Callable], Callable]:
    """A ``patched`` wrapper that calls ``record(start, duration)`` after each call."""

    def wrap(original: Callable) -> Callable:
        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                record(started, time.perf_counter() - started)

        return timed

    return wrap


def stopwatch(durations: list[float]) -> Callable[[Callable], Callable]:
    """A ``patched`` wrapper that appends each call's duration to ``durations``."""
    return _timer(lambda started, duration: durations.append(duration))


def stamped(calls: list[tuple[float, float]]) -> Callable[[Callable], Callable]:
    """A ``patched`` wrapper that appends each call's (start, duration) to ``calls``, so
    that calls can be placed in the epochs an ``epoch_clock`` timed."""
    return _timer(lambda started, duration: calls.append((started, duration)))


def within_epochs(clock, calls: list[tuple[float, float]]) -> list[float]:
    """For each epoch ``clock`` timed, the seconds of the ``calls`` that started in it."""
    bounds = [start for start, _ in clock.starts] + [clock.ended[0]]
    return [
        sum(duration for started, duration in calls if begin <= started < end)
        for begin, end in itertools.pairwise(bounds)
    ]


def with_callback(callback) -> Callable[[Callable], Callable]:
    """A ``patched`` wrapper for ``keras.Model.fit`` that puts ``callback`` first."""

    def wrap(original: Callable) -> Callable:
        @functools.wraps(original)
        def fit(self, *args, callbacks=None, **kwargs):
            return original(self, *args, callbacks=[callback, *(callbacks or [])], **kwargs)

        return fit

    return wrap


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM is missing from /proc/self/status")
