"""The best checkpoint's file: Keras' ``.weights.h5`` layout, written and read a slice at a
time.

Keras' ``save_weights`` turns each variable into a numpy array before HDF5 writes it, and
``load_weights`` reads each one whole into numpy before assigning it: for a moment two
host copies of the largest variable exist (a large embedding or a wide Dense makes that
hundreds of MB), which breaks keepbest's promise that the best weights are never held in
memory. Here Keras' own traversal (``saving_lib._save_state`` / ``_load_state``: the
same groups, dataset names, order and metadata as ``save_weights``) runs with a store
that moves a large variable between the model and the file without a host copy of it:

- writing, a variable's dataset is created at its full shape and written from
  ``variable_memory.host_chunks``: a view of the variable's own memory (a CPU variable),
  or row slices of at most ``variable_memory.SLICE_BYTES`` (a GPU or mirrored one);
- reading, the store hands the layer a ``Slices`` view of the dataset, and the
  variable's ``assign`` (extended here, for the duration of a load only) copies it into
  the variable a row slice at a time, in place. Anything else that asks a ``Slices`` for
  its values gets them whole, as from Keras' own store.

A plain ``model.load_weights`` reads what ``save`` writes, and ``load`` reads what Keras
wrote. These are private Keras functions: they are used only while their source is
byte-for-byte what this module was written against (``EXPECTED_SOURCE_SHA256``); a Keras
upgrade that changes any of them fails loudly instead of writing a file nobody checked.

Example:

    >>> from keepbest import weights_h5
    >>> weights_h5.save(model, "best.weights.h5", skip=[model.optimizer])   # doctest: +SKIP
    >>> weights_h5.load(model, "best.weights.h5", skip=[model.optimizer])   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from keepbest import variable_memory
from keepbest.errors import KeepbestError

# The Keras functions whose behaviour the file's layout (and this module's use of them)
# depends on, as in keras 3.15.1.
EXPECTED_SOURCE_SHA256 = {
    "saving_lib._save_state": ("472e9cc9267e3c4b23f189a8fc2179d3cd3d21d5270a4cce9e98415e383a2347"),
    "saving_lib._load_state": ("6dcef2082c1d2c75e2ee8da8b5b9d087f18fa0062fc75271b3f2c72d42d51af5"),
    "saving_lib.H5IOStore.make": (
        "f83bd5e1bcc865333e9a789c8033d0b97ad7fdeec61fff993a87986ac15bfe6c"
    ),
    "saving_lib.H5IOStore.get": (
        "1dc95c2a327ae1afa250cf7567d71aeefd8b1d530f8747fca3eb74b8672161d2"
    ),
    "saving_lib.H5IOStore._create_h5_group": (
        "56b53f32fcd0c8413bc2c461f98b2992717ffeb98f92861f887267a70677841e"
    ),
    "saving_lib.H5IOStore.__setitem__": (
        "f0a1155f497a6018b02ca14da7b01a5e511bf443f7ac16e13a5058b22d737fed"
    ),
    "saving_lib.H5IOStore.__getitem__": (
        "ef8c082dd4fcf4e4ca0c3717734d9da28a385bbf0b41f671c873a810de7f6b5f"
    ),
    "saving_lib.H5IOStore.close": (
        "aa4707fa709b83c0da3dec720b1b0b1d0804a3d44f52d7876a6c1289f46ae2ba"
    ),
    "variables.Variable.assign": (
        "4fdea6a6244132ab5b3c8f7b7da108258ea9e8dd457c92be70c8a8e5122a44a3"
    ),
    "layer.Layer.save_own_variables": (
        "911efd0328907677c2717f7da922a8caad4851533d43677331429f36315e90bc"
    ),
    "layer.Layer.load_own_variables": (
        "b557ebae41fca5b5004f74a07bd4a683662b10eefb9f9732b01ea2ecd9e8edb4"
    ),
}


def _functions() -> dict:
    from keras.src.backend.common import variables
    from keras.src.layers import layer
    from keras.src.saving import saving_lib

    store = saving_lib.H5IOStore
    return {
        "saving_lib._save_state": saving_lib._save_state,
        "saving_lib._load_state": saving_lib._load_state,
        "saving_lib.H5IOStore.make": store.make,
        "saving_lib.H5IOStore.get": store.get,
        "saving_lib.H5IOStore._create_h5_group": store._create_h5_group,
        "saving_lib.H5IOStore.__setitem__": store.__setitem__,
        "saving_lib.H5IOStore.__getitem__": store.__getitem__,
        "saving_lib.H5IOStore.close": store.close,
        "variables.Variable.assign": variables.Variable.assign,
        "layer.Layer.save_own_variables": layer.Layer.save_own_variables,
        "layer.Layer.load_own_variables": layer.Layer.load_own_variables,
    }


def source_hashes() -> dict[str, str]:
    """The sha256 of each Keras function this module relies on, as installed."""
    return {
        name: hashlib.sha256(inspect.getsource(function).encode()).hexdigest()
        for name, function in _functions().items()
        if not getattr(function, "_keepbest_sliced", False)
    }


def mismatches() -> list[str]:
    """The Keras functions whose installed source is not the expected one."""
    return [
        name for name, digest in source_hashes().items() if digest != EXPECTED_SOURCE_SHA256[name]
    ]


def _check_keras() -> None:
    changed = mismatches()
    if changed:
        import keras

        raise KeepbestError(
            f"keepbest's .weights.h5 writer was written for keras 3.15.1's layout, but keras "
            f"{keras.__version__} changed {', '.join(changed)}; check the layout and update "
            "EXPECTED_SOURCE_SHA256 in keepbest/weights_h5.py"
        )


class Sink(io.RawIOBase):
    """The file ``save`` writes, as HDF5 sees it (h5py's ``fileobj`` driver): the first
    write the system refuses (the file-size limit, a full disk) is kept in ``error`` and
    that write and every later one are dropped, so that no write ever fails for HDF5.

    HDF5 defers writes (its metadata cache, a dataset's sieve buffer) to a dataset's or the
    file's close, where h5py cannot raise (an error "ignored" in ``__dealloc__``); after a
    failed one HDF5 keeps the file open with writes it can never finish, and a later close
    (the next flush, ``File.close``, HDF5's clean-up at exit) crashes the process
    (SIGSEGV). With nothing failing, HDF5 closes the file normally and ``save`` raises the
    kept error. A read of what was dropped is zeros; nothing is kept in memory.

    >>> import os, tempfile
    >>> sink = Sink(os.path.join(tempfile.mkdtemp(), "w.h5"))
    >>> sink.write(b"abc"), sink.seek(1), sink.read(5), sink.error
    (3, 1, b'bc', None)
    >>> sink.close()
    """

    def __init__(self, path: str | Path):
        super().__init__()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        self._position = 0
        self._size = 0  # as HDF5 wrote it (dropped writes included)
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        wanted = max(0, min(len(view), self._size - self._position))
        done = 0
        while done < wanted:
            got = os.preadv(self._fd, [view[done:wanted]], self._position + done)
            if got == 0:  # beyond what reached the disk: dropped
                view[done:wanted] = bytes(wanted - done)
                break
            done += got
        self._position += wanted
        return wanted

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if self.error is None:
            try:
                done = 0
                while done < len(view):
                    done += os.pwrite(self._fd, view[done:], self._position + done)
            except OSError as exc:
                self.error = exc
        self._position += len(view)
        self._size = max(self._size, self._position)
        return len(view)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        start = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}
        self._position = start[whence] + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def truncate(self, size: int | None = None) -> int:
        size = self._position if size is None else size
        if self.error is None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as exc:
                self.error = exc
        self._size = size
        return size

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class Slices:
    """A large dataset of the file, read a slice of rows at a time by a variable's
    ``assign`` during ``load``; as an array (``np.asarray``) it is read whole."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.shape = tuple(dataset.shape)
        self.dtype = dataset.dtype

    def __array__(self, dtype=None, copy=None):
        array = self.dataset[()]
        return array if dtype is None else array.astype(dtype)

    def fits(self, variable) -> bool:
        return variable_memory.fits_in_place(variable, self.shape)

    def assign_to(self, variable) -> None:
        def read_rows(view, start, stop):
            self.dataset.read_direct(view, np.s_[start:stop])

        variable_memory.assign_in_slices(variable, self.shape, self.dtype, read_rows)


def _stores():
    from keras.src import backend
    from keras.src.saving.saving_lib import H5IOStore

    class SlicedWriteStore(H5IOStore):
        sink: Sink

        def _get_h5_file(self, path_or_io, mode=None):
            import h5py

            self.sink = Sink(path_or_io)
            try:
                return h5py.File(self.sink, mode="w")
            except BaseException:
                self.sink.close()
                raise

        def __setitem__(self, key, value):
            import keras

            shape = tuple(getattr(value, "shape", ()))
            dtype = np.dtype(backend.standardize_dtype(getattr(value, "dtype", "float32")))
            if not (
                isinstance(value, keras.Variable)
                and dtype.kind in "fiub"
                and variable_memory.is_large(shape, dtype.itemsize)
            ):
                super().__setitem__(key, value)  # small, or bfloat16: as Keras does it
                return
            if not self._h5_entry_initialized:
                self._create_h5_group(self._h5_entry_path)
            dataset = self._h5_entry_group.create_dataset(key, shape=shape, dtype=dtype)
            for start, stop, rows in variable_memory.host_chunks(value):
                dataset.write_direct(np.ascontiguousarray(rows), dest_sel=np.s_[start:stop])

    class SlicedReadStore(H5IOStore):
        def __getitem__(self, key):
            from keras.src.saving.saving_lib import safe_get_h5_dataset

            dataset = safe_get_h5_dataset(self._h5_entry_group, key)
            shape = tuple(dataset.shape)
            if dataset.attrs.get("dtype") == "bfloat16" or not variable_memory.is_large(
                shape, dataset.dtype.itemsize
            ):
                return super().__getitem__(key)
            return Slices(dataset)

    return SlicedWriteStore, SlicedReadStore


@contextlib.contextmanager
def _assign_from_slices() -> Iterator[None]:
    """For the duration: ``Variable.assign(Slices)`` copies slice by slice."""
    from keras.src.backend.common import variables
    from keras.src.backend.common.stateless_scope import in_stateless_scope

    original = variables.Variable.assign

    def assign(self, value):
        if not isinstance(value, Slices) or in_stateless_scope() or not value.fits(self):
            return original(self, value)  # Keras' own path (and its messages)
        value.assign_to(self)
        return self

    assign._keepbest_sliced = True
    variables.Variable.assign = assign
    try:
        yield
    finally:
        variables.Variable.assign = original


def save(model, path: str | Path, skip: Sequence = ()) -> None:
    """Write ``model``'s weights to ``path`` as Keras' ``save_weights`` would (``skip``:
    objects to leave out, e.g. the optimizer), a slice at a time. A write the system
    refuses (the file-size limit, a full disk) is raised as its ``OSError`` once HDF5 has
    closed the file (``Sink``): the file at ``path`` is then incomplete."""
    from keras.src.saving import saving_lib

    _check_keras()
    if not model.built:
        raise ValueError("the model must be built before its weights can be saved")
    write_store, _ = _stores()
    store = write_store(Path(path), mode="w")
    try:
        saving_lib._save_state(
            model,
            weights_store=store,
            assets_store=None,
            inner_path="",
            visited_saveables={id(obj) for obj in skip},
        )
    finally:
        try:
            store.close()
        finally:
            store.sink.close()
        if store.sink.error is not None:  # (what HDF5 raised after it, if anything: chained)
            raise store.sink.error


def load(model, path: str | Path, skip: Sequence = ()) -> None:
    """Read weights written by ``save`` or by Keras' ``save_weights`` into ``model``, a
    slice at a time; a mismatch raises Keras' own ``ValueError``."""
    from keras.src.saving import saving_lib

    _check_keras()
    _, read_store = _stores()
    store = read_store(Path(path), mode="r")
    failed: set[int] = set()
    errors: dict = {}
    try:
        with _assign_from_slices():
            saving_lib._load_state(
                model,
                weights_store=store,
                assets_store=None,
                inner_path="",
                visited_saveables={id(obj) for obj in skip},
                failed_saveables=failed,
                error_msgs=errors,
            )
    finally:
        store.close()
    if failed:
        saving_lib._raise_loading_failure(errors)
