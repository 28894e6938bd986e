"""A custom layer registered with Keras' serialization: a model that uses it loads in
another process once this module is imported (and only then)."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="keepbest_tests")
class Scale(keras.layers.Layer):
    """Multiplies its input by a trainable vector (one factor per feature)."""

    def __init__(self, initial: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial = initial

    def build(self, input_shape):
        self.factors = self.add_weight(
            shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.initial),
            name="factors",
        )

    def call(self, inputs):
        return inputs * self.factors

    def get_config(self):
        return {**super().get_config(), "initial": self.initial}
