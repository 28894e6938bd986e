"""keepbest: Keras training that keeps the provably best model, on disk.

``import keepbest`` is light: ``read_record`` needs no TensorFlow, and ``train`` and
``load_best`` import Keras only when called.

Example:

    >>> import keepbest
    >>> result = keepbest.train("configs/quickstart.yaml")   # doctest: +SKIP
    >>> keepbest.read_record(result.run_dir).verified        # doctest: +SKIP
    True
    >>> model = keepbest.load_best(result.run_dir)           # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keepbest.errors import KeepbestError
from keepbest.rundir.record import BestRecord, read_record

__version__ = "0.1.0"
__all__ = ["BestRecord", "KeepbestError", "TrainResult", "load_best", "read_record", "train"]

_LAZY = {
    "train": "keepbest.training",
    "TrainResult": "keepbest.training",
    "load_best": "keepbest.inference.load",
}

if TYPE_CHECKING:
    from keepbest.inference.load import load_best
    from keepbest.training import TrainResult, train


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keepbest' has no attribute {name!r}")
