"""keepbest: Keras training that keeps the provably best model, on disk.

``import keepbest`` is light: ``read_record`` and ``read_spec`` need no TensorFlow, and
``train`` and ``load_best`` import Keras only when called.

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

from keepbest.errors import KeepbestError
from keepbest.rundir.record import BestRecord, read_record

__version__ = "0.1.0"
__all__ = [
    "BestRecord",
    "DataSpec",
    "KeepbestError",
    "TrainResult",
    "load_best",
    "read_record",
    "read_spec",
    "train",
]

_LAZY = {
    "train": "keepbest.training",
    "TrainResult": "keepbest.training",
    "load_best": "keepbest.inference.load",
    "read_spec": "keepbest.inference.load",
    "DataSpec": "keepbest.data.spec",
}

if TYPE_CHECKING:
    from keepbest.data.spec import DataSpec
    from keepbest.inference.load import load_best, read_spec
    from keepbest.training import TrainResult, train


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keepbest' has no attribute {name!r}")
