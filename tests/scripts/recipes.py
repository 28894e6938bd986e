"""The data and models of tests/test_own_script.py: plain numpy and plain Keras, shared by
the test (in-process fits) and plain_fit.py (the script the test runs).

- ``seed``: keras#20323. 64 samples trained in one batch of 64 (one update per epoch) by
  SGD at a learning rate high enough to make the loss go up and down; no Dropout, so the
  loss Keras logs for an epoch is the loss of the weights the previous epoch ended with.
- ``dropout``: 96 training and 32 validation samples (batches of 8: 12 steps an epoch), an
  MLP with a Dropout layer (a SeedGenerator state that a resume must restore).
- ``custom``: the ``dropout`` data through a model that starts with the registered layer
  of custom_layers.py.
- ``decisions``: 96 training and 64 validation samples in batches of 16; val_loss falls
  for 9 epochs, rises for two, falls again at epochs 12 and 13 (by 0.0034, then 0.0020)
  and rises (measured on CPU: 0.9594 0.6403 0.4749 0.3699 0.3084 0.2655 0.2352 0.2159
  0.2051 0.2081 0.2073 0.2017 0.1997 0.2030 0.2174 0.2119 0.2101 ...), so patience,
  min_delta, baseline and start_from_epoch each change where an early stop lands.
"""

from __future__ import annotations

import keras
import numpy as np

BATCH_SIZE = {"seed": 64, "dropout": 8, "custom": 8, "decisions": 16}


def seed_data():
    """64 samples of 8 features, 4 classes from a random linear teacher; no validation."""
    rng = np.random.default_rng(20323)
    x = rng.standard_normal((64, 8)).astype("float32")
    y = (x @ rng.standard_normal((8, 4))).argmax(axis=1).astype("int64")
    return (x, y), None


def clusters(train: int, validation: int, seed: int):
    """4 Gaussian clusters in 8 dimensions: (train arrays, validation arrays)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((4, 8)).astype("float32")

    def draw(n):
        y = rng.integers(0, 4, n)
        x = centers[y] + rng.standard_normal((n, 8)).astype("float32")
        return x.astype("float32"), y.astype("int64")

    return draw(train), draw(validation)


def data(recipe: str):
    if recipe == "seed":
        return seed_data()
    if recipe == "decisions":
        return clusters(96, 64, seed=12)
    return clusters(96, 32, seed=7)


def build(recipe: str) -> keras.Model:
    """The recipe's compiled model, its initial weights fixed by seed 0."""
    keras.utils.set_random_seed(0)
    if recipe == "seed":
        model = keras.Sequential(
            [
                keras.Input((8,)),
                keras.layers.Dense(32, activation="relu"),
                keras.layers.Dense(4, activation="softmax"),
            ]
        )
        optimizer = keras.optimizers.SGD(learning_rate=8.0)
    else:
        layers = [keras.Input((8,))]
        if recipe == "custom":
            from custom_layers import Scale

            layers.append(Scale(0.5))
        layers += [
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(4, activation="softmax"),
        ]
        model = keras.Sequential(layers)
        # slower for the scripts' runs: val_loss keeps improving for most of a short run
        optimizer = keras.optimizers.Adam(learning_rate=0.01 if recipe == "decisions" else 0.003)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return model
