"""What the model needs to know about the data, and the in-memory forms data takes.

``DataSpec`` is written to the run dir (``data_spec.json``): it is what a builder gets
(``input_shape``, ``num_classes``, ...) and what ``load_best``, ``evaluate`` and
``predict`` need later, and what ``keepbest.read_spec`` tells a user: the class names, the
raw inputs the training files held (shape, dtype, range, feature names) and the
preprocessing that turns them into the model's inputs (``keepbest.data.preprocessing``).
Imports no TensorFlow.

Example:

    >>> from keepbest.data.preprocessing import Preprocessing
    >>> from keepbest.data.spec import DataSpec, shape_text
    >>> spec = DataSpec(input_shape=(8, 8, 1), num_classes=10, target_shape=(),
    ...                 raw_shape=(8, 8), preprocessing=Preprocessing(scale=1 / 16))
    >>> DataSpec.from_json(spec.to_json()) == spec, shape_text(spec.raw_shape)
    (True, '(N, 8, 8)')
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from keepbest.data.preprocessing import Preprocessing


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a model builder, ``load_best`` and ``predict`` need to know about the data.

    ``input_shape`` is one sample as the *model* takes it (after preprocessing, what a
    builder gets); ``raw_shape``, ``raw_dtype`` and ``raw_range`` describe one sample as
    the training files hold it, which is what the model ``load_best`` returns takes.
    A ``None`` in ``raw_shape`` is a size that may vary (an image's height and width).
    """

    input_shape: tuple[int, ...]
    num_classes: int | None
    target_shape: tuple[int, ...]
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    image_size: tuple[int, int] | None = None
    color_mode: str | None = None
    raw_shape: tuple[int | None, ...] | None = None  # default: input_shape
    raw_dtype: str | None = None  # the training file's dtype (decoded images: uint8)
    raw_range: tuple[float, float] | None = None  # min and max of the raw training inputs
    # None: not recorded (a run from before keepbest recorded it): inputs as the model's
    preprocessing: Preprocessing | None = None
    # the training data is a factory's tf.data.Dataset: a resume at step s reads (replays)
    # s batches to get there; every other source is resumed by index arithmetic
    replays_on_resume: bool = False

    def __post_init__(self) -> None:
        if self.raw_shape is None:
            object.__setattr__(self, "raw_shape", tuple(self.input_shape))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DataSpec:
        raw = json.loads(text)
        for key in ("input_shape", "target_shape", "image_size", "raw_shape", "raw_range"):
            if raw.get(key) is not None:
                raw[key] = tuple(raw[key])
        if raw.get("preprocessing") is not None:
            raw["preprocessing"] = Preprocessing.from_dict(raw["preprocessing"])
        elif "preprocessing" not in raw and raw.get("image_size") is not None:
            # Runs from before it was recorded: images were resized and scaled to [0, 1].
            raw["preprocessing"] = Preprocessing(tuple(raw["image_size"]), 1 / 255)
            raw["raw_shape"] = (None, None, raw["input_shape"][-1])
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON values (what ``data_spec.json`` holds)."""
        return json.loads(self.to_json())

    @property
    def steps(self) -> Preprocessing:
        """The preprocessing steps (none if not recorded)."""
        return self.preprocessing or Preprocessing()


@dataclasses.dataclass
class Arrays:
    """Features (or image file paths), targets and, if any, sample weights (float32, one
    per sample: ``keepbest.data.weights``) held in memory."""

    x: np.ndarray
    y: np.ndarray
    w: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: np.ndarray) -> Arrays:
        return Arrays(self.x[index], self.y[index], None if self.w is None else self.w[index])


@dataclasses.dataclass
class Features:
    """Model inputs to predict on: numbers, or image file paths (decoded per batch)."""

    x: np.ndarray
    names: list[str] | None = None  # image files, relative to the input folder


def shape_text(shape: tuple[int | None, ...], samples: int | None = None) -> str:
    """A batch's shape as people write it: ``(N, 8, 8, 1)``, or ``(500, 64)``; a size
    that may vary is ``any``."""
    sizes = ["any" if d is None else str(d) for d in shape]
    return "(" + ", ".join(["N" if samples is None else str(samples), *sizes]) + ")"


def shape_fits(shape: tuple[int | None, ...], expected: tuple[int | None, ...]) -> bool:
    """Whether one sample's ``shape`` is ``expected`` (where ``None`` fits any size)."""
    return len(shape) == len(expected) and all(
        e is None or (s is not None and int(s) == e) for s, e in zip(shape, expected, strict=True)
    )
