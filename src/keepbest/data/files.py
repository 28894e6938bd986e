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
import sys
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keepbest.atomic import os_error_text
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
    loaded = _load_npz(path, where)
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
            except ValueError as exc:
                if "pickle" in str(exc):  # object arrays would need pickle, which is unsafe
                    raise DataError(f"{where}: {path.name}: {key!r} {_PICKLED}") from None
                raise DataError(f"{where}: {path.name}: {key!r} {_damaged(exc)}") from None
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # damaged
                raise DataError(f"{where}: {path.name}: {key!r} {_damaged(exc)}") from None
    return arrays


def npz_names(path: Path, where: str) -> list[str]:
    """The names of the arrays in the .npz archive at ``path`` (none for a lone array)."""
    loaded = _load_npz(path, where)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        return []
    with loaded as npz:
        return list(npz.files)


_PICKLED = (
    "holds Python objects (pickled), which keepbest never unpickles; save numbers or texts "
    "(an array of a numeric or str dtype)"
)


def _damaged(exc: BaseException) -> str:
    return f"is damaged or truncated ({str(exc).strip() or type(exc).__name__}); write it again"


_ZIP_MAGIC = b"PK"
_NPY_MAGIC = b"\x93NUMPY"


def _load_npz(path: Path, where: str):
    """``np.load(path)`` (no pickles), with a clear ``DataError`` for a file that is not
    an .npz or .npy, is empty, truncated or damaged."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_NPY_MAGIC))
    except OSError as exc:
        raise DataError(f"{where}: cannot read {path}: {os_error_text(exc)}") from None
    if not head:
        raise DataError(f"{where}: {path} is empty (0 bytes), not an .npz archive")
    if not head.startswith((_ZIP_MAGIC, _NPY_MAGIC)):
        raise DataError(
            f"{where}: {path} is not an .npz archive (it does not start like one); write it "
            "with numpy.savez"
        )
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DataError(f"{where}: {path} {_PICKLED}") from None
        raise DataError(f"{where}: {path} {_damaged(exc)}") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{where}: {path} {_damaged(exc)}") from None


class CsvRows:
    """The data rows of a CSV file as pyarrow read them: one column of field text per
    header column, turned into numbers a whole column at a time (``numeric_columns``).

    Iterating gives ``(line number, fields)`` per non-empty row, as the csv module
    does; those rows (and the line numbers that messages name) come from reading the
    file again with the csv module, which only the error paths need.
    """

    def __init__(self, path: Path, delimiter: str, where: str, columns: list, count: int):
        self.path = path
        self.delimiter = delimiter
        self.where = where
        self.columns = columns  # pyarrow ChunkedArrays of strings
        self.count = count
        self._rows: list[tuple] | None = None

    def __len__(self) -> int:
        return self.count

    def rows(self) -> list[tuple]:
        """``(line number, fields)`` of each data row, read by the csv module."""
        if self._rows is None:
            self._rows = _csv_module_rows(self.path, self.delimiter, self.where)[1:]
        return self._rows

    def __iter__(self):
        return iter(self.rows())

    def __getitem__(self, index):
        return self.rows()[index]

    def numbers(self, column: int) -> np.ndarray | None:
        """The column as float64, or None if pyarrow does not take every field for a
        number (the csv path then finds the field and says what is wrong with it)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        text = self.columns[column]
        for attempt in (text, None):
            try:
                if attempt is None:  # " 2": Python's float() takes spaces around a number
                    attempt = pc.utf8_trim(text, characters=" \t")
                return pc.cast(attempt, pa.float64()).to_numpy()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
        return None

    def text(self, column: int) -> list[str]:
        return self.columns[column].to_pylist()


def _csv_module_rows(path: Path, delimiter: str, where: str) -> list[tuple]:
    """``(line number, fields)`` of every non-empty row, by Python's csv module."""
    try:
        # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first name
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            return [(reader.line_num, row) for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{where}: cannot read {path} ({exc})") from None


def _arrow_columns(path: Path, delimiter: str) -> tuple[list, int] | None:
    """Every column as text (the header row included), parsed by pyarrow; None where
    pyarrow's reading could differ from the csv module's (a row whose field count
    differs from the first row's, a file pyarrow refuses), or pyarrow is missing."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pcsv
    except ImportError:
        return None
    with open(path, "rb") as handle:  # a bound on the column count: the first line's
        first = b""
        while not first.strip(b"\r\n") and (line := handle.readline()):
            first = line
    ragged = []

    def invalid(row) -> str:
        ragged.append(row)
        return "skip"

    names = [f"f{i}" for i in range(first.count(delimiter.encode()) + 1)]
    # pyarrow reports a failure inside the invalid-row callback (a row that is not UTF-8)
    # as an "Exception ignored" traceback on stderr: catch it, and let the csv module
    # read the file and say what is wrong with it.
    unraisable = []
    previous_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        table = pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(autogenerate_column_names=True),
            parse_options=pcsv.ParseOptions(
                delimiter=delimiter, newlines_in_values=True, invalid_row_handler=invalid
            ),
            convert_options=pcsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False
            ),
        )
    except (pa.ArrowException, OSError, ValueError):
        return None
    finally:
        sys.unraisablehook = previous_hook
    if unraisable or ragged or any(t != pa.string() for t in table.schema.types):
        return None
    return [table.column(i) for i in range(table.num_columns)], table.num_rows


def csv_header(path: Path, delimiter: str, where: str) -> list[str]:
    """The column names of a CSV file (its first non-empty row), without reading on."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            first = next((row for row in csv.reader(handle, delimiter=delimiter) if row), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{where}: cannot read {path} ({exc})") from None
    return [name.strip() for name in first]


def read_csv_table(path: Path, delimiter: str, where: str) -> tuple[list[str], CsvRows | list]:
    """The header and the data rows (``CsvRows``, or ``(line number, fields)`` tuples
    for a file with rows of different lengths, which ``numeric_columns`` reports)."""
    try:
        read = _arrow_columns(path, delimiter) if path.is_file() else None
    except OSError:
        read = None
    if read is None:
        rows = _csv_module_rows(path, delimiter, where)
        if len(rows) < 2:
            raise DataError(f"{where}: {path.name} needs a header row and at least one data row")
        return [name.strip() for name in rows[0][1]], rows[1:]
    columns, count = read
    if count < 2:
        raise DataError(f"{where}: {path.name} needs a header row and at least one data row")
    header = [column[0].as_py().strip() for column in columns]
    # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first name
    header[0] = header[0].removeprefix("\ufeff").strip()
    body = CsvRows(path, delimiter, where, [column.slice(1) for column in columns], count - 1)
    return header, body


def numeric_columns(
    path: Path,
    header: list[str],
    body: CsvRows | list[tuple],
    names: list[str],
    where: str,
    hint: str = "",
) -> np.ndarray:
    """The columns ``names`` of a CSV table as a float32 matrix, one row per data row;
    every field must be a finite number (``hint`` says how to fix one that is not)."""
    columns = [header.index(name) for name in names]
    if isinstance(body, CsvRows):
        x = np.empty((len(body), len(columns)), dtype="float32")
        for j, column in enumerate(columns):
            numbers = body.numbers(column)
            if numbers is None:
                break
            with np.errstate(over="ignore"):
                x[:, j] = numbers  # float64 -> float32, rounded as float(field) is
        else:
            if np.isfinite(x).all():
                return x
        body = body.rows()  # some field is no finite number: find it, line by line
    x = np.empty((len(body), len(columns)), dtype="float32")
    with np.errstate(over="ignore"):  # 1e39 becomes inf in float32: reported below
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


def target_column(
    path: Path, header: list[str], body: CsvRows | list[tuple], target: str, where: str
) -> np.ndarray:
    """The column ``target`` as text, stripped, one per data row; none may be empty."""
    column = header.index(target)
    if isinstance(body, CsvRows):
        texts = [text.strip() for text in body.text(column)]
        if all(texts):
            return np.array(texts)
        body = body.rows()
    texts = []
    for line, row in body:
        if not row[column].strip():
            raise DataError(f"{where}: {path.name} line {line}: the target {target!r} is empty")
        texts.append(row[column].strip())
    return np.array(texts)


def image_files(folder: Path) -> list[Path]:
    """The image files below ``folder`` (any depth), in sorted order."""
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


# What TensorFlow's decode_image reads: PNG, JPEG, GIF, BMP, by their first bytes.
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")


def check_image_files(files: Sequence[str | Path], where: str) -> None:
    """Every file must start like a PNG, JPEG, GIF or BMP image: an empty file or one
    that is no image is named before any work (one short read per file). A damaged image
    with a good start is found when it is decoded (``keepbest.data.pipelines``)."""
    for path in files:
        try:
            with open(path, "rb") as handle:
                head = handle.read(8)
        except OSError as exc:
            raise DataError(f"{where}: cannot read {path}: {os_error_text(exc)}") from None
        if not head.startswith(_IMAGE_MAGIC):
            what = "is empty" if not head else "is not a PNG, JPEG, GIF or BMP image"
            raise DataError(f"{where}: {path} {what}; remove or replace it")


def class_folders(folder: Path) -> list[str]:
    """The names of ``folder``'s subfolders (one per class), sorted; hidden ones skipped."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
