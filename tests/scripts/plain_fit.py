"""A plain Keras training script, as a user would write it, run by tests/test_own_script.py.

    python plain_fit.py '{"run_dir": "...", "recipe": "seed", "callback": "keepbest", ...}'

Options (a JSON object, the only argument):

- ``recipe``: the data and model, from recipes.py next to this script: ``seed``
  (keras#20323: one batch, one update per epoch, no validation data), ``dropout`` (12
  steps an epoch, a Dropout layer, validation data) or ``custom`` (a registered custom
  layer, from custom_layers.py).
- ``callback``: ``keepbest`` (``keepbest.KeepBest(run_dir, **keepbest)``, plus
  ``train_data=(x, y)`` if ``train_data`` is true), ``stock`` (Keras'
  ``EarlyStopping(restore_best_weights=True, **stock)``) or ``none``.
- ``epochs``; ``step_sleep``: seconds to sleep after each training batch (a slower run
  for the tests that interrupt it; no effect on any number).

After fit, the script prints one JSON line (the last line of stdout) with what Keras
logged, the loss of the model's weights at each epoch end measured by a separate
``model.evaluate`` over the training arrays (a LambdaCallback placed after keepbest's),
the loss of the weights the model holds after fit, and what each callback decided.
``keepbest.StoppedForResume`` (a signal during fit) exits 75 after printing
``{"stopped": message}``.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import recipes  # next to this script

EXIT_STOPPED = 75


def main() -> None:
    options = json.loads(sys.argv[1])
    recipe = options.get("recipe", "seed")
    (x, y), validation = recipes.data(recipe)
    batch_size = recipes.BATCH_SIZE[recipe]
    model = recipes.build(recipe)

    callbacks = []
    keep_best = stock = None
    stopped_for_resume: tuple = ()  # nothing to catch without keepbest
    kind = options.get("callback", "keepbest")
    if kind == "keepbest":
        import keepbest

        kwargs = dict(options.get("keepbest", {}))
        if options.get("train_data"):
            kwargs["train_data"] = (x, y)
        keep_best = keepbest.KeepBest(options["run_dir"], **kwargs)
        stopped_for_resume = (keepbest.StoppedForResume,)
        callbacks.append(keep_best)
    elif kind == "stock":
        stock = keras.callbacks.EarlyStopping(restore_best_weights=True, **options.get("stock", {}))
        callbacks.append(stock)

    def training_loss() -> float:
        """The loss of the weights the model holds now: plain Keras over the training
        arrays (evaluate's default batch size, as keepbest measures arrays)."""
        return model.evaluate(x, y, verbose=0, return_dict=True)["loss"]

    # Measured at each epoch end, after keepbest's callback ran.
    epoch_end: list[float] = []
    callbacks.append(
        keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: epoch_end.append(training_loss())
        )
    )
    step_sleep = float(options.get("step_sleep", 0.0))
    if step_sleep:
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_train_batch_end=lambda batch, logs: time.sleep(step_sleep)
            )
        )

    fit_kwargs = {"validation_data": validation} if validation is not None else {}
    try:
        history = model.fit(
            x,
            y,
            batch_size=batch_size,
            epochs=int(options.get("epochs", 12)),
            shuffle=False,
            verbose=0,
            callbacks=callbacks,
            **fit_kwargs,
        )
    except stopped_for_resume as exc:
        print(json.dumps({"stopped": str(exc)}), flush=True)
        sys.exit(EXIT_STOPPED)

    result = {
        "logged": history.history,
        "epoch_end": epoch_end,
        "final_loss": training_loss(),
    }
    if validation is not None:
        # in batches like fit's validation pass (validation_batch_size defaults to batch_size)
        result["final_val_loss"] = model.evaluate(
            *validation, batch_size=batch_size, verbose=0, return_dict=True
        )["loss"]
    if keep_best is not None:
        result["keepbest"] = {
            "best_epoch": keep_best.best_epoch,
            "best_step": keep_best.best_step,
            "best_value": keep_best.best_value,
            "verified_value": keep_best.verified_value,
            "stop_reason": keep_best.stop_reason,
        }
    if stock is not None:
        result["stock"] = {"best_epoch": stock.best_epoch, "stopped_epoch": stock.stopped_epoch}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
