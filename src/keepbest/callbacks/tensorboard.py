"""Optional TensorBoard logging (``logging: {tensorboard: true}``), into the run dir.

At each evaluation point every logged value is written as a scalar: validation values
(``val_*``) under ``tensorboard/validation``, the others (Keras' running means and the
measured ``epoch_end_*``) under ``tensorboard/train``. Tags and the x axis follow the
run's evaluation points: ``epoch_<metric>`` over the epoch index (as Keras' own
TensorBoard callback writes them), or, with ``checkpoint.every_steps``, ``step_<metric>``
over the global step. It needs the ``tensorboard`` package, which
``require_tensorboard`` checks before any work is done.

Example:

    >>> from keepbest.callbacks.tensorboard import TensorBoardLog
    >>> log = TensorBoardLog(run_dir)                 # doctest: +SKIP
    >>> log(point)                                     # doctest: +SKIP

    $ tensorboard --logdir runs/digits-mlp/tensorboard
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from keepbest.callbacks.points import EvaluationPoint
from keepbest.config import ExperimentConfig, reported_against
from keepbest.errors import ConfigError
from keepbest.monitor import VALIDATION_PREFIX
from keepbest.rundir.layout import RunDir


def require_tensorboard(cfg: ExperimentConfig) -> None:
    """``ConfigError`` if the config asks for TensorBoard logs and it is not installed."""
    if cfg.logging.tensorboard and importlib.util.find_spec("tensorboard") is None:
        with reported_against(cfg):
            raise ConfigError(
                "logging.tensorboard: the tensorboard package is not installed; "
                "pip install 'keepbest[tensorboard]', or set logging.tensorboard: false"
            )


class TensorBoardLog:
    """Writes each evaluation point's values as TensorBoard scalars."""

    def __init__(self, run_dir: Path):
        import tensorflow as tf

        folder = RunDir(run_dir).tensorboard_dir
        self._train = tf.summary.create_file_writer(str(folder / "train"))
        self._validation = tf.summary.create_file_writer(str(folder / "validation"))

    def __call__(self, point: EvaluationPoint) -> None:
        import tensorflow as tf

        prefix = "step_" if point.by_steps else "epoch_"
        x = point.step if point.by_steps else point.epoch - 1
        for key, value in point.values.items():
            if key == "best_saved":
                continue
            validation = key.startswith(VALIDATION_PREFIX)
            writer = self._validation if validation else self._train
            with writer.as_default():
                tf.summary.scalar(prefix + key.removeprefix(VALIDATION_PREFIX), value, step=x)
        self._train.flush()
        self._validation.flush()
