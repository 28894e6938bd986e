"""A two-function patch that lets Keras 3.15 ``fit`` run under MultiWorkerMirroredStrategy.

keras-team/keras#20585: with more than one worker, ``fit`` fails in two places of
``keras/src/backend/tensorflow/trainer.py``:

- ``TensorFlowTrainer._maybe_symbolic_build`` builds the model from a batch it first
  all-reduces across workers (``strategy.reduce("MEAN", batch)``); the fix builds from the
  first local replica's batch, which has the right shapes and needs no collective;
- ``reduce_per_replica`` reduces per-replica scalars (the loss) with ``axis=0``; the fix
  reduces rank-0 values with ``axis=None``.

Applied only for ``distribute.strategy: multi_worker``, and only when the installed
functions are byte-for-byte the ones this patch was written against (their source is
hashed): a Keras upgrade that changes them fails loudly instead of being patched blindly.

Example:

    >>> from keepbest.cluster import keras_multiworker_patch
    >>> keras_multiworker_patch.apply()      # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import inspect

from keepbest.errors import KeepbestError

EXPECTED_SOURCE_SHA256 = {
    "reduce_per_replica": "2e7d54b1e6edc29a8c6a7e6b66cd4c8be3ba7842412c93753ac3afe169fa7fb8",
    "TensorFlowTrainer._maybe_symbolic_build": (
        "92a504f5eba9b29f81f1bf26180bdd5bf5186b06b7bda426534b90d2d02bc1c2"
    ),
}


def _targets():
    from keras.src.backend.tensorflow import trainer

    return trainer, {
        "reduce_per_replica": trainer.reduce_per_replica,
        "TensorFlowTrainer._maybe_symbolic_build": trainer.TensorFlowTrainer._maybe_symbolic_build,
    }


def mismatches() -> list[str]:
    """Names of patched functions whose installed source is not the expected one."""
    _, functions = _targets()
    return [
        name
        for name, function in functions.items()
        if getattr(function, "_keepbest_patch", False) is False
        and hashlib.sha256(inspect.getsource(function).encode()).hexdigest()
        != EXPECTED_SOURCE_SHA256[name]
    ]


def apply() -> None:
    """Install the patch (idempotent); ``KeepbestError`` if Keras is not the expected one."""
    import keras
    import tensorflow as tf

    trainer, functions = _targets()
    if getattr(functions["reduce_per_replica"], "_keepbest_patch", False):
        return
    changed = mismatches()
    if changed:
        raise KeepbestError(
            f"distribute.strategy multi_worker: keepbest's Keras patch was written for "
            f"keras 3.15, but keras {keras.__version__} changed {', '.join(changed)}; "
            "check keras-team/keras#20585 and update keepbest/cluster/keras_multiworker_patch.py"
        )
    original_reduce = functions["reduce_per_replica"]

    def reduce_per_replica(values, strategy, reduction):
        multi_worker = trainer._collective_all_reduce_multi_worker(strategy)
        if multi_worker and reduction in ("auto", "mean"):

            def mean(value):
                rank0 = value.shape.rank == 0
                return strategy.reduce("MEAN", value, axis=None if rank0 else 0)

            return tf.nest.map_structure(mean, values)
        return original_reduce(values, strategy, reduction)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        local = self.distribute_strategy.experimental_local_results
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda x: local(x)[0] if isinstance(x, tf.distribute.DistributedValues) else x,
                    next(batches),
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    reduce_per_replica._keepbest_patch = True
    _maybe_symbolic_build._keepbest_patch = True
    trainer.reduce_per_replica = reduce_per_replica
    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
