"""Features and targets made trainable, and a file's labels mapped to a run's classes.

Integer targets are class ids (0 or more); text targets become class ids in sorted order,
jointly for the training and validation data; float targets are regression. A file given
to ``evaluate --data`` has its labels matched to the run's classes by name. Imports no
TensorFlow.

Example:

    >>> import numpy as np
    >>> from keepbest.data.labels import finish_targets
    >>> from keepbest.data.spec import Arrays
    >>> train = Arrays(np.zeros((3, 1)), np.array(["dog", "cat", "dog"]))
    >>> finish_targets(train, None, "data.y_key"), train.y.tolist()
    (['cat', 'dog'], [1, 0, 1])
"""

from __future__ import annotations

import numpy as np

from keepbest.data.spec import Arrays, DataSpec, shape_fits, shape_text
from keepbest.errors import DataError


def as_features(x: np.ndarray, where: str) -> np.ndarray:
    """Numeric features as float32, one row per sample (a 1-D array is one feature); all
    finite (a NaN would make every loss NaN from the first step)."""
    if x.dtype.kind not in "fiub":
        raise DataError(f"{where}: features must be numbers, got an array of dtype {x.dtype}")
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"{where}: there are no samples")
    if x.dtype.kind == "f":
        finite = np.isfinite(x).reshape(len(x), -1).all(axis=1)
        if not finite.all():
            first = int(np.argmin(finite))
            raise DataError(
                f"{where}: {int((~finite).sum())} samples hold NaN or infinite values (the "
                f"first is sample {first}); fill them in or leave those samples out"
            )
    x = x[:, None] if x.ndim == 1 else x
    return x.astype("float32") if x.dtype != np.float32 else x


def typed_csv_targets(*columns: np.ndarray) -> list[np.ndarray]:
    """CSV target columns (text): numbers become numbers (integral ones int64 class ids);
    if any value of any column is not a number, all stay text."""
    try:
        numeric = [col.astype("float64") for col in columns]
    except ValueError:
        return list(columns)
    if all(np.all(col == np.round(col)) for col in numeric):
        return [col.astype("int64") for col in numeric]
    return [col.astype("float32") for col in numeric]


def finish_targets(
    train: Arrays, val: Arrays | None, where: str, declared: list[str] | None = None
) -> list[str] | None:
    """Make targets trainable in place; return the class names if labels were text.

    Text labels become class ids in sorted order (jointly for training and validation), or
    in the order of the ``declared`` class names; integer labels are class ids (an
    ``(n, 1)`` column is squeezed) and must be >= 0.
    """
    parts = [a for a in (train, val) if a is not None]
    if train.y.dtype.kind in "USO":
        found = sorted({str(v) for a in parts for v in a.y.ravel().tolist()})
        names = declared or found
        unknown = [name for name in found if name not in names]
        if unknown:
            raise DataError(
                f"{where}: labels {', '.join(unknown[:5])} are not among the class names "
                f"it declares ({', '.join(names)})"
            )
        lookup = {name: i for i, name in enumerate(names)}
        for a in parts:
            if a.y.ndim != 1:
                raise DataError(f"{where}: text labels must be one per sample, got {a.y.shape}")
            a.y = np.array([lookup[str(v)] for v in a.y.tolist()], dtype="int64")
        return names
    for a in parts:
        if a.y.dtype.kind not in "fiub":
            raise DataError(f"{where}: targets must be numbers or text, got dtype {a.y.dtype}")
        if a.y.dtype.kind in "iub":
            a.y = a.y.reshape(-1) if a.y.shape[1:] == (1,) else a.y
            a.y = a.y.astype("int64")
            if a.y.size and a.y.min() < 0:
                raise DataError(
                    f"{where}: integer targets are class ids and must be 0 or more, found "
                    f"{a.y.min()} (use text labels, or float targets for regression)"
                )
        else:
            a.y = a.y.astype("float32")
    return None


def as_run_labels(y: np.ndarray, names: list[str] | None, spec: DataSpec, where: str):
    """Targets re-coded to the run's class ids (a file's ids follow its own label names)."""
    if (names is None) != (spec.class_names is None):
        kind = "text or folder labels" if spec.class_names else "numeric targets"
        raise DataError(f"{where}: the run was trained on {kind}; the file's labels differ")
    if names is not None:
        unknown = [name for name in names if name not in spec.class_names]
        if unknown:
            raise DataError(
                f"{where}: labels {', '.join(unknown)} are not among the run's classes "
                f"({', '.join(spec.class_names)})"
            )
        y = np.array([spec.class_names.index(name) for name in names], dtype="int64")[y]
    if spec.num_classes is not None and y.size and int(y.max()) >= spec.num_classes:
        raise DataError(
            f"{where}: class id {int(y.max())} is out of range; the model has "
            f"{spec.num_classes} classes (0 to {spec.num_classes - 1})"
        )
    if spec.num_classes is None and tuple(y.shape[1:]) != tuple(spec.target_shape):
        raise DataError(
            f"{where}: the model predicts targets of shape {shape_text(spec.target_shape)}, "
            f"the file has {shape_text(y.shape[1:], len(y))}"
        )
    return y


def check_features(x: np.ndarray, spec: DataSpec, where: str) -> np.ndarray:
    """``x`` as float32 if it holds numbers in the shape of the run's raw inputs (the
    training files' format), else a DataError naming the expected and the given shape."""
    import math

    expected = shape_text(spec.raw_shape)
    if x.dtype.kind not in "fiub":
        raise DataError(f"{where}: the model takes numbers {expected}; got dtype {x.dtype}")
    if x.ndim == 0 or not shape_fits(x.shape[1:], spec.raw_shape):
        given = shape_text(tuple(x.shape[1:]), len(x)) if x.ndim else "a single number"
        hint = ""
        if x.ndim and not spec.steps.is_identity and shape_fits(x.shape[1:], spec.input_shape):
            hint = (
                f"; it looks preprocessed already: give the raw values, as in the training "
                f"files (the model preprocesses them itself: {spec.steps.describe()})"
            )
        elif (
            x.ndim
            and None not in spec.raw_shape
            and math.prod(x.shape[1:]) == math.prod(spec.raw_shape)
        ):
            hint = f"; reshape it to {expected}"
        raise DataError(f"{where}: the model expects input of shape {expected}, got {given}{hint}")
    return x.astype("float32", copy=False)


def _loss_kind(loss: str) -> str:
    """``sparse`` (class ids), ``one_hot`` (one column per class) or ``other``, by the
    Keras loss's name (``sparse_categorical_crossentropy``, ``CategoricalCrossentropy``)."""
    name = loss.lower().replace("_", "")
    if "sparse" in name:
        return "sparse"
    if name.startswith("categorical"):
        return "one_hot"
    return "other"


def targets_problems(
    spec: DataSpec,
    float_targets: bool,
    loss: str,
    output_shape,
    labels_where: str,
    builder: str,
) -> tuple[list[str], list[str]]:
    """What the targets, the loss and the model's output shape say about each other
    before any training: (errors, warnings), one line each, naming the config key.

    ``float_targets``: the targets are floats (regression); ``output_shape``: the model's
    (a list for several outputs, None when unknown); ``labels_where``: the config key that
    holds the labels (``data.y_key: 'y'``); ``builder``: the configured builder.

    >>> from keepbest.data.spec import DataSpec
    >>> spec = DataSpec(input_shape=(4,), num_classes=10, target_shape=())
    >>> targets_problems(spec, False, "sparse_categorical_crossentropy", (None, 3),
    ...                  "data.y_key: 'y'", "m:build")[0][0][:60]
    'model.builder: m:build gives 3 outputs per sample, but data.'
    """
    errors: list[str] = []
    warnings: list[str] = []
    if isinstance(output_shape, list):
        if len(output_shape) != 1:
            errors.append(
                f"model.builder: {builder} returns a model with {len(output_shape)} outputs; "
                "keepbest trains a model with one output"
            )
            return errors, warnings
        output_shape = output_shape[0]
    outputs = tuple(output_shape[1:]) if output_shape is not None else None
    kind = _loss_kind(loss)
    classes = spec.num_classes
    if kind == "sparse" and float_targets:
        errors.append(
            f"loss: {loss} takes class ids (integers), but {labels_where} holds floats "
            "(regression targets); store the labels as integers, or use a regression loss "
            "such as mean_squared_error"
        )
    elif kind == "sparse" and classes is None and tuple(spec.target_shape) not in ((), (1,)):
        errors.append(
            f"loss: {loss} takes one class id per sample, but the targets have shape "
            f"{shape_text(tuple(spec.target_shape))}; use a loss that fits them"
        )
    elif kind == "one_hot" and classes is not None:
        errors.append(
            f"loss: {loss} takes one-hot targets (one column per class), but {labels_where} "
            "holds class ids; use sparse_categorical_crossentropy"
        )
    if kind == "sparse" and classes is not None and outputs:
        units = outputs[-1]
        if units is not None and units < classes:
            errors.append(
                f"model.builder: {builder} gives {units} outputs per sample, but "
                f"{labels_where} holds class ids 0 to {classes - 1}; give the model "
                f"{classes} outputs (a builder that asks for num_classes is told {classes})"
            )
        elif units is not None and units > classes:
            warnings.append(
                f"model.builder: {builder} gives {units} outputs per sample for {classes} "
                f"classes (ids 0 to {classes - 1}); outputs {classes} and up never match a label"
            )
    if classes is None and kind != "sparse" and outputs is not None and float_targets:
        targets = tuple(spec.target_shape)
        squeezed = {(), (1,)}
        fits = None in outputs or outputs == targets or {outputs, targets} <= squeezed
        if not fits:
            errors.append(
                f"model.builder: {builder} gives outputs of shape {shape_text(outputs)}, but "
                f"the targets have shape {shape_text(targets)}; make its output "
                f"{shape_text(targets)} (a builder that asks for target_shape is told "
                f"{targets})"
            )
    return errors, warnings
