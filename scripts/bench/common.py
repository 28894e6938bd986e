"""Plumbing shared by the benchmarks: fresh measuring processes, medians, table rows.

Every measurement runs in a subprocess (``child.py``) so that peak memory belongs to one
measurement and one side only, and so that a benchmark's imports and caches never leak
into the next. This machine is noisy: each benchmark alternates baseline and keepbest
runs and reports medians.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
MIB = 2**20


@dataclasses.dataclass
class Row:
    """One line of the results table: a keepbest number against its baseline."""

    group: str  # the target number or topic, e.g. "1" or "resume"
    what: str
    baseline: str
    keepbest: str
    ratio: float | None = None  # keepbest / baseline (or as ``what`` says)
    target: str = ""  # e.g. "<= 1.02"; empty for a number that is only reported
    met: bool | None = None  # None when there is no target


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("no measurements")
    return statistics.median(values)


def seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def mib(value: float) -> str:
    return f"{value:.0f} MiB"


def rate(mib_per_s: float) -> str:
    return f"{mib_per_s:.0f} MiB/s"


def within(ratio: float, limit: float) -> bool:
    return ratio <= limit


def scratch(prefix: str) -> Path:
    """A fresh folder for one benchmark's files (the caller removes it)."""
    return Path(tempfile.mkdtemp(prefix=f"keepbest-bench-{prefix}-"))


def run_child(task: str, python: str | None = None, **kwargs) -> dict:
    """Run ``module:function(**kwargs)`` in a fresh Python (this one, or ``python``) and
    return its JSON result."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        result_path = Path(out.name)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR), env.get("PYTHONPATH")]))
    child = [str(BENCH_DIR / "child.py"), task, json.dumps(kwargs), out.name]
    command = [python or sys.executable, *child]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
            raise RuntimeError(f"{task} failed (exit {done.returncode}):\n{tail}")
        return json.loads(result_path.read_text())
    finally:
        result_path.unlink(missing_ok=True)
