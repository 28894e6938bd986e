"""A model variable's values on their way to a file and back, with no second copy of it in
memory.

keepbest promises that the best weights live on disk only. Turning a variable into a
numpy array (``np.asarray(variable)``, Keras' ``convert_to_numpy``) copies all of it: for
a large embedding or a wide Dense, hundreds of MB held twice at once. The writers of the
best checkpoint (``weights_h5``) and of the resume state (``rundir.resume_store``) take a
variable's rows from ``host_chunks`` instead:

- a TensorFlow variable on the CPU, not mirrored by a tf.distribute strategy: one chunk,
  a read-only numpy view of the variable's own memory (a tensor read from a CPU variable
  shares its buffer, and numpy wraps it without copying);
- any other (on a GPU, mirrored): row slices of at most ``SLICE_BYTES``, each copied.

A view cannot change under its reader: TensorFlow copies a variable on write while
another tensor still refers to its memory, and nothing updates the model while a
callback saves it.

Reading back (the best checkpoint for verification and ``load_best``, a resume state),
``assign_in_slices`` copies stored rows into the variable in place, one slice at a time.

Example:

    >>> from keepbest.variable_memory import host_chunks
    >>> for start, stop, rows in host_chunks(model.variables[0]):   # doctest: +SKIP
    ...     dataset[start:stop] = rows
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

SLICE_BYTES = 8 * 1024 * 1024  # a variable larger than this is copied in slices of this size


def rows_per_slice(shape: tuple[int, ...], itemsize: int) -> int:
    return max(1, SLICE_BYTES // (itemsize * max(1, math.prod(shape[1:]))))


def row_slices(shape: tuple[int, ...], itemsize: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive row slices of at most ``SLICE_BYTES``."""
    rows = rows_per_slice(shape, itemsize)
    for start in range(0, shape[0], rows):
        yield start, min(start + rows, shape[0])


def is_large(shape: tuple[int, ...], itemsize: int) -> bool:
    """Whether a variable of this shape and item size is moved in slices."""
    return bool(shape) and math.prod(shape) * itemsize > SLICE_BYTES


def _plain_tf_variable(variable):
    """The Keras variable's backend ``tf.Variable`` when it is a plain one (not mirrored
    by a tf.distribute strategy), else None."""
    import tensorflow as tf

    target = getattr(variable, "_value", None)
    if isinstance(target, tf.Variable) and not isinstance(target, tf.distribute.DistributedValues):
        return target
    return None


def host_view(variable) -> np.ndarray | None:
    """The variable's values as a read-only numpy view of its own memory, or None when
    that would be a copy (a variable on a GPU, or mirrored by a tf.distribute strategy)."""
    target = _plain_tf_variable(variable)
    if target is None or "CPU" not in target.device.upper():
        return None
    view = np.asarray(target.read_value())
    return None if view.flags.owndata else view  # owndata: numpy copied after all


def _itemsize(dtype) -> int:
    try:
        return np.dtype(getattr(dtype, "as_numpy_dtype", dtype)).itemsize
    except TypeError:  # a name numpy does not know: size the slices for the widest
        return 8


def host_chunks(variable) -> Iterator[tuple[int, int, np.ndarray]]:
    """The variable's rows in order as ``(start, stop, array)``: all at once as a view of
    its memory when possible (``host_view``), else copied a slice at a time. A scalar or
    a small variable is one chunk, copied."""
    shape = tuple(variable.shape)
    whole = host_view(variable) if shape else None
    if whole is not None:
        yield 0, shape[0], whole
        return
    value = getattr(variable, "value", variable)
    itemsize = _itemsize(variable.dtype)
    if not is_large(shape, itemsize):
        array = np.asarray(value)
        yield 0, (shape[0] if shape else 0), array
        return
    for start, stop in row_slices(shape, itemsize):
        yield start, stop, np.asarray(value[start:stop])


def fits_in_place(variable, shape: tuple[int, ...]) -> bool:
    """Whether stored rows of ``shape`` can go straight into ``variable``: the same shape,
    and a plain TensorFlow variable (not one mirrored by a tf.distribute strategy)."""
    return shape == tuple(variable.shape) and _plain_tf_variable(variable) is not None


# TensorFlow's CPU kernels require a tensor's data to start at a multiple of this many
# bytes (Eigen's largest alignment): a kernel given less aborts the process.
ALIGN_BYTES = 64


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array whose data starts at a multiple of ``ALIGN_BYTES``."""
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + ALIGN_BYTES, np.uint8)
    offset = -raw.ctypes.data % ALIGN_BYTES
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def _shared_tensor(array: np.ndarray):
    """A TensorFlow tensor over ``array``'s own memory (no copy) when it can be one: data
    aligned to ``ALIGN_BYTES``, contiguous, and a dtype DLPack carries. Else a copy."""
    import tensorflow as tf

    if array.ctypes.data % ALIGN_BYTES or not array.flags.c_contiguous:
        # DLPack would accept it, and the first kernel to read it would abort the process
        return tf.constant(array)
    try:
        capsule = array.__dlpack__()
    except (BufferError, TypeError):  # e.g. a dtype DLPack has no code for
        return tf.constant(array)
    return tf.experimental.dlpack.from_dlpack(capsule)


def assign_in_slices(
    variable, shape: tuple[int, ...], dtype: np.dtype, read_rows: Callable
) -> None:
    """Fill ``variable`` (``fits_in_place``) from storage a row slice at a time, in place:
    ``read_rows(view, start, stop)`` fills ``view`` with rows ``start:stop``."""
    import tensorflow as tf

    target = variable._value  # the backend's tf.Variable
    rows = rows_per_slice(shape, dtype.itemsize)
    buffer = _aligned_empty((min(rows, shape[0]), *shape[1:]), dtype)  # reused
    shared = dtype == np.dtype(target.dtype.as_numpy_dtype)
    for start, stop in row_slices(shape, dtype.itemsize):
        view = buffer[: stop - start]
        read_rows(view, start, stop)
        # The slice goes to TensorFlow as a tensor over the buffer itself (DLPack, no
        # copy): a copy would be a fresh allocation per slice, and the allocator keeps
        # some of them (measured: 8 to 72 MiB retained for a 256 MiB variable).
        part = _shared_tensor(view) if shared else tf.constant(view, dtype=target.dtype)
        # In place: ``target[a:b].assign`` would first read the whole variable, and the
        # write would then copy it (copy-on-write of a buffer still referenced).
        target.scatter_update(tf.IndexedSlices(part, tf.range(start, stop)))
        del part  # before the next slice is made: one slice in TensorFlow at a time
    # A scatter puts the variable in TensorFlow's copy-on-read mode, in which every later
    # read -- each step of an evaluate -- copies the whole variable. Nothing else refers
    # to its buffer now: reads may share it again.
    tf.raw_ops.DisableCopyOnRead(resource=target.handle)
