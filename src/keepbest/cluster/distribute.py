"""Training on several devices or machines with TensorFlow's own tf.distribute.

``distribute.strategy``:

- ``none``: the default device;
- ``mirrored``: ``MirroredStrategy`` over the local devices (``logical_cpus: N`` splits the
  CPU into N devices, for CPU-only hosts and tests);
- ``multi_worker``: ``MultiWorkerMirroredStrategy`` over the workers in ``TF_CONFIG``, or,
  without it, the tasks of the Slurm job (``SlurmClusterResolver``).

Every worker takes the same decisions from the same all-reduced metrics; only the chief
writes files; the others reload the chief's best checkpoint after a barrier. Workers agree
on stop requests and resume states with ``agree`` (one small all-reduce) at moments they
all reach at the same step, and a mid-epoch state carries every replica's metric
accumulators (``read_metrics`` / ``assign_metrics``). A worker that cannot reach its peers
within ``connect_timeout`` fails with a clear error instead of hanging (TensorFlow would
block forever, deaf to SIGTERM): a watchdog process prints the error and kills it (exit
status 137, as for any SIGKILL). A worker that dies later stops sending heartbeats; the
others fail within ``heartbeat_timeout`` with one line naming it (``WorkerLostError``).

Example:

    >>> from keepbest.cluster.distribute import Distribution
    >>> dist = Distribution.from_config(cfg.distribute)   # doctest: +SKIP
    >>> with dist.scope():                                 # doctest: +SKIP
    ...     model = build_model(cfg, spec)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from keepbest.errors import WorkerLostError


@dataclasses.dataclass
class Distribution:
    strategy: Any = None  # a tf.distribute.Strategy, or None for the default device
    multi_worker: bool = False
    _agree: Any = dataclasses.field(default=None, repr=False)  # the compiled all-reduce
    _read_metrics: Any = dataclasses.field(default=None, repr=False)  # the compiled gather

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
        # Keras reads its metrics eagerly across workers (get_metrics_result): TensorFlow
        # warns about that cost at every read, which keepbest does only at evaluations.
        logging.getLogger("tensorflow").addFilter(_NotEagerOverheadWarning())
        return cls(_connect(settings), multi_worker=True)

    @classmethod
    def of_model(cls, model) -> Distribution:
        """The strategy a script built ``model`` under (``keepbest.KeepBest``)."""
        import tensorflow as tf

        strategy = getattr(model, "distribute_strategy", None)
        if strategy is None or type(strategy).__name__ == "_DefaultDistributionStrategy":
            return cls()
        multi = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        if multi:
            from keepbest.cluster import keras_multiworker_patch

            keras_multiworker_patch.apply()
        return cls(strategy, multi_worker=multi)

    @property
    def is_chief(self) -> bool:
        return self.strategy is None or bool(self.strategy.extended.should_checkpoint)

    def scope(self):
        return contextlib.nullcontext() if self.strategy is None else self.strategy.scope()

    def agree(self, *values: float) -> list[float]:
        """The sum over all workers of each value (a collective: every worker must call it
        with as many values, at the same point). Without workers, the values themselves."""
        if not self.multi_worker:
            return [float(v) for v in values]
        import tensorflow as tf

        if self._agree is None:
            strategy = self.strategy

            @tf.function
            def agree(vector):
                return strategy.reduce("SUM", strategy.run(lambda: vector), axis=None)

            self._agree = agree
        vector = tf.constant([float(v) for v in values], dtype=tf.float64)
        return [float(v) for v in self._agree(vector).numpy()]

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any worker (a collective: every worker must call)."""
        return self.agree(1.0 if flag else 0.0)[0] > 0

    def barrier(self) -> None:
        """Wait until every worker got here (e.g. until the chief's files are written)."""
        self.agree(0.0)

    @contextlib.contextmanager
    def lost_workers_reported(self, timeout: float) -> Iterator[None]:
        """A worker that dies (kill -9, a lost node) makes TensorFlow fail the others'
        collectives within about ``timeout`` seconds; turn that into one line naming it."""
        if not self.multi_worker:
            yield
            return
        import tensorflow as tf

        try:
            yield
        except (
            tf.errors.UnavailableError,
            tf.errors.DeadlineExceededError,
            tf.errors.CancelledError,
            tf.errors.AbortedError,
            tf.errors.InternalError,
        ) as exc:
            raise WorkerLostError(
                f"distribute: {self._describe_lost(str(exc))} stopped answering (killed, or its "
                f"node was lost; noticed within distribute.heartbeat_timeout = {timeout:g} s), "
                "so this worker stopped too; requeue the job (scontrol requeue JOB) or run it "
                "again: every worker resumes from the last resume state"
            ) from None

    def _describe_lost(self, message: str) -> str:
        """'worker 1 (n2:8888)' for the task a TensorFlow error names, else 'a worker'."""
        tasks = sorted({int(m) for m in re.findall(r"/job:worker/replica:\d+/task:(\d+)", message)})
        me = self.task_index
        lost = [task for task in tasks if task != me]
        if not lost:
            return "a worker"
        addresses = self._addresses()
        return ", ".join(
            f"worker {task}" + (f" ({addresses[task]})" if task < len(addresses) else "")
            for task in lost
        )

    @property
    def task_index(self) -> int | None:
        resolver = getattr(self.strategy, "cluster_resolver", None)
        return None if resolver is None else resolver.task_id

    def _addresses(self) -> list[str]:
        resolver = getattr(self.strategy, "cluster_resolver", None)
        try:
            return list(resolver.cluster_spec().as_dict().get("worker", []))
        except Exception:  # no spec to name the address by: the index says enough
            return []

    def read_metrics(self, model) -> dict[str, Any]:
        """Keras' metric accumulators, by variable path: with a strategy, each replica's
        own values stacked along a first axis of length ``replicas`` (a collective with
        several workers), so that ``assign_metrics`` gives each replica its own back."""
        import numpy as np

        variables = list(model.metrics_variables)
        if self.strategy is None:
            return {v.path: np.asarray(v) for v in variables}
        import tensorflow as tf

        key = tuple(id(v) for v in variables)
        if self._read_metrics is None or self._read_metrics[0] != key:
            strategy = self.strategy

            @tf.function
            def read():  # the variables are closed over: as arguments they would be tensors
                per_replica = strategy.run(
                    lambda: [tf.expand_dims(tf.identity(v.value), 0) for v in variables]
                )
                return [strategy.gather(part, axis=0) for part in per_replica]

            self._read_metrics = (key, read)
        stacked = self._read_metrics[1]()
        return {v.path: np.asarray(value) for v, value in zip(variables, stacked, strict=True)}

    def assign_metrics(self, model, values: dict[str, Any]) -> None:
        """Put back what ``read_metrics`` read (each replica its own part)."""
        variables = {v.path: v for v in model.metrics_variables}
        missing = values.keys() - variables.keys()
        if missing:
            raise RuntimeError(f"metric variables {sorted(missing)} were not built")
        if self.strategy is None:
            for path, value in values.items():
                variables[path].assign(value)
            return
        import tensorflow as tf

        paths = list(values)
        stacked = [tf.constant(values[path]) for path in paths]

        def assign():
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            for path, value in zip(paths, stacked, strict=True):
                variables[path].assign(value[replica])

        self.strategy.run(assign)


class _NotEagerOverheadWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "eagerly has significant overhead" not in record.getMessage()


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


def may_write(settings) -> bool:
    """Whether this process may be the one that writes the run's files (the chief), known
    without TensorFlow: not a multi-worker run, or the ``chief`` task of ``TF_CONFIG`` (its
    worker 0 when it names no chief), or task 0 of the Slurm job. Used only to decide
    whether to check, before any work, that the run dir is writable: the other workers
    see it read-only by design."""
    if settings.strategy != "multi_worker":
        return True
    if "TF_CONFIG" in os.environ:
        try:
            tf_config = json.loads(os.environ["TF_CONFIG"])
            task, cluster = tf_config["task"], tf_config["cluster"]
            if task["type"] == "chief":
                return True
            return task["type"] == "worker" and int(task["index"]) == 0 and "chief" not in cluster
        except (ValueError, KeyError, TypeError):
            return True  # TensorFlow will say what is wrong with it
    return os.environ.get("SLURM_PROCID", "0") == "0"


def _connect(settings):
    """MultiWorkerMirroredStrategy, created within ``connect_timeout`` or not at all."""
    import tensorflow as tf

    if "TF_CONFIG" in os.environ:
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    elif "SLURM_JOB_ID" in os.environ:
        resolver = slurm_resolver(settings.port_base)
    else:
        from keepbest.errors import ConfigError

        raise ConfigError(
            "distribute.strategy: multi_worker needs TF_CONFIG or a Slurm job "
            "(SLURM_JOB_ID) to know its workers"
        )
    _configure_heartbeats(resolver, settings.heartbeat_timeout)
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
        # No CommunicationOptions(timeout_seconds=...): TensorFlow 2.21 leaks a thread per
        # collective that has a timeout (measured: +10 threads per evaluation step, and a
        # run dies at a few thousand). A lost worker is noticed by the heartbeats instead.
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    finally:
        watchdog.stdin.close()
        watchdog.wait()


def _configure_heartbeats(resolver, timeout: float) -> None:
    """Set the coordination service up as MultiWorkerMirroredStrategy would, but with a
    heartbeat timeout of ``timeout`` seconds (TensorFlow's default is 10 s): a worker whose
    heartbeats stop for that long fails every other worker's next collective. Uses
    TensorFlow's private coordination API; without it, TensorFlow's default stays."""
    try:
        from tensorflow.core.protobuf import coordination_config_pb2
        from tensorflow.python.distribute import multi_worker_util
        from tensorflow.python.eager import context
    except ImportError:  # a TensorFlow without it: its own defaults apply
        return
    if context.context().coordination_service is not None:
        return
    spec = multi_worker_util.normalize_cluster_spec(resolver.cluster_spec())
    jobs = [
        coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
        for job in ("chief", "worker")
        if job in spec.jobs
    ]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(spec),
        coordinated_jobs=jobs,
        heartbeat_timeout_in_ms=int(timeout * 1000),
    )
