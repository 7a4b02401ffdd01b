"""research/frame_ceiling.py: above max_learning_rate the ceiling also follows the frame's cosine."""

import frame_ceiling
import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_lopt
from keras_lopt import actions


def _raising_controller(path):
    """Every control step: the learning-rate head's largest factor, the other heads at their no-op."""
    up = [len(head.choices) - 1 if head.hyperparameter == "learning_rate" else head.noop
          for head in actions.ACTION_HEADS]

    def raise_rate(observation, state):
        return tf.tile(tf.constant([up], tf.int32), [tf.shape(observation)[0], 1]), state

    keras_lopt.save_controller(path, keras_lopt.controller.ScheduledLearningRate(raise_rate, "cosine"), state_size=1,
                               extra={"learning_rate_schedule": "cosine"})
    return str(path)


def _rate_after(optimizer_class, policy, steps=20):
    optimizer = optimizer_class(learning_rate=0.1, policy=policy, total_steps=40, control_every=4)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = optimizer.scale_loss(tf.reduce_mean((model(x) - y) ** 2))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    return optimizer.hyperparameters["learning_rate"]


def test_a_raising_controller_above_the_cap_follows_the_frame_instead_of_holding_its_start(tmp_path):
    policy = _raising_controller(tmp_path / "raise")
    assert _rate_after(keras_lopt.LHOPT, policy) == pytest.approx(0.1)  # held at the start
    # The last control step (update 20) is half way: the frame's cosine is at 0.5 there.
    assert _rate_after(frame_ceiling.FrameCeilingLHOPT, policy) == pytest.approx(0.05, rel=1e-4)
