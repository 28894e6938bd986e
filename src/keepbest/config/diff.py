"""Whether a config may continue a run that was started with another config.

Resuming with a different model, data, optimizer or seed would splice two different
trainings into one history, so those differences are refused and listed. Keys that only
say how long to train or where the run lives may change: ``train.epochs`` and
``checkpoint.patience`` may be raised, and ``name``, ``output_dir``, ``resume.*`` and
``logging.*`` do not affect the numbers.

Example:

    >>> from keepbest.config.diff import training_differences
    >>> training_differences(saved_cfg, cfg)      # doctest: +SKIP
    ['optimizer.learning_rate: 0.001 -> 0.01']
"""

from __future__ import annotations

from typing import Any

from keepbest.config import ExperimentConfig

FREE_KEYS = ("name", "output_dir")
FREE_SECTIONS = ("resume.", "logging.")
MAY_GROW = ("train.epochs", "checkpoint.patience")


def flatten(raw: Any, prefix: str = "", lists: bool = False) -> dict[str, Any]:
    """Nested mappings as ``{"a.b": value}``; with ``lists``, list items too (``a.0``)."""
    if isinstance(raw, dict):
        items = list(raw.items())
    elif lists and isinstance(raw, list):
        items = list(enumerate(raw))
    else:
        return {prefix.rstrip("."): raw}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}{key}.", lists))
    return flat


def flatten_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as ``{"optimizer.learning_rate": 0.001, ...}`` (JSON values)."""
    return flatten(cfg.model_dump(mode="json"))


def _may_differ(key: str, old: Any, new: Any) -> bool:
    if key in FREE_KEYS or key.startswith(FREE_SECTIONS):
        return True
    if key in MAY_GROW:
        return new is None or (old is not None and new >= old)
    return False


def training_differences(saved: ExperimentConfig, current: ExperimentConfig) -> list[str]:
    """``key: old -> new`` for each difference that would change the training."""
    old, new = flatten_config(saved), flatten_config(current)
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key) and not _may_differ(key, old.get(key), new.get(key))
    ]
