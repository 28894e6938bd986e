"""Sample weights and class weights: how much each sample counts in the loss.

Sample weights come with the data (``data.weight_key`` of an .npz, ``data.weight_column``
of a CSV, the third array of a factory's ``(x, y, w)``), for the training and the
validation data alike. ``train.class_weight`` weighs the classes of the training labels
and multiplies the training data's sample weights; the validation data keeps its own,
as in Keras' ``fit``. Either way the result is one float32 weight per sample (``Arrays.w``),
carried as the third element of every batch (``keepbest.data.pipelines``): fit's loss and
keepbest's measuring passes (``keepbest.measure``) then count the very same weights. A
class's weight is what Keras' ``fit(class_weight=...)`` gives it (``class_weight[y]``,
1.0 for a class not in the map, one-hot labels by their argmax), computed here instead
of in ``fit`` so that the measuring pass counts it too. Imports no TensorFlow.

Example:

    >>> import numpy as np
    >>> from keepbest.data.weights import class_weight_table
    >>> y = np.array([0, 0, 0, 1])
    >>> class_weight_table("balanced", y, 2, None, "data.y_key: 'y'")  # 4 / (2 * count)
    array([0.6666667, 2.       ], dtype=float32)
    >>> class_weight_table({1: 3.0}, y, 2, None, "data.y_key: 'y'")  # 1.0 if not given
    array([1., 3.], dtype=float32)
"""

from __future__ import annotations

import numpy as np

from keepbest.config.references import did_you_mean
from keepbest.data.spec import Arrays, DataSpec
from keepbest.errors import DataError

SETTING = "train.class_weight"


def sample_weights(w, count: int, where: str) -> np.ndarray:
    """``w`` as float32 weights, one per sample, each finite and 0 or more (Keras would
    take a negative weight, and a NaN makes every loss NaN from the first step)."""
    w = np.asarray(w)
    if w.dtype.kind not in "fiub":
        raise DataError(f"{where}: sample weights must be numbers, got dtype {w.dtype}")
    if w.shape != (count,):
        raise DataError(
            f"{where}: sample weights must be one number per sample, shape ({count},); "
            f"got shape {w.shape}"
        )
    with np.errstate(over="ignore"):  # 1e39 becomes inf in float32: reported below
        weights = w.astype("float32")
    bad = ~np.isfinite(weights) | (weights < 0)
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(
            f"{where}: {int(bad.sum())} sample weights are negative, NaN or infinite (the "
            f"first is sample {first}: {float(w[first]):g}); weights must be finite, 0 or more"
        )
    return weights


def class_ids(y: np.ndarray) -> np.ndarray:
    """The class of each label as Keras' class weighting reads it: a class id, the argmax
    of a one-hot row, a single column squeezed."""
    if y.ndim > 1:
        y = np.argmax(y, axis=-1) if y.shape[-1] != 1 else np.squeeze(y, axis=-1)
    return np.round(y).astype("int64")


def class_weight_table(
    setting: dict | str,
    y: np.ndarray,
    num_classes: int,
    class_names: list[str] | None,
    labels_where: str,
) -> np.ndarray:
    """The weight of each class id (float32, 1.0 for a class the map leaves out):
    ``setting`` is the configured map or ``balanced``, ``y`` the training labels."""
    table = np.ones(num_classes, dtype="float32")
    if setting == "balanced":  # sklearn's: n_samples / (n_classes * count), classes present
        present, counts = np.unique(class_ids(y), return_counts=True)
        table[present] = len(y) / (len(present) * counts)
        return table
    seen: dict[int, object] = {}
    for key, weight in setting.items():
        label = _class_of(key, num_classes, class_names, labels_where)
        if label in seen:
            raise DataError(
                f"{SETTING}: {seen[label]!r} and {key!r} are the same class; give it once"
            )
        seen[label] = key
        table[label] = weight
    return table


def _class_of(key, num_classes: int, names: list[str] | None, labels_where: str) -> int:
    """The class id a key of the map names: a class name (text labels), or a class id."""
    if isinstance(key, str) and names and key in names:
        return names.index(key)
    if isinstance(key, str) and not key.strip().isdigit():
        if names:
            raise DataError(
                f"{SETTING}: {key!r} is not a class of {labels_where} (its classes: "
                f"{', '.join(names)}){did_you_mean(key, names)}"
            )
        raise DataError(
            f"{SETTING}: {key!r} is not a class: {labels_where} holds class ids 0 to "
            f"{num_classes - 1}; name the classes by id"
        )
    label = int(key)
    if not 0 <= label < num_classes:
        named = f" ({', '.join(names)})" if names else ""
        raise DataError(
            f"{SETTING}: class {label} is not a class of {labels_where}, whose classes are "
            f"0 to {num_classes - 1}{named}"
        )
    return label


def class_weighted(
    arrays: Arrays, setting: dict | str, spec: DataSpec, labels_where: str, weights_where: str
) -> Arrays:
    """``arrays`` (the training data) with each sample's weight multiplied by its class's
    (``DataError`` for labels that have no classes). ``weights_where``: how the data's own
    sample weights are given, which the message for regression targets suggests."""
    y = arrays.y
    if y.dtype.kind == "f":
        raise DataError(
            f"{SETTING}: {labels_where} holds floats (regression targets), which have no "
            f"classes; weigh the samples instead ({weights_where})"
        )
    if y.ndim > 2:
        raise DataError(
            f"{SETTING}: takes one class per sample (class ids or one-hot rows), but the "
            f"labels have shape {y.shape[1:]}; weigh the samples instead ({weights_where})"
        )
    num_classes = spec.num_classes if y.ndim == 1 else y.shape[-1]
    table = class_weight_table(setting, y, num_classes, spec.class_names, labels_where)
    weights = table[class_ids(y)]
    return Arrays(arrays.x, y, weights if arrays.w is None else arrays.w * weights)
