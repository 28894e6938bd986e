"""Preprocessing that travels with the model: how a source's raw values become its inputs.

Each data source (``keepbest.data.sources``) declares, once, what it does to the values its
files hold before the model sees them: resize images (bilinear), scale (``x * scale``),
add a channel axis. The declaration is a ``Preprocessing``, recorded in the run's
``data_spec.json`` next to the raw inputs' shape, dtype and range, and its steps are stock
Keras layers (``Resizing``, ``Rescaling``, ``Reshape``) that hold no weights:

- the training pipeline (``keepbest.data.pipelines``) runs these very layers on every batch;
- ``load_best`` and ``keepbest export`` put the same layers in front of the trained model
  (``with_preprocessing``), so the model a user gets back, the ``.keras`` file and the
  SavedModel take the training files' raw values, and compute from them exactly what
  training computed (the same float32 operations in the same order).

The trained model itself is unchanged: ``best.weights.h5`` holds its weights only and
loads with ``model.load_weights`` into the architecture in ``model.json``. Sources whose
files already hold the model's inputs (npz, csv, python) declare no steps. Imports no
TensorFlow (``layers`` and ``with_preprocessing`` import Keras when called).

Example:

    >>> from keepbest.data.preprocessing import Preprocessing
    >>> digits = Preprocessing(scale=1 / 16, add_channel=True)
    >>> digits.model_input_shape((8, 8)), digits.describe()
    ((8, 8, 1), 'x * 0.0625, then add a channel axis')
    >>> Preprocessing.from_dict(digits.to_dict()) == digits, Preprocessing().is_identity
    (True, True)
"""

from __future__ import annotations

import dataclasses
from typing import Any

# The name of the raw-input layer of a model ``with_preprocessing`` made.
RAW_INPUT_NAME = "raw_inputs"


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """The steps from raw values to the model's inputs, applied in this order."""

    resize: tuple[int, int] | None = None  # (height, width), bilinear: keras.layers.Resizing
    scale: float | None = None  # x * scale in float32: keras.layers.Rescaling
    add_channel: bool = False  # (..., h, w) -> (..., h, w, 1): keras.layers.Reshape

    @property
    def is_identity(self) -> bool:
        return self.resize is None and self.scale is None and not self.add_channel

    def model_input_shape(self, raw_shape: tuple) -> tuple:
        """The shape of one sample after preprocessing (images: ``(height, width, c)``)."""
        shape = tuple(raw_shape)
        if self.resize is not None:
            shape = (*self.resize, *shape[2:])
        if self.add_channel:
            shape = (*shape, 1)
        return shape

    def describe(self) -> str:
        """The steps in words, e.g. ``resize to 32x32 (bilinear), then x * 0.00392157``."""
        steps = []
        if self.resize is not None:
            steps.append(f"resize to {self.resize[0]}x{self.resize[1]} (bilinear)")
        if self.scale is not None:
            steps.append(f"x * {self.scale:.6g}")
        if self.add_channel:
            steps.append("add a channel axis")
        return ", then ".join(steps) if steps else "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "resize": list(self.resize) if self.resize else None,
            "scale": self.scale,
            "add_channel": self.add_channel,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Preprocessing:
        resize = raw.get("resize")
        return cls(
            resize=tuple(int(d) for d in resize) if resize else None,
            scale=raw.get("scale"),
            add_channel=bool(raw.get("add_channel", False)),
        )

    def resize_layer(self):
        """The ``Resizing`` layer (None without a resize): the training pipeline runs it on
        each decoded image, before images of different sizes are batched."""
        if self.resize is None:
            return None
        import keras

        height, width = self.resize
        return keras.layers.Resizing(height, width, interpolation="bilinear", name="resize")

    def batch_layers(self, raw_shape: tuple) -> list:
        """The steps after the resize, as Keras layers: what the pipeline runs on a batch."""
        import keras

        layers = []
        if self.scale is not None:
            layers.append(keras.layers.Rescaling(self.scale, name="rescale"))
        if self.add_channel:
            shape = self.model_input_shape(raw_shape)
            if None in shape:
                raise ValueError(f"a channel axis needs a fixed sample shape, not {raw_shape}")
            layers.append(keras.layers.Reshape(shape, name="add_channel"))
        return layers

    def layers(self, raw_shape: tuple) -> list:
        """Every step as a Keras layer, in order (none holds weights)."""
        resize = self.resize_layer()
        return ([resize] if resize is not None else []) + self.batch_layers(raw_shape)


def with_preprocessing(model, preprocessing: Preprocessing | None, raw_shape: tuple):
    """``model`` behind its preprocessing: a functional model from raw float32 inputs of
    ``raw_shape`` (per sample) to ``model``'s outputs, named ``<model>_raw``. It adds no
    weights: its weights are ``model``'s, in the same order. Without preprocessing steps,
    ``model`` itself."""
    if preprocessing is None or preprocessing.is_identity:
        return model
    import keras

    inputs = keras.Input(shape=tuple(raw_shape), dtype="float32", name=RAW_INPUT_NAME)
    x = inputs
    for layer in preprocessing.layers(raw_shape):
        x = layer(x)
    return keras.Model(inputs, model(x), name=f"{model.name}_raw")
