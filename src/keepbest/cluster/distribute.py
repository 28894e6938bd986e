"""Training on several devices or machines with TensorFlow's own tf.distribute.

``distribute.strategy``:

- ``none``: the default device;
- ``mirrored``: ``MirroredStrategy`` over the local devices (``logical_cpus: N`` splits the
  CPU into N devices, for CPU-only hosts and tests);
- ``multi_worker``: ``MultiWorkerMirroredStrategy`` over the workers in ``TF_CONFIG``, or,
  without it, the tasks of the Slurm job (``SlurmClusterResolver``).

Every worker takes the same decisions from the same all-reduced metrics; only the chief
writes files; the others reload the chief's best checkpoint after a barrier. A worker that
cannot reach its peers within ``connect_timeout`` fails with a clear error instead of
hanging (TensorFlow would block forever, deaf to SIGTERM): a watchdog process prints the
error and kills it (exit status 137, as for any SIGKILL).

Example:

    >>> from keepbest.cluster.distribute import Distribution
    >>> dist = Distribution.from_config(cfg.distribute)   # doctest: +SKIP
    >>> with dist.scope():                                 # doctest: +SKIP
    ...     model = build_model(cfg, spec)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
from typing import Any


@dataclasses.dataclass
class Distribution:
    strategy: Any = None  # a tf.distribute.Strategy, or None for the default device
    multi_worker: bool = False

    @classmethod
    def from_config(cls, settings) -> Distribution:
        """Create the configured strategy; call before anything else touches TensorFlow."""
        if settings.strategy == "none":
            return cls()
        import tensorflow as tf

        if settings.strategy == "mirrored":
            if settings.logical_cpus:
                cpu = tf.config.list_physical_devices("CPU")[0]
                logical = [tf.config.LogicalDeviceConfiguration()] * settings.logical_cpus
                tf.config.set_logical_device_configuration(cpu, logical)
                devices = [f"/cpu:{i}" for i in range(settings.logical_cpus)]
                return cls(tf.distribute.MirroredStrategy(devices))
            return cls(tf.distribute.MirroredStrategy())
        from keepbest.cluster import keras_multiworker_patch

        keras_multiworker_patch.apply()
        return cls(_connect(settings), multi_worker=True)

    @property
    def is_chief(self) -> bool:
        return self.strategy is None or bool(self.strategy.extended.should_checkpoint)

    def scope(self):
        return contextlib.nullcontext() if self.strategy is None else self.strategy.scope()

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any worker (a collective: every worker must call)."""
        if not self.multi_worker:
            return flag
        import tensorflow as tf

        total = self.strategy.reduce(
            "SUM", self.strategy.run(lambda: tf.constant(1.0 if flag else 0.0)), axis=None
        )
        return float(total) > 0

    def barrier(self) -> None:
        """Wait until every worker got here (e.g. until the chief's files are written)."""
        self.any(False)


# Run beside a worker that is creating MultiWorkerMirroredStrategy: TensorFlow's
# constructor blocks until every peer is up, holding the GIL and deaf to SIGTERM, so no
# timeout inside the process can fire. If the worker does not close our stdin in time,
# say why on its stderr and kill it.
_WATCHDOG = """
import os, select, signal, sys
parent, timeout, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
ready, _, _ = select.select([sys.stdin], [], [], timeout)
if not ready:
    print(message, file=sys.stderr, flush=True)
    os.kill(parent, signal.SIGKILL)
"""


def slurm_resolver(port_base: int):
    """The workers of this Slurm job step: one per task, ``<node>:<port_base + local index>``.

    TensorFlow's ``SlurmClusterResolver`` lays out the cluster, but it cannot count zero GPUs:
    without ``CUDA_VISIBLE_DEVICES`` it runs ``nvidia-smi`` (FileNotFoundError on a host
    without it) and ``gpus_per_node=0`` fails (``range() arg 3 must not be zero``). On such a
    host it lays out the cluster with one pretend GPU per task, exported nowhere
    (``auto_set_gpu=False``), and the strategy gets the layout with no accelerators. An empty
    ``CUDA_VISIBLE_DEVICES`` means no GPU too (TensorFlow would count one).
    """
    import tensorflow as tf

    from keepbest.errors import ConfigError

    slurm = tf.distribute.cluster_resolver.SlurmClusterResolver
    try:
        if os.environ.get("CUDA_VISIBLE_DEVICES") or shutil.which("nvidia-smi"):
            return slurm(port_base=port_base)
        tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))
        layout = slurm(
            port_base=port_base, gpus_per_node=tasks, gpus_per_task=1, auto_set_gpu=False
        )
        spec = layout.cluster_spec()
    except RuntimeError as exc:  # e.g. SLURM_STEP_NUM_TASKS missing: the batch script itself
        raise ConfigError(
            f"distribute.strategy: multi_worker in Slurm job {os.environ.get('SLURM_JOB_ID')} "
            f"needs one worker per task started with srun ({exc})"
        ) from None
    task_type, task_id = layout.get_task_info()
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        spec, task_type=task_type, task_id=task_id, num_accelerators={}, rpc_layer="grpc"
    )


def _connect(settings):
    """MultiWorkerMirroredStrategy, created within ``connect_timeout`` or not at all."""
    import tensorflow as tf

    resolver = None
    if "TF_CONFIG" not in os.environ:
        if "SLURM_JOB_ID" not in os.environ:
            from keepbest.errors import ConfigError

            raise ConfigError(
                "distribute.strategy: multi_worker needs TF_CONFIG or a Slurm job "
                "(SLURM_JOB_ID) to know its workers"
            )
        resolver = slurm_resolver(settings.port_base)
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=settings.collective_timeout
    )
    message = (
        f"error: distribute: the other workers did not answer within "
        f"{settings.connect_timeout:g} s (distribute.connect_timeout); check that every "
        "worker was started with the same cluster and can reach the others"
    )
    watchdog = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(settings.connect_timeout), message],
        stdin=subprocess.PIPE,
    )
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=resolver, communication_options=options
        )
    finally:
        watchdog.stdin.close()
        watchdog.wait()
