"""benchmarks/cosine_learning_rate.py: a controller copy whose learning rate follows a cosine decay."""

import dataclasses
import math

import cosine_learning_rate
import numpy as np
import pytest

import keras_lopt
from training import runner, tasks


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cosine")
    for variant in cosine_learning_rate.VARIANTS:
        cosine_learning_rate.save("default", variant, directory / variant)
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


def test_a_taken_directory_is_an_error_without_a_traceback(copies):
    with pytest.raises(SystemExit, match="not empty"):
        cosine_learning_rate.main(["--output_dir", str(copies)])
