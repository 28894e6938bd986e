"""The search space of ``keepbest tune``: dotted config keys mapped to distributions.

A space file (YAML) maps each key to one distribution: ``uniform``, ``log_uniform``,
``int``, ``log_int`` (``[low, high]`` or ``[low, high, step]``) or ``choice`` (a list of
values, which may be lists or mappings). Every choice and both ends of every range are
applied to the config like ``--set`` and checked before any trial runs
(``check_space``), so a misspelt key fails the whole command with its dotted path.

Example:

    >>> from keepbest.search.space import parse_space
    >>> [d.key for d in parse_space({"optimizer.learning_rate": {"log_uniform": [1e-4, 0.1]}})]
    ['optimizer.learning_rate']
    >>> parse_space({"model.kwargs.hidden": {"choice": [[64], [128, 64]]}})[0].labels
    ('[64]', '[128, 64]')
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keepbest.config import read_yaml_file
from keepbest.config.messages import short_repr
from keepbest.config.references import did_you_mean
from keepbest.errors import ConfigError
from keepbest.search.sweep import _as_yaml, _label, _short_names, placed_config

KINDS = ("uniform", "log_uniform", "int", "log_int", "choice")
# The objective and the study's own layout cannot vary between trials.
FIXED_KEYS = {
    "name": "each trial's run dir is named by keepbest",
    "output_dir": "trials live in the study's folder",
    "checkpoint.monitor": "it is the objective; use the same monitor for every trial",
    "checkpoint.mode": "it is the objective's direction",
}
_EXAMPLES = (
    "{log_uniform: [1.0e-4, 0.1]}, {uniform: [0.0, 0.5]}, {int: [16, 128, 16]} "
    "or {choice: [[64], [128, 64]]}"
)


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searched config key and its distribution."""

    key: str
    kind: str  # one of KINDS
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple = ()

    @property
    def labels(self) -> tuple:
        """The choices as Optuna stores them: scalars as they are, anything else (a list,
        a mapping) as its YAML text."""
        if all(c is None or isinstance(c, (bool, int, float, str)) for c in self.choices):
            return self.choices
        return tuple(_as_yaml(c) for c in self.choices)

    def distribution(self):
        from optuna import distributions

        if self.kind == "choice":
            return distributions.CategoricalDistribution(list(self.labels))
        if self.kind in ("int", "log_int"):
            step = int(self.step or 1)
            log_scale = self.kind == "log_int"
            return distributions.IntDistribution(
                int(self.low), int(self.high), log=log_scale, step=step
            )
        log_scale = self.kind == "log_uniform"
        return distributions.FloatDistribution(
            float(self.low), float(self.high), log=log_scale, step=self.step
        )

    def value(self, param: Any) -> Any:
        """The config value of Optuna's ``param``."""
        if self.kind == "choice":
            return self.choices[self.labels.index(param)]
        return param

    def corners(self) -> list:
        """The values checked against the config before any trial: every choice, or both
        ends of the range."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind in ("int", "log_int"):
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]

    def grid_size(self) -> int | None:
        """How many points ``grid`` would hold (computed, not enumerated), or None if the
        range is continuous."""
        if self.kind == "choice":
            return len(self.choices)
        if self.kind in ("int", "log_int"):
            return (int(self.high) - int(self.low)) // int(self.step or 1) + 1
        if self.step is None:
            return None
        return math.floor((self.high - self.low) / self.step + 1e-9) + 1

    def grid(self) -> list | None:
        """The points a grid search visits (Optuna's representation), or None if the
        range is continuous. Check ``grid_size`` first: a range may hold billions."""
        if self.kind == "choice":
            return list(self.labels)
        if self.kind in ("int", "log_int"):
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            return None
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]

    def describe(self) -> dict:
        return {"key": self.key, "kind": self.kind, "distribution": str(self.distribution())}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _dimension(key: str, spec: Any) -> Dimension:
    """One space entry; ``ValueError`` says what is wrong with it."""
    parts = key.split(".")
    if not all(parts):
        raise ValueError("expected a dotted config key such as optimizer.learning_rate")
    if key in FIXED_KEYS:
        raise ValueError(f"cannot be searched: {FIXED_KEYS[key]}")
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError(f"expected one distribution, e.g. {_EXAMPLES} (got {short_repr(spec)})")
    ((kind, args),) = spec.items()
    kind = str(kind)
    if kind not in KINDS:
        hint = did_you_mean(kind, KINDS) or f"; expected one of {', '.join(KINDS)}"
        raise ValueError(f"unknown distribution {kind!r}{hint}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ValueError(
                f"choice: expected a non-empty list of values (got {short_repr(args)})"
            )
        dim = Dimension(key, kind, choices=tuple(args))
        labels = [repr(label) for label in dim.labels]
        for index, label in enumerate(labels):
            if label in labels[:index]:
                raise ValueError(f"choice: {short_repr(args[index])} is listed twice")
        return dim
    integer = kind in ("int", "log_int")
    shape = "[low, high] or [low, high, step]"
    if not isinstance(args, list) or len(args) not in (2, 3) or not all(map(_number, args)):
        raise ValueError(f"{kind}: expected {shape} of numbers (got {short_repr(args)})")
    if integer and not all(isinstance(a, int) or float(a).is_integer() for a in args):
        raise ValueError(f"{kind}: expected whole numbers (got {short_repr(args)})")
    low, high = args[0], args[1]
    step = args[2] if len(args) == 3 else None
    if not low < high:
        raise ValueError(f"{kind}: low ({low}) must be below high ({high})")
    if kind.startswith("log_") and low <= 0:
        raise ValueError(f"{kind}: low must be above 0 on a log scale (got {low})")
    if step is not None and step <= 0:
        raise ValueError(f"{kind}: step must be above 0 (got {step})")
    if step is not None and kind.startswith("log_") and step != 1:
        raise ValueError(f"{kind}: a log scale takes no step; use int or uniform for a step")
    if integer:
        low, high = int(low), int(high)
        step = int(step) if step is not None else None
    return Dimension(key, kind, low, high, step)


def parse_space(raw: Any, origin: str = "space") -> list[Dimension]:
    """The dimensions of a space mapping; ``ConfigError`` lists every problem."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            f"{origin}: expected a mapping of dotted config keys to distributions, e.g. "
            "optimizer.learning_rate: {log_uniform: [1.0e-4, 0.1]}"
        )
    dims, problems = [], []
    for key, spec in raw.items():
        try:
            dims.append(_dimension(str(key), spec))
        except ValueError as exc:
            problems.append(f"{origin}: {key}: {exc}")
    if problems:
        raise ConfigError(problems)
    return dims


def read_space(path: str | Path) -> list[Dimension]:
    return parse_space(read_yaml_file(path, "--space file"), str(path))


def check_space(
    config: str | Path, overrides: Sequence[str], dims: list[Dimension], folder: Path
) -> None:
    """Apply every choice and both ends of every range to the config, one key at a time,
    then the first value of every key together, like ``--set``; each config is also
    checked the way ``train`` checks one before it reads data (builder kwargs,
    optimizer, loss, metrics). A bad key or value fails here, before any trial runs,
    naming the dotted path."""
    from keepbest.models import compile_args, resolve_builder

    tries = [
        ({dim.key: value}, f"{dim.key}={_as_yaml(value)}")
        for dim in dims
        for value in dim.corners()
    ]
    if len(dims) > 1:
        first = {dim.key: dim.corners()[0] for dim in dims}
        tries.append((first, ", ".join(f"{k}={_as_yaml(v)}" for k, v in first.items())))
    problems: list[str] = []
    seen: set[str] = set()
    for values, shown in tries:
        try:
            cfg = placed_config(config, overrides, values, folder, "trial")
            resolve_builder(cfg)
            compile_args(cfg)
        except ConfigError as exc:
            for line in exc.problems:
                if line not in seen:
                    seen.add(line)
                    problems.append(f"--space {shown}: {line}")
    if problems:
        raise ConfigError(problems)


def trial_name(number: int, dims: list[Dimension], values: dict[str, Any]) -> str:
    """A run dir name that reads: ``007-learning_rate=0.00312,hidden=128-64``."""
    short = _short_names([dim.key for dim in dims])
    parts = ",".join(f"{short[k]}={_label(_rounded(v))}" for k, v in values.items())
    name = f"{number:03d}-{parts}"
    return name if len(name) <= 200 else name[:200].rstrip(",=")


def _rounded(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.3g}")
    return value
