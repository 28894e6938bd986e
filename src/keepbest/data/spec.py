"""What the model needs to know about the data, and the in-memory forms data takes.

``DataSpec`` is written to the run dir (``data_spec.json``): it is what a builder gets
(``input_shape``, ``num_classes``, ...) and what ``load_best``, ``evaluate`` and
``predict`` need later. Imports no TensorFlow.

Example:

    >>> from keepbest.data.spec import DataSpec, shape_text
    >>> spec = DataSpec(input_shape=(8, 8, 1), num_classes=10, target_shape=())
    >>> DataSpec.from_json(spec.to_json()) == spec, shape_text(spec.input_shape)
    (True, '(N, 8, 8, 1)')
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a model builder, ``load_best`` and ``predict`` need to know about the data."""

    input_shape: tuple[int, ...]
    num_classes: int | None
    target_shape: tuple[int, ...]
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    image_size: tuple[int, int] | None = None
    color_mode: str | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DataSpec:
        raw = json.loads(text)
        for key in ("input_shape", "target_shape", "image_size"):
            if raw.get(key) is not None:
                raw[key] = tuple(raw[key])
        return cls(**raw)


@dataclasses.dataclass
class Arrays:
    """Features (or image file paths) and targets held in memory."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: np.ndarray) -> Arrays:
        return Arrays(self.x[index], self.y[index])


@dataclasses.dataclass
class Features:
    """Model inputs to predict on: numbers, or image file paths (decoded per batch)."""

    x: np.ndarray
    names: list[str] | None = None  # image files, relative to the input folder


def shape_text(shape: tuple[int, ...], samples: int | None = None) -> str:
    """A batch's shape as people write it: ``(N, 8, 8, 1)``, or ``(500, 64)``."""
    return "(" + ", ".join(["N" if samples is None else str(samples), *map(str, shape)]) + ")"
