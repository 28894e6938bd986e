"""CSV reading: a 1M-row file through the pyarrow reader against the csv-module reader.

``data.source: csv`` (and ``predict --input x.csv``) read a table in three steps:
``read_csv_table`` (header and rows), ``numeric_columns`` (the features as float32) and
``target_column`` (the labels as text). keepbest now parses with pyarrow and converts a
whole column at a time; the csv module, field by field in Python, is the old reader and
still the path that finds and reports a bad field. Both run here on the same file, in
fresh processes, alternating; the rows also check that both give the same arrays.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

from common import Row, median, run_child, scratch, seconds

ROWS = 1_000_000
FEATURES = 8


def write_table(path: str, rows: int) -> dict:
    """Child: a CSV of ``rows`` rows, FEATURES float columns (6 significant digits) and
    an integer label, as numpy.savetxt writes it."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, FEATURES)).astype("float32")
    y = rng.integers(0, 10, rows)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(",".join([f"f{i}" for i in range(FEATURES)] + ["label"]) + "\n")
        fmt = ["%.6g"] * FEATURES + ["%d"]
        np.savetxt(handle, np.column_stack([x, y]), delimiter=",", fmt=fmt)
    return {"bytes": Path(path).stat().st_size}


def read(path: str, reader: str) -> dict:
    """Child: seconds to read the table as training does, and a digest of the result."""
    from keepbest.data import files

    table = Path(path)
    begun = time.perf_counter()
    if reader == "pyarrow":
        header, body = files.read_csv_table(table, ",", "data.path")
    else:  # the csv module's rows: what read_csv_table returned before pyarrow
        rows = files._csv_module_rows(table, ",", "data.path")
        header, body = [name.strip() for name in rows[0][1]], rows[1:]
    x = files.numeric_columns(table, header, body, header[:-1], "data.path")
    y = files.target_column(table, header, body, "label", "data.path")
    elapsed = time.perf_counter() - begun
    digest = hashlib.sha256(x.tobytes() + "\n".join(y.tolist()).encode()).hexdigest()
    return {"seconds": elapsed, "digest": digest, "reader": type(body).__name__}


def measure(quick: bool) -> list[Row]:
    root = scratch("csv")
    try:
        path = str(root / "table.csv")
        size = run_child("csv_read:write_table", path=path, rows=ROWS)["bytes"]
        found: dict[str, list[dict]] = {"csv": [], "pyarrow": []}
        for rep in range(1 if quick else 3):
            order = ["csv", "pyarrow"] if rep % 2 == 0 else ["pyarrow", "csv"]
            for reader in order:
                found[reader].append(run_child("csv_read:read", path=path, reader=reader))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    digests = {result["digest"] for results in found.values() for result in results}
    if len(digests) != 1:
        raise RuntimeError("the pyarrow and csv-module readers gave different arrays")
    if {result["reader"] for result in found["pyarrow"]} != {"CsvRows"}:
        raise RuntimeError("the table did not take the pyarrow path")
    old = median([result["seconds"] for result in found["csv"]])
    new = median([result["seconds"] for result in found["pyarrow"]])
    return [
        Row(
            "csv",
            f"CSV of {ROWS / 1e6:g}M rows ({FEATURES} float columns + label, "
            f"{size / 2**20:.0f} MiB): header, features, labels; pyarrow vs the csv module "
            "(same arrays)",
            seconds(old),
            seconds(new),
            new / old,
        )
    ]
