"""research/cosine_learning_rate.py: a controller copy whose learning rate follows a cosine decay."""

import dataclasses
import math

import cosine_learning_rate
import numpy as np
import pytest
import tensorflow as tf

import keras_lopt
from keras_lopt import actions
from training import runner, tasks


class HalvingBeta1(tf.Module):
    """A controller meta-trained without a schedule, stand-in: halves 1 - beta_1 on every call."""

    def __call__(self, observation, state):
        action = tf.constant([[0 if head.hyperparameter == "beta_1" else head.noop for head in actions.ACTION_HEADS]])
        return tf.tile(action, [tf.shape(observation)[0], 1]), state


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cosine")
    keras_lopt.save_controller(directory / "source", HalvingBeta1())
    for variant in cosine_learning_rate.VARIANTS:
        cosine_learning_rate.save(str(directory / "source"), variant, directory / variant)
    return directory


def _run(policy, total_steps=40, control_every=5):
    spec = dataclasses.replace(tasks.sample_task(5, families=("tabular_mlp",)), batch_size=16,
                               control_steps=total_steps // control_every, control_every=control_every)
    optimizer = keras_lopt.LHOPT(policy=policy, total_steps=total_steps, control_every=control_every)
    trajectory = []
    runner.TaskRun(tasks.build_task(spec), optimizer).run(
        on_chunk=lambda run: trajectory.append(run.optimizer.hyperparameters))
    return trajectory


def test_the_learning_rate_follows_the_cosine_and_the_other_heads_act(copies):
    start = keras_lopt.lhopt.DEFAULTS["learning_rate"]
    cosine_only = _run(str(copies / "cosine_only"))
    expected = [max(start * 0.5 * (1 + math.cos(math.pi * step / 40)), 1e-8) for step in range(5, 41, 5)]
    assert [h["learning_rate"] for h in cosine_only] == pytest.approx(expected, rel=1e-4)
    assert all(h["beta_1"] == cosine_only[0]["beta_1"] for h in cosine_only)  # the others held
    hybrid = _run(str(copies / "cosine_learning_rate"))
    assert [h["learning_rate"] for h in hybrid] == pytest.approx(expected, rel=1e-4)
    moved = [name for name in hybrid[0] if name != "learning_rate"
             and not np.allclose([h[name] for h in hybrid], hybrid[0][name])]
    assert moved, "the policy's other heads never moved"


def test_a_controller_that_already_follows_a_schedule_is_refused(tmp_path):
    # The packaged default was meta-trained in the cosine frame: a second cosine would compound.
    with pytest.raises(SystemExit, match="already follows a cosine learning-rate schedule"):
        cosine_learning_rate.main(["--policy", "default", "--output_dir", str(tmp_path)])


def test_a_taken_directory_is_an_error_without_a_traceback(copies):
    with pytest.raises(SystemExit, match="not empty"):
        cosine_learning_rate.main(["--policy", str(copies / "source"), "--output_dir", str(copies)])
