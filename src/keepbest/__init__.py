"""keepbest: Keras training that keeps the provably best model, on disk.

``import keepbest`` is light (a few milliseconds): every name but the errors is imported
when first used; ``read_record`` and ``read_spec`` need no TensorFlow, and ``train``,
``KeepBest`` and ``load_best`` import Keras. A program that imports keepbest keeps its
own signal handlers; only the ``keepbest`` and ``train`` commands watch stop signals from
their first line (``keepbest.signals``).

In a script of your own, ``keepbest.KeepBest(run_dir, ...)`` in ``model.fit`` keeps the
best model with the same promises as ``keepbest.train``.

Example:

    >>> import keepbest
    >>> result = keepbest.train("configs/quickstart.yaml")   # doctest: +SKIP
    >>> keepbest.read_record(result.run_dir).verified        # doctest: +SKIP
    True
    >>> keepbest.read_spec(result.run_dir).raw_shape        # doctest: +SKIP
    (8, 8)
    >>> model = keepbest.load_best(result.run_dir)           # doctest: +SKIP
"""

from __future__ import annotations

from keepbest import signals as _signals

if _signals.started_as_the_command():  # keepbest's own process: stop signals watched
    _signals.watch_start_up()  # before anything heavy is imported (see keepbest.signals)

from typing import TYPE_CHECKING

from keepbest.errors import KeepbestError, StoppedForResume
from keepbest.version import __version__ as __version__

__all__ = [
    "BestRecord",
    "DataSpec",
    "KeepBest",
    "KeepbestError",
    "StoppedForResume",
    "TrainResult",
    "load_best",
    "read_record",
    "read_spec",
    "train",
]

_LAZY = {
    "BestRecord": "keepbest.rundir.record",
    "read_record": "keepbest.rundir.record",
    "KeepBest": "keepbest.callbacks.keep_best",
    "train": "keepbest.training",
    "TrainResult": "keepbest.training",
    "load_best": "keepbest.inference.load",
    "read_spec": "keepbest.inference.load",
    "DataSpec": "keepbest.data.spec",
}

if TYPE_CHECKING:
    from keepbest.callbacks.keep_best import KeepBest
    from keepbest.data.spec import DataSpec
    from keepbest.inference.load import load_best, read_spec
    from keepbest.rundir.record import BestRecord, read_record
    from keepbest.training import TrainResult, train


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keepbest' has no attribute {name!r}")
