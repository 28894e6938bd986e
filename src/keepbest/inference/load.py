"""``keepbest.load_best``: the run's best model, rebuilt and checked, from any directory;
``keepbest.read_spec``: what it takes and what its outputs mean, without TensorFlow.

The architecture comes from the run's ``model.json`` (Keras' serialized config, so no
builder source is needed for models made of Keras layers), or, for a model Keras cannot
serialize, from the builder named in ``config.yaml``. The weights file's sha256 is checked
against ``best.json`` before it is loaded. ``model.json`` is deserialized in Keras'
safe_mode (a Lambda layer's Python code is refused, nothing is unpickled), and every way
loading can fail is a one-line ``KeepbestError`` that names the file and the fix.

The model ``load_best`` returns takes the raw values of the training files (the bundled
digits' 0..16 pixels, decoded images of any size): the source's preprocessing
(``keepbest.data.preprocessing``) sits in front of the trained model as weightless Keras
layers, the same ones the training pipeline ran. ``raw_inputs=False`` gives the trained
model alone, which takes preprocessed inputs (what ``best.weights.h5`` belongs to).

Example:

    >>> import keepbest
    >>> spec = keepbest.read_spec("runs/digits-mlp")        # doctest: +SKIP
    >>> spec.raw_shape, spec.raw_range, spec.class_names     # doctest: +SKIP
    ((8, 8), (0.0, 16.0), None)
    >>> model = keepbest.load_best("runs/digits-mlp")       # doctest: +SKIP
    >>> model.predict(raw_x[:5]).argmax(axis=1)             # doctest: +SKIP
    array([0, 1, 2, 3, 4])
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from keepbest.checkpoint import load_best_weights
from keepbest.config.schema import BUILTIN_BUILDERS
from keepbest.data.spec import DataSpec
from keepbest.errors import ConfigError, CorruptFileError, KeepbestError, NoBestCheckpointError
from keepbest.rundir.layout import RunDir
from keepbest.rundir.record import chosen, read_record, verify_checksum


def rebuild_model(run: RunDir):
    """An untrained, uncompiled model with the run's architecture (under the run's
    mixed-precision policy: its layers' dtypes, and the loss scaling compile adds)."""
    from keepbest.models import build_model, precision_policy

    cfg = run.read_config()
    if not run.model_file.is_file():
        return build_model(cfg, read_spec(run.path))
    try:
        with precision_policy(cfg.train.mixed_precision):
            return _deserialize(run.model_file)
    except (TypeError, ValueError, KeyError) as exc:
        problem = _deserialization_problem(run.model_file, exc)
    if cfg.model.builder in BUILTIN_BUILDERS:
        raise KeepbestError(problem)
    try:  # the builder's module may define (and register) the custom classes
        return build_model(cfg, read_spec(run.path))
    except ConfigError as exc:
        raise KeepbestError(
            f"{problem}; rebuilding it with {cfg.model.builder} failed too: {exc.problems[-1]}"
        ) from None


def _deserialize(model_file: Path):
    """The model ``model.json`` describes, in safe_mode, without its compile settings
    (``load_best`` compiles from ``config.yaml`` when asked)."""
    import keras

    config = json.loads(model_file.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ValueError(f"a JSON {type(config).__name__} is no serialized model")
    config.pop("compile_config", None)
    model = keras.saving.deserialize_keras_object(config, safe_mode=True)
    if not isinstance(model, keras.Model):
        raise ValueError(f"it describes a {type(model).__name__}, not a Keras model")
    return model


def _custom_classes(node: Any) -> list[tuple[str, str]]:
    """(module, class name) of every serialized object in ``node`` that is not Keras' own."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        module, name = node.get("module"), node.get("class_name")
        if isinstance(module, str) and isinstance(name, str) and module.split(".")[0] != "keras":
            found.append((module, name))
        for value in node.values():
            found += [item for item in _custom_classes(value) if item not in found]
    elif isinstance(node, list):
        for value in node:
            found += [item for item in _custom_classes(value) if item not in found]
    return found


def _deserialization_problem(model_file: Path, exc: Exception) -> str:
    text = str(exc)
    if "safe_mode" in text:
        return (
            f"{model_file} holds Python code (a Lambda layer), which keepbest never loads "
            "(Keras safe_mode); use a registered custom layer instead of the Lambda and retrain"
        )
    try:
        custom = _custom_classes(json.loads(model_file.read_text(encoding="utf-8")))
    except ValueError:
        custom = []
    missing = [(module, name) for module, name in custom if f"'{name}'" in text] or custom
    if missing:
        module, name = missing[0]
        return (
            f"{model_file} needs the custom class {name!r} from module {module!r}, which is "
            f"not imported: install {module} or put its folder on PYTHONPATH "
            f"(in Python, import {module} before load_best)"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"{model_file} cannot be deserialized ({first}); restore the file, or retrain"


def read_spec(run_dir: str | Path) -> DataSpec:
    """What the run's model takes and gives, from ``data_spec.json`` (imports no
    TensorFlow): ``class_names`` (None for numeric labels and regression),
    ``num_classes``, ``raw_shape``/``raw_dtype``/``raw_range`` (one sample as the training
    files hold it: the input of the model ``load_best`` returns), ``feature_names`` (CSV
    columns), ``preprocessing`` and ``input_shape`` (the trained model's own input)."""
    run = RunDir(run_dir)
    try:
        text = run.spec_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NoBestCheckpointError(
            f"{run.path} is not a keepbest run dir ({run.spec_file.name} is missing): "
            "give the run's folder, e.g. runs/NAME"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{run.spec_file} cannot be read ({exc})") from None
    try:
        return DataSpec.from_json(text)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CorruptFileError(
            f"{run.spec_file} is not a valid data spec ({type(exc).__name__}: {exc}); "
            "restore the run dir from a backup, or retrain"
        ) from None


def _compile(model, run: RunDir) -> None:
    """Compile as the run was: from ``config.yaml``, or, for a run compiled by a script or
    by its builder, from the compile settings Keras wrote into ``model.json``."""
    from keepbest.config.schema import BUILDER
    from keepbest.models import compile_args, resolve_builder

    cfg = run.read_config()
    if not cfg.compiled_by_model:
        compile_args(cfg).apply(model)
        return
    if cfg.loss == BUILDER:
        resolve_builder(cfg)  # its module registers the custom objects its compile used
    try:
        config = json.loads(run.model_file.read_text(encoding="utf-8")).get("compile_config")
    except (OSError, ValueError, AttributeError):
        config = None
    if not config:
        raise KeepbestError(
            f"{run.path}: the script's compile settings are not in {run.model_file.name}; "
            "load with compile=False and compile the model yourself"
        )
    try:
        model.compile_from_config(config)
    except (TypeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KeepbestError(
            f"{run.model_file} holds compile settings that cannot be rebuilt ({first}): "
            "import the module that defines the custom loss or metric first, or load with "
            "compile=False"
        ) from None


def load_best(
    run_dir: str | Path, compile: bool = True, raw_inputs: bool = True, which: str = "better"
):
    """Return the run's best model with verified weights; compiled as configured unless
    ``compile=False``. It takes the training files' raw values (see ``read_spec``);
    ``raw_inputs=False`` returns the trained model alone, without the preprocessing.
    ``which``: ``best``, ``average`` (``checkpoint.average``'s averaged model, if it was
    kept) or ``better`` (the average if it beat the best, else the best);
    ``keepbest.rundir.record.chosen`` says which a run's ``better`` is."""
    from keepbest.data.preprocessing import with_preprocessing

    run = RunDir(run_dir)
    record = read_record(run.path)
    model_of = chosen(record, which)
    spec = read_spec(run.path) if raw_inputs else None
    with ThreadPoolExecutor(max_workers=1) as helper:
        # The checksum reads the file while the model is rebuilt: nothing is loaded
        # before it matches, yet it costs no time of its own.
        checked = helper.submit(verify_checksum, run.path, record, model_of)
        trained = rebuild_model(run)
        model = with_preprocessing(trained, spec.preprocessing, spec.raw_shape) if spec else trained
        if compile:
            _compile(model, run)
        weights = checked.result()
    load_best_weights(trained, run.path, record, weights)
    return model
