"""The seed case (keras-team/keras#20323) in a plain Keras script, fixed with KeepBest.

One batch per epoch, monitoring the training loss: stock
``EarlyStopping(restore_best_weights=True)`` picks the epoch whose *logged* loss (a mean
of values computed before the epoch's update) is lowest, and restores weights whose loss
is another number. ``keepbest.KeepBest`` measures the loss on exactly the weights it
saves, keeps them on disk only, and ends fit with them, verified.

    python examples/seed_case_script.py [RUN_DIR]      # default: runs/seed-script

It prints one JSON line: each callback's chosen epoch, the value it chose by, and the
loss of the weights the model holds after fit.
"""

import importlib.resources
import json
import sys

import keras
import numpy as np

import keepbest

digits = np.load(importlib.resources.files("keepbest") / "datasets" / "digits.npz")
x, y = digits["x"].astype("float32") / 16.0, digits["y"].astype("int64")


def model():
    keras.utils.set_random_seed(0)
    net = keras.Sequential(
        [
            keras.Input((8, 8)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    net.compile(optimizer=keras.optimizers.SGD(2.0), loss="sparse_categorical_crossentropy")
    return net


def loss_now(net) -> float:
    return net.evaluate(x, y, verbose=0)  # batches of 32, as KeepBest measures train_data


# Stock Keras: chooses by the logged running mean, restores other weights.
stock_model = model()
stock = keras.callbacks.EarlyStopping(monitor="loss", patience=3, restore_best_weights=True)
logged = stock_model.fit(x, y, batch_size=len(x), epochs=40, callbacks=[stock], verbose=0)
stock_epoch = int(np.argmin(logged.history["loss"])) + 1

# keepbest: the same script with KeepBest instead.
net = model()
best = keepbest.KeepBest(
    sys.argv[1] if len(sys.argv) > 1 else "runs/seed-script",
    monitor="loss",
    patience=3,
    train_data=(x, y),  # the loss is measured on these, after each epoch's update
)
net.fit(x, y, batch_size=len(x), epochs=40, callbacks=[best], verbose=0)

print(
    json.dumps(
        {
            "stock": {
                "epoch": stock_epoch,
                "chosen_by": min(logged.history["loss"]),
                "restored_loss": loss_now(stock_model),
            },
            "keepbest": {
                "epoch": best.best_epoch,
                "chosen_by": best.best_value,
                "verified": best.verified_value,
                "restored_loss": loss_now(net),
            },
        }
    )
)
