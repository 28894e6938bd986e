"""The data as tf.data pipelines whose order depends only on (seed, epoch).

``load_pipelines`` reads the configured source (``keepbest.data.sources``) and serves it:

- ``train_stream(start_batch)``: the training batches from global batch ``start_batch``
  on, epoch after epoch. Epoch ``e`` is shuffled with the stateless seed ``(seed, e)``, so
  the order never depends on how many iterators a process made before, which is what
  makes resuming bit-exact.
- ``validation``: the validation data in a fixed order.
- ``train_eval``: the training data in a fixed order, bounded to the first
  ``checkpoint.train_eval_steps`` batches: the pass that measures a training-set monitor
  (``keepbest.measure``), the same batches in training and in every verification.

A batch is ``(x, y)``, or ``(x, y, w)`` when the data has sample weights or
``train.class_weight`` weighs the training classes (``keepbest.data.weights``): Keras'
``fit`` and ``evaluate`` count ``w`` in the loss and the metrics, so training and every
measuring pass weigh each sample alike.

Every batch goes through the source's preprocessing (``keepbest.data.preprocessing``):
its Keras layers, the very ones ``load_best`` and ``export`` put in front of the model.
Images are decoded and resized one by one (they may differ in size), the rest runs on the
batch. A factory's tf.data.Datasets are used as given (already batched); their order is
the factory's business.

Example:

    >>> from keepbest.config import load_config
    >>> from keepbest.data.pipelines import load_pipelines
    >>> pipes = load_pipelines(load_config("configs/quickstart.yaml"))   # doctest: +SKIP
    >>> pipes.spec.input_shape, pipes.steps_per_epoch                    # doctest: +SKIP
    ((8, 8, 1), 23)
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from keepbest.config import ExperimentConfig, reported_against
from keepbest.config.schema import PythonData, ScriptData, spec_name
from keepbest.data.rows import BlockOrder, Rows, epoch_order
from keepbest.data.sources import read_sources
from keepbest.data.spec import Arrays, DataSpec
from keepbest.data.weights import class_weighted
from keepbest.errors import DataError, one_line

_EPOCH_LIMIT = 2**62  # "forever": the stream is cut into epochs by steps_per_epoch


@dataclasses.dataclass
class Pipelines:
    spec: DataSpec
    steps_per_epoch: int
    train_stream: Callable[[int], Any]
    train_eval: Any  # bounded to checkpoint.train_eval_steps batches
    validation: Any | None
    num_train: int | None  # training samples (None: a factory's dataset)
    num_train_eval: int | None  # samples in train_eval (None: a dataset of unknown size)
    num_validation: int | None
    # an image run's files, by the config key that names their folder
    image_files: tuple[tuple[str, tuple[str, ...]], ...] = ()
    float_targets: bool = False  # regression targets (else class ids, or a factory's own)

    def undecodable(self, exc: BaseException, then: str = "") -> DataError | None:
        """For an error raised while batches were read: the ``DataError`` that names the
        image file that cannot be decoded (or the file a batch could not be read from),
        or None if the error is another one."""
        if _read_errors:
            return _read_errors[-1]
        for where, files in self.image_files:
            named = undecodable_image(exc, files, self.spec, where, then)
            if named is not None:
                return named
        return None


def find_undecodable(files, spec: DataSpec) -> tuple[str, str] | None:
    """The first of ``files`` that TensorFlow cannot read as an image, and why (decoded
    one at a time, in eager mode: the failure path only)."""
    import tensorflow as tf

    channels = 3 if spec.color_mode == "rgb" else 1
    for path in files:
        try:
            tf.io.decode_image(
                tf.io.read_file(str(path)), channels=channels, expand_animations=False
            )
        except (tf.errors.OpError, OSError) as exc:
            return str(path), one_line(exc)
    return None


def undecodable_image(
    exc: BaseException, files, spec: DataSpec, where: str, then: str = ""
) -> DataError | None:
    """The ``DataError`` naming the image among ``files`` that made ``exc`` (a TensorFlow
    error while reading batches), or None if every file decodes (another error)."""
    import tensorflow as tf

    if not len(files) or not isinstance(exc, tf.errors.OpError):
        return None
    found = find_undecodable(files, spec)
    if found is None:
        return None
    path, reason = found
    fix = "remove or replace it" + (f", {then}" if then else "")
    return DataError(f"{where}: {path} cannot be decoded as an image ({reason}); {fix}")


def decode_images(paths, spec: DataSpec, resize=None):
    """Read and decode a batch of image files, each resized to the training size: float32
    values as decoded (0..255), the raw input of an image run's model. ``resize``: the
    preprocessing's Resizing layer (made here if not given)."""
    import tensorflow as tf

    channels = 3 if spec.color_mode == "rgb" else 1
    resize = resize or spec.steps.resize_layer()

    def one(path):
        image = tf.io.decode_image(
            tf.io.read_file(path), channels=channels, expand_animations=False
        )
        return resize(tf.cast(image, "float32"))

    return tf.map_fn(one, paths, fn_output_signature=tf.float32)


def preprocess_batch(spec: DataSpec):
    """A function applying the preprocessing after the resize to a float32 batch (the
    identity when there is none)."""
    layers = spec.steps.batch_layers(spec.raw_shape)

    def apply(x):
        for layer in layers:
            x = layer(x)
        return x

    return apply


def _batches(arrays: Arrays, spec: DataSpec, index_batches):
    """Turn a dataset of index batches into preprocessed (x, y) batches gathered from
    ``arrays``, (x, y, w) if it has sample weights."""
    import tensorflow as tf

    x, y = tf.constant(arrays.x), tf.constant(arrays.y)
    w = None if arrays.w is None else tf.constant(arrays.w)
    resize = spec.steps.resize_layer() if spec.image_size is not None else None
    preprocess = preprocess_batch(spec)

    def gather(index):
        features = tf.gather(x, index)
        if spec.image_size is not None:
            features = decode_images(features, spec, resize)
        batch = preprocess(features), tf.gather(y, index)
        return batch if w is None else (*batch, tf.gather(w, index))

    return index_batches.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def fixed_order(arrays: Arrays, spec: DataSpec, batch_size: int):
    """``arrays`` as preprocessed (x, y) or (x, y, w) batches in their order (images
    decoded)."""
    import tensorflow as tf

    index = tf.data.Dataset.range(len(arrays)).batch(batch_size)
    return _batches(arrays, spec, index).prefetch(tf.data.AUTOTUNE)


def _shuffled_stream(arrays: Arrays, spec: DataSpec, cfg: ExperimentConfig, start_batch: int):
    import tensorflow as tf

    size, batch_size = len(arrays), cfg.data.batch_size
    per_epoch = math.ceil(size / batch_size)
    first_epoch, offset = divmod(start_batch, per_epoch)
    shuffle, seed = cfg.data.shuffle, cfg.seed

    def epoch_batches(epoch):
        order = tf.range(size, dtype=tf.int64)
        if shuffle:
            seeds = tf.stack([tf.constant(seed, tf.int64), epoch])
            order = tf.random.experimental.stateless_shuffle(order, seed=seeds)
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    epochs = tf.data.Dataset.range(first_epoch, _EPOCH_LIMIT)
    index = epochs.flat_map(epoch_batches).skip(offset)
    return _batches(arrays, spec, index).prefetch(tf.data.AUTOTUNE)


class _EpochOrders:
    """The row order of the epochs in use (the newest two: a prefetch may run into the
    next epoch), computed once each: what turns a batch's place into its rows."""

    def __init__(self, rows: Rows, batch_size: int, cfg: ExperimentConfig | None):
        self.rows, self.batch_size, self.cfg = rows, batch_size, cfg
        self._orders: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def rows_of(self, epoch: int, begin: int, end: int) -> np.ndarray:
        if self.cfg is None:  # the fixed order: rows as stored
            return np.arange(begin, end, dtype=np.int64)
        with self._lock:
            order = self._orders.get(epoch)
            if order is None:
                cfg, blocks = self.cfg, self.rows.blocks
                if blocks is None:
                    order = epoch_order(len(self.rows), cfg.seed, epoch, cfg.data.shuffle)
                else:  # computed a block at a time
                    order = BlockOrder(blocks, cfg.seed, epoch, cfg.data.shuffle)
                self._orders[epoch] = order
                for old in sorted(self._orders)[:-2]:
                    del self._orders[old]
            if isinstance(order, BlockOrder):
                return order.rows(begin, end)
        return order[begin:end]


_CHUNK = 8  # batches read by one call into Python (its overhead paid once for all)


def _row_batches(
    rows: Rows, spec: DataSpec, first: int, count: int, orders: _EpochOrders, placeholders=0
):
    """Preprocessed batches ``first`` to ``first + count`` of ``rows`` (global batch
    numbers over epoch after epoch, ``count`` may be ``_EPOCH_LIMIT``). Only batch numbers
    flow through tf.data: chunks of up to ``_CHUNK`` batches of one epoch, each read by
    one ``Rows.read`` in a ``numpy_function`` (several chunks at once, in order), the rows
    of each batch from ``orders``. The first ``placeholders`` batches are zeros of the
    right shapes, read from nowhere: a resumed epoch's batches trained before its state,
    which fit consumes untrained."""
    import tensorflow as tf

    size, batch_size = len(rows), orders.batch_size
    per_epoch = math.ceil(size / batch_size)
    chunks_per_epoch = math.ceil(per_epoch / _CHUNK)
    weighted = rows.weighted
    x_shape, y_shape = tuple(rows.x_shape), tuple(rows.y_shape)
    y_dtype = tf.as_dtype(rows.y_dtype)
    preprocess = preprocess_batch(spec)

    def read(begin_number, end_number):
        """Batches ``begin_number`` to ``end_number`` (one epoch's): stacked, the last
        padded if short, and each batch's size."""
        numbers = range(int(begin_number), int(end_number))
        index, sizes = [], []
        for number in numbers:
            epoch, place = divmod(number, per_epoch)
            begin = place * batch_size
            index.append(orders.rows_of(epoch, begin, min(begin + batch_size, size)))
            sizes.append(len(index[-1]))
        try:
            part = rows.read(np.concatenate(index))
        except DataError as exc:  # raised again by TensorFlow as its own error: kept to name
            _read_errors.append(exc)
            raise
        stacked = [
            np.zeros((len(sizes), batch_size, *x_shape), np.float32),
            np.zeros((len(sizes), batch_size, *y_shape), rows.y_dtype),
        ]
        if weighted:
            stacked.append(np.zeros((len(sizes), batch_size), np.float32))
        at = 0
        for i, rows_in in enumerate(sizes):
            stacked[0][i, :rows_in] = part.x[at : at + rows_in].reshape(rows_in, *x_shape)
            stacked[1][i, :rows_in] = part.y[at : at + rows_in]
            if weighted:
                stacked[2][i, :rows_in] = part.w[at : at + rows_in]
            at += rows_in
        return [*stacked, np.array(sizes, np.int32)]

    types = [tf.float32, y_dtype, *([tf.float32] if weighted else []), tf.int32]

    def shaped(parts):
        x, y = parts[0], parts[1]
        x.set_shape((None, *x_shape))
        y.set_shape((None, *y_shape))
        batch = (preprocess(x), y)
        if weighted:
            parts[2].set_shape((None,))
            batch = (*batch, parts[2])
        return batch

    def chunk_bounds(chunk):
        epoch, place = chunk // chunks_per_epoch, chunk % chunks_per_epoch
        begin = epoch * per_epoch + place * _CHUNK
        end = tf.minimum(begin + _CHUNK, (epoch + 1) * per_epoch)
        return tf.maximum(begin, low), tf.minimum(end, high)

    def gather(begin, end):
        parts = tf.numpy_function(read, [begin, end], types, stateful=False)
        return tuple(parts)

    def batches_of(*parts):
        *arrays, sizes = parts
        return tf.data.Dataset.from_tensor_slices((*arrays, sizes)).map(
            lambda *one: shaped([part[: one[-1]] for part in one[:-1]])
        )

    def zeros(number):
        place = number % per_epoch
        count = tf.minimum(tf.cast(batch_size, tf.int64), size - place * batch_size)
        count = tf.reshape(tf.cast(count, tf.int32), [1])
        parts = [
            tf.zeros(tf.concat([count, x_shape], 0), tf.float32),
            tf.zeros(tf.concat([count, tf.constant(y_shape, tf.int32)], 0), y_dtype),
        ]
        if weighted:
            parts.append(tf.ones(count, tf.float32))
        return shaped(parts)

    low, high = first + placeholders, first + count
    first_chunk = (low // per_epoch) * chunks_per_epoch + (low % per_epoch) // _CHUNK
    last_chunk = ((high - 1) // per_epoch) * chunks_per_epoch + ((high - 1) % per_epoch) // _CHUNK
    chunks = tf.data.Dataset.range(first_chunk, last_chunk + 1).map(chunk_bounds)
    batches = chunks.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    batches = batches.flat_map(batches_of)
    if placeholders:
        skipped = tf.data.Dataset.range(first, first + placeholders).map(zeros)
        batches = skipped.concatenate(batches)
    # flat_map hides the length: say it, or Keras' evaluate warns it "ran out of data"
    known = tf.data.INFINITE_CARDINALITY if count >= _EPOCH_LIMIT else count
    batches = batches.apply(tf.data.experimental.assert_cardinality(known))
    return batches.prefetch(tf.data.AUTOTUNE)


# A data problem met while a batch was read (a file changed under training): TensorFlow
# raises its own error, ``Pipelines.undecodable`` gives this one.
_read_errors: list[DataError] = []


def row_stream(rows: Rows, spec: DataSpec, cfg: ExperimentConfig, start_batch: int, skip=0):
    """The training batches of ``rows`` from global batch ``start_batch`` on, epoch after
    epoch (each in ``epoch_order``'s order for ``(seed, epoch)``): a batch's epoch and
    place are computed (``divmod``), nothing before it is read. ``skip``: batches after
    ``start_batch`` that fit consumes untrained (a resumed epoch's), as placeholders."""
    orders = _EpochOrders(rows, cfg.data.batch_size, cfg)
    return _row_batches(rows, spec, start_batch, _EPOCH_LIMIT, orders, skip)


def rows_in_order(rows: Rows, spec: DataSpec, batch_size: int, limit: int | None = None):
    """``rows`` as preprocessed batches in their order (the first ``limit`` batches)."""
    orders = _EpochOrders(rows, batch_size, None)
    count = math.ceil(len(rows) / batch_size)
    return _row_batches(rows, spec, 0, count if limit is None else min(count, limit), orders)


def _dataset_steps(dataset, cfg: ExperimentConfig) -> int:
    if cfg.train.steps_per_epoch:
        return cfg.train.steps_per_epoch
    cardinality = int(dataset.cardinality())
    if cardinality < 0:  # infinite or unknown
        raise DataError(
            "train.steps_per_epoch: the factory's training dataset has no known length; "
            "set train.steps_per_epoch"
        )
    if cardinality == 0:
        raise DataError(f"{_given_by(cfg)}'s training dataset is empty")
    return cardinality


def _check_validation(val, cfg: ExperimentConfig) -> None:
    """A factory's validation data must exist if monitored, and end (or fit never does)."""
    import tensorflow as tf

    monitor = cfg.checkpoint.monitor
    if val is None and monitor.startswith("val_"):
        raise DataError(
            f"checkpoint.monitor: {monitor!r} needs validation data, but "
            f"{getattr(cfg.data, 'factory', None) or 'data'} returned None for it; return "
            "(train, validation) "
            f"or monitor {monitor[4:]!r}"
        )
    if isinstance(val, tf.data.Dataset) and val.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise DataError(
            f"{_given_by(cfg)}'s validation dataset repeats forever, so "
            "validation would never end; remove its .repeat()"
        )


# What read_training_data read ahead: (config, (train, validation, spec)), taken once.
_read_ahead: list[tuple[ExperimentConfig, tuple]] = []


def read_training_data(cfg: ExperimentConfig) -> tuple[Any, Any | None, DataSpec]:
    """Read and check the training data (files, labels, labels against the loss) without
    TensorFlow, so that ``train`` can refuse bad data before TensorFlow is imported; the
    next ``load_pipelines(cfg)`` of the same config takes what was read."""
    from keepbest.data.labels import targets_problems

    _read_ahead.clear()
    train, val, spec = _read_weighted(cfg)
    with reported_against(cfg):
        _check_classes(train, spec, cfg)
        errors, _ = targets_problems(
            spec,
            _float_targets(train),
            spec_name(cfg.loss),
            None,
            labels_key(cfg),
            cfg.model.builder,
        )
        if errors:
            raise DataError(errors)
    _read_ahead.append((cfg, (train, val, spec)))
    return train, val, spec


def _read(cfg: ExperimentConfig) -> tuple[Any, Any | None, DataSpec]:
    if _read_ahead and _read_ahead[0][0] is cfg:
        return _read_ahead.pop()[1]
    return _read_weighted(cfg)


def _read_weighted(cfg: ExperimentConfig) -> tuple[Any, Any | None, DataSpec]:
    """The configured data, its training part weighted by class (``train.class_weight``):
    the training data only, as Keras' fit weighs it; a file given to ``evaluate --data``
    (``read_like_run``) is measured with its own sample weights alone."""
    train, val, spec = read_sources(cfg)
    setting = cfg.train.class_weight
    if setting is None:
        return train, val, spec
    with reported_against(cfg):
        if isinstance(train, Rows):
            raise DataError(
                f"train.class_weight: data.source {cfg.data.source} is read a batch at a time, "
                "so its classes are not weighed ahead; give one weight per sample instead "
                "(data.weights, data.weight_column)"
            )
        if not isinstance(train, Arrays):
            raise DataError(
                f"train.class_weight: {_given_by(cfg)}'s training data is a tf.data.Dataset, "
                "whose labels keepbest does not read ahead; return arrays (x, y), or weigh "
                "the samples in its batches: (x, y, w)"
            )
        train = class_weighted(train, setting, spec, labels_key(cfg), weights_key(cfg))
    return train, val, spec


def load_pipelines(cfg: ExperimentConfig) -> Pipelines:
    """Read the data and build the pipelines (``DataError`` on any data problem)."""
    _read_errors.clear()  # a problem met by an earlier run in this process is not this one's
    train, val, spec = _read(cfg)
    batch_size = cfg.data.batch_size
    eval_steps = cfg.checkpoint.train_eval_steps
    with reported_against(cfg):
        if isinstance(train, Rows):
            steps = cfg.train.steps_per_epoch or math.ceil(len(train) / batch_size)

            def train_stream(start_batch: int, skip: int = 0):
                return row_stream(train, spec, cfg, start_batch, skip)

            train_eval = rows_in_order(train, spec, batch_size, eval_steps)
            num_train = num_train_eval = len(train)
            if eval_steps is not None:
                num_train_eval = min(num_train_eval, eval_steps * batch_size)
        elif isinstance(train, Arrays):
            steps = cfg.train.steps_per_epoch or math.ceil(len(train) / batch_size)

            def train_stream(start_batch: int, skip: int = 0):
                return _shuffled_stream(train, spec, cfg, start_batch)

            train_eval = fixed_order(train, spec, batch_size)
            num_train = num_train_eval = len(train)
            if eval_steps is not None:
                num_train_eval = min(num_train_eval, eval_steps * batch_size)
        else:
            steps = _dataset_steps(train, cfg)

            def train_stream(start_batch: int, skip: int = 0):
                return train.repeat().skip(start_batch)

            train_eval, num_train, num_train_eval = train.take(steps), None, None
        if eval_steps is not None:
            train_eval = train_eval.take(eval_steps)
        if isinstance(cfg.data, (PythonData, ScriptData)):
            _check_validation(val, cfg)
        _check_classes(train, spec, cfg)
    validation = val
    if isinstance(val, Arrays):
        validation = fixed_order(val, spec, batch_size)
    elif isinstance(val, Rows):
        validation = rows_in_order(val, spec, batch_size)
    images: tuple[tuple[str, tuple[str, ...]], ...] = ()
    if spec.image_size is not None and isinstance(train, Arrays):
        own_folder = cfg.data.validation is not None and cfg.data.validation.path is not None
        images = tuple(
            (where, tuple(str(p) for p in part.x))
            for where, part in (
                ("data.path", train),
                ("data.validation.path" if own_folder else "data.path", val),
            )
            if isinstance(part, Arrays)
        )
    return Pipelines(
        spec=spec,
        steps_per_epoch=steps,
        train_stream=train_stream,
        train_eval=train_eval,
        validation=validation,
        num_train=num_train,
        num_train_eval=num_train_eval,
        num_validation=len(val) if isinstance(val, (Arrays, Rows)) else None,
        image_files=images,
        float_targets=_float_targets(train),
    )


def _given_by(cfg: ExperimentConfig) -> str:
    """Where a run's own datasets come from, for messages."""
    factory = getattr(cfg.data, "factory", None)
    return f"data.factory: {factory}" if factory else "data"


def labels_key(cfg: ExperimentConfig) -> str:
    """The config key that says where a run's labels come from (for messages)."""
    data = cfg.data
    if data.source == "npz":
        return f"data.y_key: {data.y_key!r}"
    if data.source in ("csv", "parquet"):
        return f"data.target: {data.target!r}"
    if data.source == "npy":
        return "data.y"
    if data.source == "python":
        return f"data.factory: {data.factory}'s labels"
    if data.source == "script":
        return "data's labels"
    return f"data.path: {data.path}'s class folders" if data.source == "image_dir" else "data"


def weights_key(cfg: ExperimentConfig) -> str:
    """How a run's data gives its own sample weights (for messages)."""
    source = cfg.data.source
    if source in ("python", "script"):
        return f"{_given_by(cfg)}: return (x, y, w) with w the sample weights"
    own = {
        "npz": "data.weight_key",
        "csv": "data.weight_column",
        "npy": "data.weights",
        "parquet": "data.weight_column",
    }
    return own.get(source, f"data.source: {source} has no sample weights; use npz or csv")


def _float_targets(train) -> bool:
    if isinstance(train, Rows):
        return train.y_dtype.kind == "f"
    if isinstance(train, Arrays):
        return train.y.dtype.kind == "f"
    return bool(train.element_spec[1].dtype.is_floating)


def _check_classes(train, spec: DataSpec, cfg: ExperimentConfig) -> None:
    """Class ids in the training data must name two classes or more: with one, every
    prediction is right and nothing is learned."""
    if spec.num_classes is None or not isinstance(train, Arrays) or train.y.ndim != 1:
        return
    present = np.unique(train.y)
    if len(present) == 1:
        label = int(present[0])
        name = f" ({spec.class_names[label]!r})" if spec.class_names else ""
        raise DataError(
            f"{labels_key(cfg)}: every training label is class {label}{name}; a classifier "
            "needs two classes or more (for regression, store the targets as floats)"
        )


def batch_fingerprint(dataset) -> str:
    """The fingerprint (``keepbest.data.fingerprint``) of the first batch of ``dataset``: a
    fresh stream's first batch, to check that a resumed run sees the batch the
    interrupted run would have seen next."""
    from keepbest.data.fingerprint import batch_fingerprint as fingerprint

    for element in dataset.take(1):
        return fingerprint(element)
    return fingerprint(())
