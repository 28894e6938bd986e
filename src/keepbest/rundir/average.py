"""The uniform average of several ``.weights.h5`` files, one variable (a slice) at a time.

``checkpoint.average`` averages the weights of the k best or the k latest evaluation
points (``checkpoint.keep_top``'s files). Each float variable of the result is the sum of
the k files' values, accumulated in float64 in the order given (the best first), divided
by k and rounded to the variable's dtype. A variable is done a block of rows at a time
into two buffers (a float64 sum of at most 16 MiB and one block of the variable's dtype),
never whole, let alone a model. Non-float variables (a random layer's seed state,
counters) are the first file's. Normalization statistics (BatchNorm's moving mean and
variance) are floats and are averaged like the weights. The result has the first file's
layout exactly (it starts as a copy of it), so Keras' ``load_weights`` and keepbest read
it as any best checkpoint. Imports no TensorFlow.

Example:

    >>> import numpy as np, h5py, tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for i, value in enumerate([1.0, 2.0, 4.0]):
    ...     with h5py.File(folder / f"{i}.h5", "w") as f:
    ...         _ = f.create_dataset("layer/vars/0", data=np.full(3, value, "float32"))
    >>> average_files([folder / f"{i}.h5" for i in range(3)], folder / "avg.h5")
    >>> h5py.File(folder / "avg.h5")["layer/vars/0"][...]
    array([2.3333333, 2.3333333, 2.3333333], dtype=float32)
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

BLOCK_BYTES = 16 * 1024 * 1024  # the float64 sum of a block of rows: at most this big


def average_files(files: Sequence[Path], out: Path) -> None:
    """Write the uniform average of ``files`` (same layout) to ``out``."""
    import h5py

    shutil.copyfile(files[0], out)
    readers = [h5py.File(path, "r") for path in files]
    try:
        with h5py.File(out, "r+") as target:
            for name in _datasets(target):
                _average_one(name, target[name], readers)
    finally:
        for reader in readers:
            reader.close()


def _datasets(group) -> list[str]:
    import h5py

    names: list[str] = []
    group.visititems(
        lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None
    )
    return names


def _average_one(name: str, target, readers) -> None:
    if target.dtype.kind != "f" or target.size == 0:
        return  # not a float: the first file's value stays
    for source in readers:
        if source[name].shape != target.shape:
            raise ValueError(
                f"{source.filename}: {name} has shape {source[name].shape}, "
                f"not {target.shape} as in {readers[0].filename}"
            )
    if target.shape == ():
        total = sum(float(source[name][()]) for source in readers)
        target[()] = np.asarray(total / len(readers), dtype=target.dtype)
        return
    rows = target.shape[0]
    row_items = max(1, int(np.prod(target.shape[1:], dtype=np.int64)))
    step = max(1, BLOCK_BYTES // (row_items * 8))
    total = np.empty((min(rows, step), *target.shape[1:]), dtype=np.float64)
    read = np.empty(total.shape, dtype=target.dtype)
    for start in range(0, rows, step):
        count = min(rows, start + step) - start
        block, into = slice(start, start + count), slice(0, count)
        total[into] = 0.0
        for source in readers:  # into the two buffers: no temporaries of the block's size
            source[name].read_direct(read, np.s_[block], np.s_[into])
            np.add(total[into], read[into], out=total[into])
        np.divide(total[into], len(readers), out=total[into])
        read[into] = total[into]  # rounded to the variable's dtype
        target.write_direct(read, np.s_[into], np.s_[block])
