"""A Keras callback that tells LHOPT's controller what `model.fit` knows."""

import warnings

import keras

from keras_lopt.controller import Controller
from keras_lopt.lhopt import LHOPT


def find_lhopt(model):
    """The model's LHOPT optimizer, also when wrapped in a LossScaleOptimizer."""
    optimizer = model.optimizer
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if not isinstance(optimizer, LHOPT):
        raise ValueError(
            f"keras_lopt.ControllerCallback needs a model compiled with keras_lopt.LHOPT; "
            f"this one uses {type(optimizer).__name__}."
        )
    return optimizer


class ControllerCallback(keras.callbacks.Callback):
    """Feeds LHOPT's controller the run length and the validation loss.

    - At the start of `fit`, if the optimizer has no `total_steps`, sets it to
      epochs x steps per epoch (from the optimizer's current update count),
      so the controller sees its progress through training.
    - After every epoch with validation data, passes `val_loss` to
      `LHOPT.observe_validation_loss`, unless the controller's metadata says it
      was meta-trained without validation losses (`extra` key
      "trained_with_validation_loss": false, as `training.export` writes).

    Example:

    ```python
    model.compile(optimizer=keras_lopt.LHOPT(policy=...), loss=...)
    model.fit(x, y, epochs=10, validation_split=0.1,
              callbacks=[keras_lopt.ControllerCallback()])
    ```
    """

    def on_train_begin(self, logs=None):
        optimizer = find_lhopt(self.model)
        epochs, steps = self.params.get("epochs"), self.params.get("steps")
        done = int(keras.ops.convert_to_numpy(optimizer.iterations))
        if optimizer.total_steps is None and epochs and steps:
            optimizer.total_steps = done + epochs * steps
        elif optimizer.total_steps is not None and done >= optimizer.total_steps and optimizer.controller_on:
            warnings.warn(_run_over_message(optimizer, done), stacklevel=2)

    def on_epoch_end(self, epoch, logs=None):
        optimizer = find_lhopt(self.model)
        if logs and "val_loss" in logs and optimizer.controller_on and _uses_validation_loss(optimizer.policy):
            optimizer.observe_validation_loss(logs["val_loss"])


def _run_over_message(optimizer, done):
    message = (
        f"This fit starts at step {done}, at or past the end of LHOPT's run (total_steps="
        f"{optimizer.total_steps}): its controller never saw progress past 1"
    )
    if isinstance(optimizer.policy, Controller) and optimizer.policy.learning_rate_schedule != "constant":
        rate = optimizer.hyperparameters["learning_rate"]
        message += (
            f", and its {optimizer.policy.learning_rate_schedule} learning-rate schedule has ended: "
            f"the learning rate stays at its end value, {rate:.3g}"
        )
    return message + (
        ". To train again, compile the model with a new keras_lopt.LHOPT() (with ControllerCallback "
        "it plans the new fit's length); to plan a longer run, set total_steps before the first fit."
    )


def _uses_validation_loss(policy):
    """False for a controller whose metadata says it was meta-trained without
    validation losses: its validation features were always "unseen", so
    feeding it one would show it inputs it never learned from."""
    if isinstance(policy, Controller):
        return bool(policy.metadata.get("extra", {}).get("trained_with_validation_loss", True))
    return True
