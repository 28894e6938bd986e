"""Run every keepbest benchmark and print one table of ratios against the baselines.

    python scripts/bench/run_all.py            # all benchmarks (about 55 min on 2 cores)
    python scripts/bench/run_all.py --quick    # fewer repetitions
    python scripts/bench/run_all.py --only saving reload
    python scripts/bench/run_all.py --markdown docs/performance.md   # also update the table there

Each benchmark measures keepbest and its baseline side by side in fresh processes,
alternating, and reports medians; a ratio is keepbest / baseline unless the row says
otherwise. A target that is missed is flagged MISSED; the exit status stays 0.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from common import Row
from workloads import WORKLOADS

BENCHMARKS = (
    "overhead",
    "steps",
    "cadence",
    "memory",
    "saving",
    "reload",
    "train_eval",
    "resume",
    "csv_read",
    "averaging",
    "streaming",
)
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def machine() -> str:
    """CPU, cores, memory, the disk the benchmarks write to, and library versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    memory = re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.MULTILINE)
    disk = (
        subprocess.run(
            ["df", "-hT", tempfile.gettempdir()], capture_output=True, text=True, check=False
        )
        .stdout.splitlines()[-1]
        .split()
    )
    return (
        f"{cpu.group(1) if cpu else platform.processor()}, {os.cpu_count()} cores "
        f"(nproc), {int(memory.group(1)) / 2**20:.0f} GiB RAM, no GPU; disk: {disk[0]} "
        f"({disk[1]}, {disk[2]}) at {disk[-1]}; Python {platform.python_version()}, "
        f"keras {version('keras')}, tensorflow {tensorflow_version()}"
    )


def tensorflow_version() -> str:
    for distribution in ("tensorflow-cpu", "tensorflow"):
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    return "unknown"


def table(rows: list[Row]) -> str:
    lines = [
        "| # | measurement | baseline | keepbest | ratio | target | |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
        status = {None: "", True: "ok", False: "**MISSED**"}[row.met]
        lines.append(
            f"| {row.group} | {row.what} | {row.baseline} | {row.keepbest} | {ratio} "
            f"| {row.target} | {status} |"
        )
    return "\n".join(lines)


def update_markdown(path: Path, section: str) -> None:
    """Replace the text between the bench markers in ``path`` with ``section``."""
    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path} has no {BEGIN} ... {END} markers to replace")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{BEGIN}\n{section}\n{END}{tail}", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=BENCHMARKS)
    parser.add_argument("--markdown", type=Path, help="write the table into this file")
    args = parser.parse_args()

    started = time.perf_counter()
    rows: list[Row] = []
    for name in args.only:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        begun = time.perf_counter()
        rows += importlib.import_module(name).measure(args.quick)
        print(f"  {name}: {time.perf_counter() - begun:.0f} s", file=sys.stderr, flush=True)
    command = "python scripts/bench/run_all.py" + (" --quick" if args.quick else "")
    if set(args.only) != set(BENCHMARKS):
        command += " --only " + " ".join(args.only)
    missed = [row for row in rows if row.met is False]
    section = "\n".join(
        [
            f"`{command}` ({time.perf_counter() - started:.0f} s), on {machine()}:",
            "",
            table(rows),
            "",
            "Models: " + "; ".join(load.describe() for load in WORKLOADS.values()) + ".",
            "",
            f"Targets missed: {len(missed)} of {sum(row.met is not None for row in rows)}.",
        ]
    )
    print(section)
    if args.markdown:
        update_markdown(args.markdown, section)


if __name__ == "__main__":
    main()
