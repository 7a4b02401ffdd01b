"""Write a hand-made controller for keras_lopt.LHOPT, save it, train with it.

The controller is a few TensorFlow ops, saved in the same SavedModel format
as the meta-trained policies (see the README, "Writing a controller"):

- when the training loss rose since the previous control step, multiply the
  learning rate by 0.707;
- after three control steps in a row in which it fell, multiply it by 1.1.

The count of falls in a row is the controller's recurrent state. The script
saves the controller to --output-dir/controller, trains an MLP on
scikit-learn's bundled digits with it (and with the same LHOPT without a
controller, for comparison), and prints the learning rate it chose.

    python examples/rule_based_controller.py --output-dir rule_based_output
"""

import argparse
import os
import pathlib
import shutil

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_lopt  # noqa: E402
from keras_lopt import actions, features  # noqa: E402

LOSS_RATIO = features.FEATURE_NAMES.index("train_loss_log_ratio")
LR_CHOICES = actions.ACTION_HEADS[0].choices
LR_DOWN, LR_UP = LR_CHOICES.index(0.707), LR_CHOICES.index(1.1)
FALLS_BEFORE_RAISING = 3


def act(observation, state):
    """observation [B, NUM_FEATURES], state [B, 1] (falls in a row) -> (action, state)."""
    log_ratio = observation[:, LOSS_RATIO]
    rose, fell = log_ratio > 0.0, log_ratio < 0.0
    falls = tf.where(fell, state[:, 0] + 1.0, 0.0)
    raise_lr = falls >= FALLS_BEFORE_RAISING
    lr_choice = tf.where(
        rose, LR_DOWN, tf.where(raise_lr, LR_UP, actions.NOOP_ACTION[0])
    )
    batch = tf.shape(observation)[0]
    action = tf.tile(tf.constant([actions.NOOP_ACTION], tf.int32), [batch, 1])
    action = tf.concat([lr_choice[:, None], action[:, 1:]], axis=1)
    # Start counting again after each raise.
    falls = tf.where(raise_lr, 0.0, falls)
    return action, falls[:, None]


class LearningRateLog(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.rates = []

    def on_epoch_end(self, epoch, logs=None):
        optimizer = keras_lopt.callbacks.find_lhopt(self.model)
        self.rates.append(optimizer.hyperparameters["learning_rate"])


def train(policy, data, epochs, seed):
    x_train, x_val, y_train, y_val = data
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ])
    model.compile(
        optimizer=keras_lopt.LHOPT(learning_rate=1e-3, policy=policy, control_every=10),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    log = LearningRateLog()
    history = model.fit(
        x_train, y_train, batch_size=64, epochs=epochs, validation_data=(x_val, y_val),
        callbacks=[keras_lopt.ControllerCallback(), log], verbose=0,
    )
    return history.history["val_loss"], log.rates


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="rule_based_output")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    path = pathlib.Path(args.output_dir) / "controller"
    shutil.rmtree(path, ignore_errors=True)
    keras_lopt.save_controller(
        path, act, state_size=1, name="rule_based",
        description="lr x0.707 when the loss rose, x1.1 after three falls in a row",
    )
    print(f"saved the controller to {path}")

    digits = load_digits()
    data = train_test_split(
        (digits.data / 16.0).astype(np.float32), digits.target,
        test_size=0.25, random_state=args.seed, stratify=digits.target,
    )
    fixed_loss, _ = train(None, data, args.epochs, args.seed)
    ruled_loss, rates = train(str(path), data, args.epochs, args.seed)
    print(f"{'epoch':>5} {'val loss, fixed lr':>19} {'val loss, rule-based':>21} {'its lr':>9}")
    for epoch, (a, b, rate) in enumerate(zip(fixed_loss, ruled_loss, rates), 1):
        print(f"{epoch:>5} {a:>19.4f} {b:>21.4f} {rate:>9.2e}")


if __name__ == "__main__":
    main()
