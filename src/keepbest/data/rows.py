"""Rows read by index, for data bigger than memory: nothing is read whole.

A ``Rows`` is a table of samples that gives any rows asked for, in the order asked
(``read(index)``: an ``Arrays`` of those rows). The streaming pipeline
(``keepbest.data.pipelines``) asks for each batch's rows by the index order of its
epoch, so a resumed run computes where it is instead of reading its way there.

- ``NpyRows``: ``.npy`` files (one or more shards per array), read with positioned reads
  (``os.pread``) of the rows a batch needs, contiguous rows in one read. Not a memory
  map: a map's pages count in the process's resident memory as an epoch touches them
  (the whole file by the epoch's end); pread's stay in the kernel's page cache, which
  the kernel gives back when it needs memory.
- ``ParquetRows``: columns of Parquet files, decoded a row group at a time (the few
  groups in use are cached). Its ``blocks`` are the row groups: the shuffle unit
  (``epoch_order``) is then a row group, so a batch touches one or two groups.
- ``ItemRows``: a factory's random-access source of samples (``len`` and ``[i]``: a
  Grain ``MapDataset``, or a class of one's own).
- ``SubsetRows``: some rows of another ``Rows`` (a validation split).

``epoch_order`` is the order of one epoch, from ``(seed, epoch)`` alone (Philox).
Imports no TensorFlow.

Example:

    >>> import numpy as np, tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> np.save(folder / "x.npy", np.arange(12, dtype="float32").reshape(6, 2))
    >>> np.save(folder / "y.npy", np.array([0, 1, 0, 1, 0, 1]))
    >>> rows = NpyRows([folder / "x.npy"], [folder / "y.npy"], None, "data")
    >>> len(rows), rows.read(np.array([4, 1])).x.tolist(), rows.locate(4)
    (6, [[8.0, 9.0], [2.0, 3.0]], 'row 4 of x.npy')
    >>> epoch_order(6, seed=0, epoch=0, shuffle=True).tolist() != list(range(6))
    True
    >>> (epoch_order(6, 0, 3, True) == epoch_order(6, 0, 3, True)).all()
    np.True_
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keepbest.data.spec import Arrays
from keepbest.errors import DataError

SAMPLE_ROWS = 4096  # rows the pre-flight checks look at (spread over the data)
LABEL_CHUNK = 1 << 20  # rows of targets read at a time when counting classes
_CACHED_GROUPS = 3  # Parquet row groups kept decoded (a batch touches one or two)
SAMPLE_GROUPS = 8  # Parquet row groups the pre-flight's sample is drawn from


def epoch_order(
    rows: int, seed: int, epoch: int, shuffle: bool, blocks: np.ndarray | None = None
) -> np.ndarray:
    """The row order of ``epoch``: a permutation drawn from ``(seed, epoch)`` alone.

    ``blocks`` (the start of each block, then the row count) makes the shuffle
    block-local (``BlockOrder``): the blocks come in a new order and the rows of each
    block in a new order, so consecutive rows stay in one block (a Parquet row group).

    >>> epoch_order(6, 0, 0, False).tolist()
    [0, 1, 2, 3, 4, 5]
    >>> order = epoch_order(6, 7, 1, True, blocks=np.array([0, 3, 6]))
    >>> sorted(order[:3].tolist()) in ([0, 1, 2], [3, 4, 5])
    True
    """
    if blocks is not None:
        return BlockOrder(blocks, seed, epoch, shuffle).rows(0, rows)
    dtype = np.int32 if rows < 2**31 else np.int64
    order = np.arange(rows, dtype=dtype)
    if shuffle:  # in place: the permutation Philox's rng.permutation(rows) draws
        np.random.Generator(np.random.Philox(key=[seed, epoch])).shuffle(order)
    return order


class BlockOrder:
    """The order of one epoch of a block-local shuffle, computed a block at a time: the
    blocks in the order of ``Philox(seed, epoch)``, the rows of block ``b`` in the order
    of ``Philox(seed, epoch)`` advanced to ``b + 1`` (each block's drawn on its own, so a
    resume computes only the blocks it reads). Memory: the block table and the few
    blocks in use, not one entry per row.

    >>> order = BlockOrder(np.array([0, 3, 6]), seed=7, epoch=1, shuffle=True)
    >>> sorted(order.rows(0, 6).tolist()), (order.rows(2, 5) == order.rows(0, 6)[2:5]).all()
    ([0, 1, 2, 3, 4, 5], np.True_)
    """

    def __init__(self, blocks: np.ndarray, seed: int, epoch: int, shuffle: bool):
        self.blocks, self.seed, self.epoch, self.shuffle = blocks, seed, epoch, shuffle
        count = len(blocks) - 1
        self.visit = np.arange(count)
        if shuffle:
            self.visit = self._rng(0).permutation(count)
        sizes = np.diff(blocks)[self.visit]
        self.starts = np.concatenate([[0], np.cumsum(sizes)])  # by place in the visit
        self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()

    def _rng(self, jump: int) -> np.random.Generator:
        bits = np.random.Philox(key=[self.seed, self.epoch])
        return np.random.Generator(bits.jumped(jump) if jump else bits)

    def _block(self, place: int) -> np.ndarray:
        if place not in self._cache:
            block = int(self.visit[place])
            rows = np.arange(self.blocks[block], self.blocks[block + 1])
            if self.shuffle:
                self._rng(block + 1).shuffle(rows)
            self._cache[place] = rows
            while len(self._cache) > 4:
                self._cache.popitem(last=False)
        return self._cache[place]

    def rows(self, begin: int, end: int) -> np.ndarray:
        """The rows at places ``begin`` to ``end`` of the epoch."""
        first = int(np.searchsorted(self.starts, begin, side="right") - 1)
        parts, place = [], first
        while place < len(self.visit) and self.starts[place] < end:
            low = max(begin, int(self.starts[place])) - int(self.starts[place])
            high = min(end, int(self.starts[place + 1])) - int(self.starts[place])
            parts.append(self._block(place)[low:high])
            place += 1
        return np.concatenate(parts) if parts else np.arange(0)


class Rows:
    """A table of samples read by row index. Subclasses set ``x_shape``/``x_dtype`` (one
    sample's inputs), ``y_shape``/``y_dtype`` and ``weighted``, and implement ``__len__``
    and ``_read``."""

    where: str  # the config key the rows come from, for messages
    x_where: str = ""  # the config key of the inputs, if not ``where``
    x_shape: tuple[int, ...]
    x_dtype: np.dtype
    y_shape: tuple[int, ...]
    y_dtype: np.dtype
    weighted: bool = False
    blocks: np.ndarray | None = None  # block starts + the row count (shuffle unit), or None
    class_names: list[str] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def _read(self, index: np.ndarray) -> Arrays:
        raise NotImplementedError

    def read(self, index: np.ndarray) -> Arrays:
        """The rows ``index`` (any order, repeats allowed) as arrays, in that order."""
        return self._read(np.asarray(index, dtype=np.int64))

    def sample_rows(self, limit: int = SAMPLE_ROWS) -> np.ndarray:
        """Up to ``limit`` rows spread evenly over the table (the pre-flight's sample)."""
        count = min(limit, len(self))
        return np.linspace(0, len(self) - 1, count).round().astype(np.int64)

    def label_chunks(self):
        """The targets, a chunk of rows at a time (counting classes)."""
        for start in range(0, len(self), LABEL_CHUNK):
            yield self.read(np.arange(start, min(start + LABEL_CHUNK, len(self)))).y

    def locate(self, row: int) -> str:
        """Where row ``row`` is, for people: ``row 7 of x-001.npy``."""
        return f"row {row}"


class SubsetRows(Rows):
    """The rows ``index`` of ``base`` (sorted): a split of it."""

    def __init__(self, base: Rows, index: np.ndarray, blocks: np.ndarray | None = None):
        self.base, self.index, self.blocks = base, np.asarray(index, dtype=np.int64), blocks
        self.where, self.x_where = base.where, base.x_where
        self.x_shape, self.x_dtype = base.x_shape, base.x_dtype
        self.y_shape, self.y_dtype = base.y_shape, base.y_dtype
        self.weighted, self.class_names = base.weighted, base.class_names

    def __len__(self) -> int:
        return len(self.index)

    def _read(self, index: np.ndarray) -> Arrays:
        return self.base.read(self.index[index])

    def locate(self, row: int) -> str:
        return self.base.locate(int(self.index[row]))


# --------------------------------------------------------------------------- .npy


@dataclasses.dataclass(frozen=True)
class _Shard:
    path: Path
    offset: int  # where the data starts (after the header)
    rows: int


class NpyArray:
    """One array stored as ``.npy`` shards, rows concatenated in order, read by row."""

    def __init__(self, paths: Sequence[Path], where: str):
        self.where = where
        shards, row_shape, dtype = [], None, None
        for path in paths:
            shape, dtype_here, offset = _npy_header(Path(path), where)
            if row_shape is None:
                row_shape, dtype = shape[1:], dtype_here
            elif shape[1:] != row_shape or dtype_here != dtype:
                first = Path(paths[0]).name
                raise DataError(
                    f"{where}: {Path(path).name} holds rows of shape {shape[1:]} {dtype_here}, "
                    f"but {first} holds {row_shape} {dtype}; every shard of an array has "
                    "rows of one shape and dtype"
                )
            shards.append(_Shard(Path(path), offset, shape[0]))
        self.shards = shards
        self.row_shape: tuple[int, ...] = tuple(row_shape or ())
        self.dtype = np.dtype(dtype)
        self.row_bytes = self.dtype.itemsize * math.prod(self.row_shape)
        self.starts = np.cumsum([0] + [s.rows for s in shards])
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _fd(self, shard: int) -> int:
        with self._lock:
            if shard not in self._fds:
                self._fds[shard] = os.open(self.shards[shard].path, os.O_RDONLY)
            return self._fds[shard]

    def read(self, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` in that order: sorted, each run of contiguous rows read with one
        pread, the bytes joined once."""
        out = np.empty((len(index), *self.row_shape), self.dtype)
        if not len(index):
            return out
        order = np.argsort(index, kind="stable")
        wanted = index[order]
        if wanted[0] < 0 or wanted[-1] >= len(self):
            raise IndexError(f"row {int(wanted[-1])} of {len(self)}")
        shard = np.searchsorted(self.starts, wanted, side="right") - 1
        first = np.flatnonzero(
            np.concatenate([[True], (np.diff(wanted) != 1) | (np.diff(shard) != 0)])
        )
        lengths = np.diff(np.append(first, len(wanted))) * self.row_bytes
        offsets = (wanted[first] - self.starts[shard[first]]) * self.row_bytes + np.array(
            [s.offset for s in self.shards]
        )[shard[first]]
        fds = [self._fd(int(s)) for s in range(len(self.shards))]
        pread = os.pread
        parts = [
            pread(fds[which], size, where)
            for which, size, where in zip(
                shard[first].tolist(), lengths.tolist(), offsets.tolist(), strict=True
            )
        ]
        data = b"".join(parts)
        if len(data) != int(lengths.sum()):
            short = next(i for i, part in enumerate(parts) if len(part) != int(lengths[i]))
            path = self.shards[int(shard[first][short])].path
            raise DataError(
                f"{self.where}: {path} ended early while being read (changed or truncated "
                "during training); restore it, then run the same command to resume"
            )
        flat = out.reshape(len(index), -1).view(np.uint8).reshape(len(index), -1)
        flat[order] = np.frombuffer(data, np.uint8).reshape(len(index), -1)
        return out


def _npy_header(path: Path, where: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of an .npy file, checked against the file's size."""
    from numpy.lib import format as npy

    try:
        with open(path, "rb") as handle:
            try:
                version = npy.read_magic(handle)
                if version == (1, 0):
                    shape, fortran, dtype = npy.read_array_header_1_0(handle)
                elif version == (2, 0):
                    shape, fortran, dtype = npy.read_array_header_2_0(handle)
                else:
                    raise ValueError(f".npy format version {version} is not supported")
            except (ValueError, SyntaxError, EOFError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise DataError(
                    f"{where}: {path} is not a readable .npy file ({reason[:120]}); "
                    "write it with numpy.save"
                ) from None
            offset = handle.tell()
    except OSError as exc:
        raise DataError(f"{where}: cannot read {path} ({exc.strerror or exc})") from None
    dtype = np.dtype(dtype)
    if dtype.hasobject or dtype.kind not in "fiub":
        raise DataError(f"{where}: {path.name} holds {dtype} values; .npy data must be numbers")
    if not shape:
        raise DataError(f"{where}: {path.name} holds a single number, not one row per sample")
    if fortran and len(shape) > 1:
        raise DataError(
            f"{where}: {path.name} is stored column-major (Fortran order), so its rows are "
            "not contiguous; save it with numpy.save(path, numpy.ascontiguousarray(x))"
        )
    expected = offset + dtype.itemsize * math.prod(shape)
    size = path.stat().st_size
    if size != expected:
        state = "truncated" if size < expected else "longer than its header says"
        raise DataError(
            f"{where}: {path.name} is {state}: {size} bytes, its header (shape "
            f"{tuple(shape)}, {dtype}) needs {expected}; write it again with numpy.save"
        )
    return tuple(int(d) for d in shape), dtype, offset


class NpyRows(Rows):
    """Inputs, targets and optional sample weights from ``.npy`` shards, by row."""

    def __init__(self, x: Sequence[Path], y: Sequence[Path], w: Sequence[Path] | None, where):
        self.where, self.x_where = where, f"{where}.x"
        self.x = NpyArray(x, f"{where}.x")
        self.y = NpyArray(y, f"{where}.y")
        self.w = NpyArray(w, f"{where}.weights") if w else None
        for part in (self.y, self.w):
            if part is not None and len(part) != len(self.x):
                raise DataError(
                    f"{part.where}: {len(part)} rows, but {where}.x has {len(self.x)}; "
                    "give one row per sample"
                )
        if self.w is not None and self.w.row_shape not in ((), (1,)):
            raise DataError(
                f"{self.w.where}: sample weights are one number per sample, got rows of "
                f"shape {self.w.row_shape}"
            )
        if not len(self.x):
            raise DataError(f"{where}.x: there are no samples")
        self.x_shape, self.x_dtype = self.x.row_shape or (1,), self.x.dtype
        self.y_shape, self.y_dtype = self.y.row_shape, self.y.dtype
        self.weighted = self.w is not None

    def __len__(self) -> int:
        return len(self.x)

    def _read(self, index: np.ndarray) -> Arrays:
        x = self.x.read(index)
        x = x[:, None] if x.ndim == 1 else x
        w = None if self.w is None else self.w.read(index).reshape(-1).astype("float32")
        return Arrays(x, self.y.read(index), w)

    def label_chunks(self):
        for start in range(0, len(self), LABEL_CHUNK):
            yield self.y.read(np.arange(start, min(start + LABEL_CHUNK, len(self))))

    def locate(self, row: int) -> str:
        shard = int(np.searchsorted(self.x.starts, row, side="right") - 1)
        return f"row {row - int(self.x.starts[shard])} of {self.x.shards[shard].path.name}"


# --------------------------------------------------------------------------- Parquet


class ParquetRows(Rows):
    """Numeric feature columns, a target column and optional weights of Parquet files,
    decoded a row group at a time. Text targets become class ids in sorted order of the
    names (or the order ``class_names`` gives)."""

    def __init__(
        self,
        paths: Sequence[Path],
        target: str,
        features: list[str] | None,
        weight_column: str | None,
        where: str,
        class_names: list[str] | None = None,
    ):
        import pyarrow.parquet as pq

        self.where, self.target, self.weight_column = where, target, weight_column
        files, groups, schema, first = [], [], None, None
        opened: dict[int, tuple[Any, threading.Lock]] = {}  # kept open: footers parsed once
        for path in paths:
            try:
                handle = pq.ParquetFile(path)
            except Exception as exc:  # pyarrow's ArrowInvalid, OSError
                reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
                raise DataError(
                    f"{where}: {path} is not a readable Parquet file ({reason})"
                ) from None
            here = handle.schema_arrow
            if schema is None:
                schema, first = here, Path(path)
                features = features or [
                    name for name in here.names if name not in (target, weight_column)
                ]
                self._check_columns(here, features, Path(path))
            else:
                self._same_schema(here, schema, features, Path(path), first)
            files.append(Path(path))
            opened[len(files) - 1] = (handle, threading.Lock())
            for group in range(handle.metadata.num_row_groups):
                rows = handle.metadata.row_group(group).num_rows
                if rows:
                    groups.append((len(files) - 1, group, rows))
        self.files, self.groups, self.features = files, groups, list(features or [])
        self._handles = opened
        self._cache: collections.OrderedDict[int, Any] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.blocks = np.cumsum([0] + [rows for _, _, rows in groups])
        if not len(self):
            raise DataError(f"{where}: {', '.join(p.name for p in files)} holds no rows")
        self._text = _is_text(schema.field(target).type)
        self.x_shape, self.x_dtype = (len(self.features),), np.dtype("float32")
        self.y_shape = ()
        self.weighted = weight_column is not None
        self.class_names = class_names
        if self._text and class_names is None:
            self.class_names = sorted(self._target_names())
        self.y_dtype = np.dtype("int64") if self._text else self._numeric_target(schema)

    def _check_columns(self, schema, features: list[str], path: Path) -> None:
        from keepbest.config.references import did_you_mean

        names = schema.names
        for key, column in (("target", self.target), ("weight_column", self.weight_column)):
            if column is not None and column not in names:
                raise DataError(
                    f"data.{key}: column {column!r} is not in {path.name}; its columns are "
                    f"{', '.join(names)}{did_you_mean(column, names)}"
                )
        for name in features:
            if name not in names:
                raise DataError(
                    f"data.features: column {name!r} is not in {path.name}; its columns are "
                    f"{', '.join(names)}{did_you_mean(name, names)}"
                )
            if name == self.target:
                raise DataError(f"data.features: {name!r} is the target; it cannot be a feature")
            if not _is_number(schema.field(name).type):
                raise DataError(
                    f"{self.where}: column {name!r} of {path.name} holds "
                    f"{schema.field(name).type} values; features are numeric columns (list "
                    "the numeric ones in data.features)"
                )
        target = schema.field(self.target).type
        if not (_is_number(target) or _is_text(target)):
            raise DataError(
                f"data.target: column {self.target!r} of {path.name} holds {target} values; "
                "targets are numbers or class names (text)"
            )
        if self.weight_column is not None and not _is_number(schema.field(self.weight_column).type):
            raise DataError(
                f"data.weight_column: column {self.weight_column!r} of {path.name} is not numeric"
            )

    def _same_schema(self, schema, first_schema, features, path: Path, first: Path) -> None:
        wanted = [*features, self.target, *([self.weight_column] if self.weight_column else [])]
        for name in wanted:
            if name not in schema.names:
                raise DataError(
                    f"{self.where}: {path.name} lacks the column {name!r} that {first.name} has; "
                    "every file of a Parquet dataset has the same columns"
                )
            here, there = schema.field(name).type, first_schema.field(name).type
            if here != there and not (
                _is_number(here) and _is_number(there) and name != self.target
            ):
                raise DataError(
                    f"{self.where}: column {name!r} is {here} in {path.name} but {there} in "
                    f"{first.name}; every file of a Parquet dataset has the same schema"
                )

    def _numeric_target(self, schema) -> np.dtype:
        import pyarrow as pa

        kind = schema.field(self.target).type
        if pa.types.is_floating(kind):
            return np.dtype("float32")
        return np.dtype("int64")

    def sample_rows(self, limit: int = SAMPLE_ROWS) -> np.ndarray:
        """Up to ``limit`` rows from at most ``SAMPLE_GROUPS`` row groups spread over the
        files (a row group is decoded whole: a sample of every group would read it all)."""
        count = min(SAMPLE_GROUPS, len(self.groups))
        groups = np.linspace(0, len(self.groups) - 1, count).round().astype(np.int64)
        each = max(1, limit // count)
        return np.concatenate(
            [
                np.arange(self.blocks[g], min(self.blocks[g] + each, self.blocks[g + 1]))
                for g in groups
            ]
        )

    def _target_names(self) -> set[str]:
        import pyarrow.compute as pc

        names: set[str] = set()
        for file, group, _ in self.groups:
            column = self._read_group(file, group, [self.target]).column(0)
            self._no_nulls(column, self.target, self.files[file])
            names.update(str(v) for v in pc.unique(column).to_pylist())
        return names

    def _target(self, column, path: Path) -> np.ndarray:
        """A target column as the run's targets: class ids for names, else numbers."""
        if not self._text:
            return column.to_numpy().astype(self.y_dtype)
        lookup = {name: i for i, name in enumerate(self.class_names or [])}
        values = column.to_pylist()
        unknown = sorted({str(v) for v in values} - lookup.keys())
        if unknown:
            raise DataError(
                f"data.target: labels {', '.join(unknown[:5])} of {path.name} are not "
                f"among the run's classes ({', '.join(self.class_names or [])})"
            )
        return np.array([lookup[str(v)] for v in values], dtype=np.int64)

    def _no_nulls(self, column, name: str, path: Path) -> None:
        if column.null_count:
            raise DataError(
                f"{self.where}: column {name!r} of {path.name} has {column.null_count} empty "
                "(null) values; fill them in or leave those rows out"
            )

    def __len__(self) -> int:
        return int(self.blocks[-1])

    def _decoded(self, block: int):
        """Row group ``block`` as (x, y, w) arrays, decoded once while in use."""
        with self._lock:
            if block in self._cache:
                self._cache.move_to_end(block)
                entry = self._cache[block]
            else:
                entry = self._cache[block] = [threading.Lock(), None]
                while len(self._cache) > _CACHED_GROUPS:
                    self._cache.popitem(last=False)
        with entry[0]:
            if entry[1] is None:
                entry[1] = self._decode(block)
            return entry[1]

    def _read_group(self, file: int, group: int, columns: list[str]):
        """Row group ``group`` of ``files[file]`` (its columns ``columns``) as an Arrow
        table, through one open ``ParquetFile`` per file (its footer parsed once), one
        reader at a time."""
        import pyarrow.parquet as pq

        with self._lock:
            if file not in self._handles:
                self._handles[file] = (pq.ParquetFile(self.files[file]), threading.Lock())
            handle, lock = self._handles[file]
        with lock:
            return handle.read_row_group(group, columns=columns)

    def _decode(self, block: int):
        file, group, _ = self.groups[block]
        path = self.files[file]
        columns = [*self.features, self.target]
        if self.weight_column:
            columns.append(self.weight_column)
        table = self._read_group(file, group, columns)
        for name in columns:
            self._no_nulls(table.column(name), name, path)
        x = np.empty((len(self.features), table.num_rows), np.float32)  # column-major:
        for i, name in enumerate(self.features):  # each column one contiguous copy
            x[i] = table.column(name).to_numpy()
        y = self._target(table.column(self.target), path)
        w = None
        if self.weight_column:
            w = table.column(self.weight_column).to_numpy().astype(np.float32)
        return x, y, w

    def _read(self, index: np.ndarray) -> Arrays:
        block = np.searchsorted(self.blocks, index, side="right") - 1
        x = np.empty((len(index), len(self.features)), np.float32)
        y = np.empty(len(index), self.y_dtype)
        w = np.empty(len(index), np.float32) if self.weighted else None
        for which in np.unique(block):
            mine = np.flatnonzero(block == which)
            local = index[mine] - self.blocks[which]
            bx, by, bw = self._decoded(int(which))
            x[mine], y[mine] = bx[:, local].T, by[local]
            if w is not None:
                w[mine] = bw[local]
        return Arrays(x, y, w)

    def label_chunks(self):
        for file, group, _ in self.groups:
            column = self._read_group(file, group, [self.target]).column(0)
            self._no_nulls(column, self.target, self.files[file])
            yield self._target(column, self.files[file])

    def locate(self, row: int) -> str:
        block = int(np.searchsorted(self.blocks, row, side="right") - 1)
        file, group, _ = self.groups[block]
        local = row - int(self.blocks[block])
        return f"row {local} of row group {group} of {self.files[file].name}"

    def group_split(self, fraction: float, seed: int) -> tuple[Rows, Rows]:
        """(train, validation): a ``fraction`` of the row groups, chosen by ``seed``."""
        count = len(self.groups)
        take = max(1, round(count * fraction))
        if count < 2 or take >= count:
            raise DataError(
                f"data.validation.split: {self.where} has {count} row group(s), and the split "
                "takes whole row groups; give data.validation.path, or write the files with "
                "smaller row groups (pyarrow.parquet.write_table(..., row_group_size=...))"
            )
        chosen = np.sort(np.random.default_rng(seed).permutation(count)[:take])
        parts = []
        for groups in (np.setdiff1d(np.arange(count), chosen), chosen):
            index = np.concatenate([np.arange(self.blocks[g], self.blocks[g + 1]) for g in groups])
            sizes = [int(self.blocks[g + 1] - self.blocks[g]) for g in groups]
            parts.append(SubsetRows(self, index, np.cumsum([0, *sizes])))
        return parts[0], parts[1]


def _is_number(kind) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


def _is_text(kind) -> bool:
    import pyarrow as pa

    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


# --------------------------------------------------------------------------- items


class ItemRows(Rows):
    """A random-access source of samples: ``len(source)`` and ``source[i]`` giving one
    sample ``(x, y)`` or ``(x, y, w)`` (a Grain ``MapDataset``, or one's own class)."""

    def __init__(self, source: Any, where: str):
        self.source, self.where = source, where
        try:
            count = len(source)
        except Exception as exc:
            raise DataError(f"{where}: len() of it failed ({exc})") from None
        if not count:
            raise DataError(f"{where}: it holds no samples")
        first = self._item(0)
        self._item_shape = first[0].shape
        self.x_shape, self.x_dtype = first[0].shape or (1,), first[0].dtype
        self.y_shape, self.y_dtype = first[1].shape, first[1].dtype
        self.weighted = len(first) == 3
        self._count = count

    def _item(self, i: int) -> tuple[np.ndarray, ...]:
        from keepbest.config.references import describe_exception

        try:
            item = self.source[int(i)]
        except Exception as exc:
            raise DataError(f"{self.where}: item {i} failed: {describe_exception(exc)}") from None
        if not (isinstance(item, (tuple, list)) and len(item) in (2, 3)):
            raise DataError(
                f"{self.where}: item {i} is a {type(item).__name__}; each item is one sample "
                "(x, y) or (x, y, w)"
            )
        return tuple(np.asarray(part) for part in item)

    def __len__(self) -> int:
        return self._count

    def _read(self, index: np.ndarray) -> Arrays:
        items = [self._item(i) for i in index]
        for i, item in zip(index, items, strict=True):
            if item[0].shape != self._item_shape or item[1].shape != self.y_shape:
                raise DataError(
                    f"{self.where}: item {int(i)} has x {item[0].shape}, y {item[1].shape}; "
                    f"item 0 has x {self._item_shape}, y {self.y_shape}"
                )
        x = np.stack([item[0] for item in items]).astype(self.x_dtype, copy=False)
        y = np.stack([item[1] for item in items]).astype(self.y_dtype, copy=False)
        w = None
        if self.weighted:
            w = np.array([float(item[2]) for item in items], dtype=np.float32)
        if x.ndim == 1:
            x = x[:, None]
        return Arrays(x, y, w)


def is_random_access(part: Any) -> bool:
    """Whether a factory's part is a random-access source of samples (not arrays, not a
    tf.data.Dataset): it has ``len`` and ``[i]``."""
    if isinstance(part, (tuple, list, np.ndarray, dict, str, bytes)):
        return False
    kind = type(part)
    return hasattr(kind, "__len__") and hasattr(kind, "__getitem__")
