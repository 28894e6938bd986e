"""keepbest: Keras training that keeps the provably best model, on disk.

``import keepbest`` is light: ``read_record`` and ``read_spec`` need no TensorFlow, and
``train``, ``KeepBest`` and ``load_best`` import Keras only when used.

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

from typing import TYPE_CHECKING

from keepbest.errors import KeepbestError, StoppedForResume
from keepbest.rundir.record import BestRecord, read_record
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
    from keepbest.training import TrainResult, train


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keepbest' has no attribute {name!r}")
