"""``keepbest.load_best``: the run's best model, rebuilt and checked, from any directory.

The architecture comes from the run's ``model.json`` (Keras' serialized config, so no
builder source is needed for models made of Keras layers), or, for a model Keras cannot
serialize, from the builder named in ``config.yaml``. The weights file's sha256 is checked
against ``best.json`` before it is loaded.

Example:

    >>> import keepbest
    >>> model = keepbest.load_best("runs/digits-mlp")       # doctest: +SKIP
    >>> model.predict(x[:5]).argmax(axis=1)                 # doctest: +SKIP
    array([0, 1, 2, 3, 4])
"""

from __future__ import annotations

from pathlib import Path

from keepbest.errors import CorruptFileError, KeepbestError
from keepbest.record import read_record, verify_checksum
from keepbest.run_dir import RunDir


def rebuild_model(run: RunDir):
    """An untrained model with the run's architecture."""
    import keras

    from keepbest.models import build_model

    if run.model_file.is_file():
        try:
            return keras.models.model_from_json(run.model_file.read_text(encoding="utf-8"))
        except (TypeError, ValueError) as exc:
            cfg = run.read_config()
            if cfg.model.builder in ("mlp", "cnn"):
                raise KeepbestError(f"{run.model_file} cannot be deserialized: {exc}") from None
    cfg = run.read_config()
    return build_model(cfg, run.read_spec())


def load_best(run_dir: str | Path, compile: bool = True):
    """Return the run's best model with verified weights; compiled as configured unless
    ``compile=False``."""
    run = RunDir(run_dir)
    record = read_record(run.path)
    weights = verify_checksum(run.path, record)
    model = rebuild_model(run)
    skip = []
    if compile:
        from keepbest.models import compile_args

        compile_args(run.read_config()).apply(model)
        skip = [model.optimizer]
    try:
        model.load_weights(weights, objects_to_skip=skip)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CorruptFileError(
            f"{weights} does not fit the model rebuilt from {run.path}: {first}"
        ) from None
    return model
