"""A Keras callback that tells LHOPT's controller what `model.fit` knows."""

import keras

from keras_lopt import user_warnings
from keras_lopt.controller import Controller
from keras_lopt.lhopt import LHOPT, run_over_message


def find_lhopt(model):
    """The model's LHOPT optimizer, also when wrapped in a LossScaleOptimizer."""
    return _unwrapped(model.optimizer)


def _unwrapped(optimizer):
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if not isinstance(inner, LHOPT):
        raise ValueError(
            f"keras_lopt.ControllerCallback needs a model compiled with keras_lopt.LHOPT; "
            f"this one uses {type(inner).__name__}."
        )
    return inner


def connect_loss_scale_optimizer(optimizer):
    """Passes the loss a LossScaleOptimizer scales on to the LHOPT it wraps; returns that LHOPT.

    Under mixed precision Keras wraps LHOPT in a `LossScaleOptimizer`, and every
    step's loss goes through the wrapper's `scale_loss`, which does not pass it
    on: the controller would see no loss. `ControllerCallback` connects them at
    the start of `fit`; call this once in a custom training loop. Does nothing
    for an LHOPT that is not wrapped.
    """
    lhopt = _unwrapped(optimizer)
    if optimizer is lhopt or getattr(optimizer, "_keras_lopt_connected", False):
        return lhopt
    scale_loss = optimizer.scale_loss

    def scale_and_observe(loss):
        lhopt.observe_training_loss(loss)
        return scale_loss(loss)

    optimizer.scale_loss = scale_and_observe
    optimizer._keras_lopt_connected = True
    return lhopt


class ControllerCallback(keras.callbacks.Callback):
    """Feeds LHOPT's controller the run length, the training and the validation loss.

    - At the start of `fit`, if the optimizer has no `total_steps`, sets it to
      the updates this fit makes (epochs x steps per epoch, divided by
      `gradient_accumulation_steps`), counted from where the current run is,
      so the controller sees its progress through training. It warns if it
      cannot (data of unknown length: pass `steps_per_epoch` to `fit`) and if
      the fit starts at or past the planned end of the run (to train on, call
      `optimizer.start_new_run()` first).
    - Under mixed precision, connects Keras' `LossScaleOptimizer` to the LHOPT
      it wraps, so the controller sees the training loss.
    - After every epoch with validation data, passes `val_loss` to
      `LHOPT.observe_validation_loss`, unless the controller's metadata says it
      was meta-trained without validation losses (`extra` key
      "trained_with_validation_loss": false, as `training.export` writes).
    - At the end of a fit stopped before the planned end (for example by
      `EarlyStopping`), warns that the schedule did not finish.

    Example:

    ```python
    model.compile(optimizer=keras_lopt.LHOPT(policy=...), loss=...)
    model.fit(x, y, epochs=10, validation_split=0.1,
              callbacks=[keras_lopt.ControllerCallback()])
    ```
    """

    def on_train_begin(self, logs=None):
        optimizer = connect_loss_scale_optimizer(self.model.optimizer)
        if not optimizer.controller_on:
            return
        epochs, steps = self.params.get("epochs"), self.params.get("steps")
        done = optimizer.run_steps
        if optimizer.total_steps is None:
            if epochs and steps:
                optimizer.total_steps = done + epochs * steps // (optimizer.gradient_accumulation_steps or 1)
            else:
                user_warnings.warn(optimizer, "unknown_run_length", _unknown_length_message(epochs))
        elif done >= optimizer.total_steps:
            user_warnings.warn(optimizer, "run_over", run_over_message(optimizer, done))

    def on_epoch_end(self, epoch, logs=None):
        optimizer = find_lhopt(self.model)
        if logs and "val_loss" in logs and optimizer.controller_on and _uses_validation_loss(optimizer.policy):
            optimizer.observe_validation_loss(logs["val_loss"])

    def on_train_end(self, logs=None):
        optimizer = find_lhopt(self.model)
        done, planned = optimizer.run_steps, optimizer.total_steps
        if optimizer.controller_on and planned is not None and done < planned and self.model.stop_training:
            user_warnings.warn(optimizer, "stopped_early", (
                f"Training stopped at update {done} of the {planned} LHOPT's controller planned for (a callback "
                f"such as EarlyStopping stopped it): its schedule did not finish, and the learning rate is "
                f"{optimizer.hyperparameters['learning_rate']:.3g}, where it was at that point of the plan. "
                f"EarlyStopping(restore_best_weights=True) keeps the best weights seen; to anneal, fit the "
                f"remaining epochs or plan a shorter run."))


def _unknown_length_message(epochs):
    return (
        "keras_lopt.ControllerCallback cannot plan LHOPT's run: fit does not know how many steps an epoch has "
        f"(a dataset of unknown length{'' if epochs else ', or no epochs'}), so total_steps stays unset and the "
        "controller sees no progress through training. Pass steps_per_epoch to fit, or "
        "LHOPT(total_steps=...) for the whole run."
    )


def _uses_validation_loss(policy):
    """False for a controller whose metadata says it was meta-trained without
    validation losses: its validation features were always "unseen", so
    feeding it one would show it inputs it never learned from."""
    if isinstance(policy, Controller):
        return bool(policy.metadata.get("extra", {}).get("trained_with_validation_loss", True))
    return True
