"""The custom pieces of configs/tutorial.yaml: what a typical Keras tutorial script
defines next to its model, named in the config as ``tutorial_code:name``."""

import keras
from keras import ops


@keras.saving.register_keras_serializable("tutorial")
def focal_loss(y_true, y_pred, gamma=2.0):
    """Sparse categorical focal loss (Lin et al. 2017): cross-entropy down-weighted on
    the samples the model already gets right."""
    y_true = ops.cast(ops.reshape(y_true, (-1,)), "int32")
    probs = ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0)
    picked = ops.take_along_axis(probs, ops.expand_dims(y_true, -1), axis=-1)[:, 0]
    return -ops.power(1.0 - picked, gamma) * ops.log(picked)


@keras.saving.register_keras_serializable("tutorial")
class ConfidentAccuracy(keras.metrics.Metric):
    """The share of samples predicted correctly with at least ``threshold`` confidence."""

    def __init__(self, threshold=0.9, name="confident_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = threshold
        self.hits = self.add_variable((), initializer="zeros", name="hits")
        self.count = self.add_variable((), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        y_pred = ops.cast(y_pred, "float32")
        right = ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), y_true)
        sure = ops.greater_equal(ops.max(y_pred, axis=-1), self.threshold)
        hit = ops.cast(ops.logical_and(right, sure), "float32")
        weight = (
            ops.ones_like(hit)
            if sample_weight is None
            else ops.cast(ops.reshape(sample_weight, (-1,)), "float32")
        )
        self.hits.assign_add(ops.sum(hit * weight))
        self.count.assign_add(ops.sum(weight))

    def result(self):
        return ops.divide_no_nan(self.hits, self.count)

    def reset_state(self):
        self.hits.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


class LearningRateLog(keras.callbacks.Callback):
    """A logging callback: adds the learning rate in use to each epoch's logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = float(ops.convert_to_numpy(self.model.optimizer.learning_rate))
