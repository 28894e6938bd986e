"""Sweeps: one base config plus a grid of overrides becomes N fully resolved runs.

The grid is a YAML mapping from dotted config keys to lists of values; the runs are the
cartesian product, in file order, so run ``i`` is the same on every machine and a Slurm
array task can pick it by ``SLURM_ARRAY_TASK_ID``. ``--index`` and ``--dry-run`` number the
runs from 0, as Slurm's ``--array=0-N`` does; messages count them from 1 (``run 1/2``,
``run_label``). Every run lives in
``output_dir/<base name>/<key=value,...>``.

The runs are enumerated lazily (``Sweep``: run ``i`` is computed from ``i``), so a grid
of a million runs lists its first run at once and never sits in memory. What is checked
before any run trains is bounded by the grid file's size, not by the number of runs: a
grid of up to ``FULLY_CHECKED`` runs has every run validated, its run dir included
(``keepbest.rundir.guard``: not a file, nor a folder of something else); a larger one
has every value of every key validated once (with the other keys at their first value)
and its longest run name checked against the file system's limit, and each run is
validated again when it trains (a run that fails then is reported, the others go on).

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
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from keepbest.config import ExperimentConfig, load_config, read_yaml_file
from keepbest.errors import ConfigError, InputError
from keepbest.rundir.guard import check_path, check_run_dir

FULLY_CHECKED = 1000  # a grid of up to this many runs is validated run by run up front


@dataclasses.dataclass(frozen=True)
class SweepRun:
    index: int
    name: str
    values: dict[str, Any]  # dotted key -> value, in grid order
    config: ExperimentConfig

    @property
    def overrides(self) -> list[str]:
        return assignments(self.values)


def run_label(index: int, count: int) -> str:
    """How messages name run ``index`` (0-based, as ``--index`` and ``--dry-run`` number
    it) of ``count``: counted from 1.

    >>> run_label(0, 2), run_label(1, 2)
    ('run 1/2', 'run 2/2')
    """
    return f"run {index + 1}/{count}"


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
    """``config`` with ``overrides`` (the user's ``--set``), then ``values`` (dotted key ->
    value, a grid's or a trial's) applied the same way, living in ``folder/name``;
    validated (``ConfigError``: a problem of ``values`` is reported against the file)."""
    placement = [f"output_dir={_as_yaml(str(folder))}", f"name={_as_yaml(name)}"]
    return load_config(config, overrides, assigned=[*assignments(values), *placement])


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


class Sweep(Sequence[SweepRun]):
    """The runs of CONFIG x GRID, computed one at a time from their index (in
    ``itertools.product`` order: the last key changes fastest)."""

    def __init__(self, config: str | Path, grid_path: str | Path, overrides: tuple[str, ...] = ()):
        self.config, self.overrides = config, tuple(overrides)
        base = load_config(config, overrides)
        self.grid_path = Path(grid_path)
        grid = read_grid(grid_path)
        self.keys = list(grid)
        self.choices = list(grid.values())
        short = _short_names(self.keys)
        self._parts = [[f"{short[key]}={_label(v)}" for v in grid[key]] for key in self.keys]
        self._sets = [assignments({key: v})[0] for key in self.keys for v in grid[key]]
        self._offsets = [0]
        for values in self.choices[:-1]:
            self._offsets.append(self._offsets[-1] + len(values))
        self.folder = base.output_dir / base.name
        self._size = math.prod(len(values) for values in self.choices)

    def __len__(self) -> int:
        return self._size

    def positions(self, index: int) -> list[int]:
        """Which value of each key run ``index`` takes."""
        positions = []
        for values in reversed(self.choices):
            index, position = divmod(index, len(values))
            positions.append(position)
        return positions[::-1]

    def _index(self, positions: Sequence[int]) -> int:
        index = 0
        for values, position in zip(self.choices, positions, strict=True):
            index = index * len(values) + position
        return index

    def name(self, index: int) -> str:
        return ",".join(p[i] for p, i in zip(self._parts, self.positions(index), strict=True))

    def line(self, index: int) -> str:
        """Run ``index`` as ``sweep --dry-run`` lists it, computed without validation."""
        positions = self.positions(index)
        sets = [self._sets[o + i] for o, i in zip(self._offsets, positions, strict=True)]
        return f"{index}\t{self.folder / self.name(index)}\t{' '.join(sets)}"

    def __getitem__(self, index):  # type: ignore[override]
        """Run ``index``, validated (``ConfigError``: ``run i (name): ...`` per problem)."""
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        positions = self.positions(index)
        values = {
            key: self.choices[k][position]
            for k, (key, position) in enumerate(zip(self.keys, positions, strict=True))
        }
        name = self.name(index)
        try:
            resolved = placed_config(self.config, self.overrides, values, self.folder, name)
            check_run_dir(resolved.run_dir())  # where it trains (keepbest.rundir.guard)
        except InputError as exc:
            shown = name if len(name) <= 60 else name[:57] + "..."
            label = run_label(index, len(self))
            raise ConfigError([f"{label} ({shown}): {line}" for line in exc.problems]) from None
        return SweepRun(index, name, values, resolved)

    def __iter__(self) -> Iterator[SweepRun]:
        return (self[index] for index in range(len(self)))

    def checked_up_front(self) -> list[int]:
        """The runs validated before any trains: all of a small grid; of a larger one, the
        runs that take each value of each key once (the others at their first value)."""
        if len(self) <= FULLY_CHECKED:
            return list(range(len(self)))
        indices = {0}
        for k, values in enumerate(self.choices):
            for position in range(1, len(values)):
                positions = [0] * len(self.choices)
                positions[k] = position
                indices.add(self._index(positions))
        return sorted(indices)

    def check(self) -> Sweep:
        """Validate what ``checked_up_front`` names, and the longest run name of the grid
        against the file system; ``ConfigError`` lists every problem."""
        longest = [max(range(len(p)), key=lambda i, p=p: len(p[i])) for p in self._parts]
        name = self.name(self._index(longest))
        widest = max(range(len(self.keys)), key=lambda k: len(self._parts[k][longest[k]]))
        try:
            check_path(name, f"{self.grid_path}: {self.keys[widest]} (its values name the runs)")
        except InputError as exc:
            raise ConfigError(exc.problems) from None
        problems = []
        for index in self.checked_up_front():
            try:
                self[index]
            except ConfigError as exc:
                problems += exc.problems
        if problems:
            raise ConfigError(problems)
        return self


def expand_sweep(
    config: str | Path, grid_path: str | Path, overrides: tuple[str, ...] = ()
) -> Sweep:
    """The sweep's runs, checked before any trains (``Sweep.check``; ``ConfigError``
    lists all problems); each run is computed (and validated) when it is taken."""
    return Sweep(config, grid_path, overrides).check()


def select(runs: Sequence[SweepRun], index: int | None) -> Sequence[SweepRun]:
    """Every run, or run ``index`` alone (``InputError`` if the sweep has no such run)."""
    if index is None:
        return runs
    if not 0 <= index < len(runs):
        raise InputError(
            f"--index {index}: the sweep has {len(runs)} runs (0..{len(runs) - 1}); "
            f"submit it with sbatch --array=0-{len(runs) - 1}"
        )
    return [runs[index]]
