"""Sweeps: one base config plus a grid of overrides becomes N fully resolved runs.

The grid is a YAML mapping from dotted config keys to lists of values; the runs are the
cartesian product, in file order, so run ``i`` is the same on every machine and a Slurm
array task can pick it by ``SLURM_ARRAY_TASK_ID``. Every run lives in
``output_dir/<base name>/<key=value,...>`` and is validated before any of them trains,
its run dir included (``keepbest.rundir.guard``: not a file, nor a folder of something
else).

Example grid (``grid.yaml``)::

    optimizer.learning_rate: [0.001, 0.01]
    model.kwargs.hidden: [[64], [128, 64]]

    >>> from keepbest.search.sweep import expand_sweep
    >>> runs = expand_sweep("exp.yaml", "grid.yaml")      # doctest: +SKIP
    >>> [run.name for run in runs]                          # doctest: +SKIP
    ['learning_rate=0.001,hidden=64', 'learning_rate=0.001,hidden=128-64', ...]
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from pathlib import Path
from typing import Any

import yaml

from keepbest.config import ExperimentConfig, load_config, read_yaml_file
from keepbest.errors import ConfigError, InputError
from keepbest.rundir.guard import check_run_dir


@dataclasses.dataclass(frozen=True)
class SweepRun:
    index: int
    name: str
    values: dict[str, Any]  # dotted key -> value, in grid order
    config: ExperimentConfig

    @property
    def overrides(self) -> list[str]:
        return assignments(self.values)


def _as_yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")


def _label(value: Any) -> str:
    """A short, file-name-safe rendering of a value: [128, 64] -> 128-64."""
    if isinstance(value, (list, tuple)):
        return "-".join(_label(v) for v in value)
    if isinstance(value, dict):
        return "-".join(f"{k}{_label(v)}" for k, v in value.items())
    return re.sub(r"[^A-Za-z0-9.+-]", "_", str(value))


def assignments(values: dict[str, Any]) -> list[str]:
    """``--set`` overrides that give each dotted key its value."""
    return [f"{key}={_as_yaml(value)}" for key, value in values.items()]


def placed_config(
    config: str | Path,
    overrides: tuple[str, ...] | list[str],
    values: dict[str, Any],
    folder: Path,
    name: str,
) -> ExperimentConfig:
    """``config`` with ``overrides``, then ``values`` (dotted key -> value) applied as
    ``--set`` overrides, living in ``folder/name``; validated (``ConfigError``)."""
    placement = [f"output_dir={_as_yaml(str(folder))}", f"name={_as_yaml(name)}"]
    return load_config(config, [*overrides, *assignments(values), *placement])


def read_grid(path: str | Path) -> dict[str, list]:
    grid_path = Path(path)
    grid = read_yaml_file(grid_path, "--grid file")
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{grid_path}: expected a mapping of dotted keys to lists of values")
    problems = [
        f"{grid_path}: {key}: expected a non-empty list of values (got {value!r})"
        for key, value in grid.items()
        if not isinstance(value, list) or not value
    ]
    if problems:
        raise ConfigError(problems)
    return grid


def _short_names(keys: list[str]) -> dict[str, str]:
    """Each key's last segment, or more segments where two keys would share a name."""
    names = {}
    for key in keys:
        parts = key.split(".")
        depth = 1
        while any(other != key and other.split(".")[-depth:] == parts[-depth:] for other in keys):
            depth += 1
        names[key] = ".".join(parts[-depth:])
    return names


def expand_sweep(
    config: str | Path, grid_path: str | Path, overrides: tuple[str, ...] = ()
) -> list[SweepRun]:
    """Every run of the sweep, each validated (``ConfigError`` lists all problems)."""
    base = load_config(config, overrides)
    grid = read_grid(grid_path)
    keys = list(grid)
    short = _short_names(keys)
    runs, problems = [], []
    for index, combination in enumerate(itertools.product(*grid.values())):
        values = dict(zip(keys, combination, strict=True))
        name = ",".join(f"{short[k]}={_label(v)}" for k, v in values.items())
        try:
            resolved = placed_config(config, overrides, values, base.output_dir / base.name, name)
            check_run_dir(resolved.run_dir())  # where it trains (keepbest.rundir.guard)
        except InputError as exc:
            problems += [f"run {index} ({name}): {line}" for line in exc.problems]
            continue
        runs.append(SweepRun(index, name, values, resolved))
    if problems:
        raise ConfigError(problems)
    return runs


def select(runs: list[SweepRun], index: int | None) -> list[SweepRun]:
    if index is None:
        return runs
    if not 0 <= index < len(runs):
        raise InputError(
            f"--index {index}: the sweep has {len(runs)} runs (0..{len(runs) - 1}); "
            f"submit it with sbatch --array=0-{len(runs) - 1}"
        )
    return [runs[index]]
