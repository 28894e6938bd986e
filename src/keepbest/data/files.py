"""Reading data files: the one place that opens an .npz, a CSV or a folder of images.

Training (``data.path``), ``evaluate --data`` and ``predict --input`` all read through
these functions, so a file is checked the same way wherever it comes in, and every
problem is a ``DataError`` whose message starts with ``where`` (the config key or the
command-line option that named the file). Imports no TensorFlow.

Example:

    >>> import numpy as np, tempfile, pathlib
    >>> from keepbest.data.files import read_npz
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "d.npz"
    >>> np.savez(path, x=np.zeros((3, 2)), y=np.arange(3))
    >>> [a.shape for a in read_npz(path, ["x", "y"], "data.path")]
    [(3, 2), (3,)]
"""

from __future__ import annotations

import csv
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keepbest.config.references import did_you_mean
from keepbest.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def read_npz(
    path: Path,
    keys: Sequence[str],
    where: str,
    settings: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """The arrays named ``keys`` in the .npz archive at ``path``.

    ``settings`` names the config key that chose each name (training files, whose keys
    are configured). Without it (a file given on the command line) a file saved with
    ``numpy.save`` (one unnamed array), or an archive holding a single array, is taken as
    the first key's array.
    """
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{where}: cannot read {path} as .npz ({exc})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        if settings is None and len(keys) == 1:
            return [loaded]
        names = ", ".join(f"{key}=..." for key in keys)
        raise DataError(
            f"{where}: {path.name} holds a single array, not an .npz archive of "
            f"{' and '.join(repr(k) for k in keys)} (write it with "
            f"numpy.savez({path.stem}.npz, {names}))"
        )
    with loaded as npz:
        arrays = []
        for index, key in enumerate(keys):
            if key not in npz.files:
                if settings is None and len(npz.files) == 1 and len(keys) == 1:
                    key = npz.files[0]
                elif settings is None:
                    raise DataError(
                        f"{where}: {path.name} has no array {key!r} (the inputs); it holds "
                        f"{', '.join(npz.files)}"
                    )
                else:
                    raise DataError(
                        f"{where}: {path.name} has no array {key!r}; it holds "
                        f"{', '.join(npz.files)} (set {settings[index]})"
                        f"{did_you_mean(key, npz.files)}"
                    )
            try:
                arrays.append(npz[key])
            except ValueError as exc:  # object arrays would need pickle, which is unsafe
                raise DataError(f"{where}: cannot read {path.name} ({exc})") from None
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # damaged
                raise DataError(f"{where}: cannot read {path.name} as .npz ({exc})") from None
    return arrays


def read_csv_table(path: Path, delimiter: str, where: str) -> tuple[list[str], list[tuple]]:
    """The header and the (line number, fields) of each non-empty data row."""
    try:
        # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first name
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            rows = [(reader.line_num, row) for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{where}: cannot read {path} ({exc})") from None
    if len(rows) < 2:
        raise DataError(f"{where}: {path.name} needs a header row and at least one data row")
    return [name.strip() for name in rows[0][1]], rows[1:]


def numeric_columns(
    path: Path,
    header: list[str],
    body: list[tuple],
    names: list[str],
    where: str,
    hint: str = "",
) -> np.ndarray:
    """The columns ``names`` of a CSV table as a float32 matrix, one row per data row;
    every field must be a finite number (``hint`` says how to fix one that is not)."""
    columns = [header.index(name) for name in names]
    x = np.empty((len(body), len(columns)), dtype="float32")
    for i, (line, row) in enumerate(body):
        if len(row) != len(header):
            raise DataError(
                f"{where}: {path.name} line {line} has {len(row)} fields, "
                f"the header has {len(header)}"
            )
        for j, column in enumerate(columns):
            try:
                x[i, j] = float(row[column])
            except ValueError:
                raise DataError(
                    f"{where}: {path.name} line {line}, column {names[j]!r}: "
                    f"{row[column]!r} is not a number{hint}"
                ) from None
            if not np.isfinite(x[i, j]):
                raise DataError(
                    f"{where}: {path.name} line {line}, column {names[j]!r}: "
                    f"{row[column]!r} is not a finite number (fill in missing values)"
                )
    return x


def image_files(folder: Path) -> list[Path]:
    """The image files below ``folder`` (any depth), in sorted order."""
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def class_folders(folder: Path) -> list[str]:
    """The names of ``folder``'s subfolders (one per class), sorted; hidden ones skipped."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
