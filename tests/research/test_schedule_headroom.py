"""research/schedule_headroom.py: LHOPT (controller off) under fixed learning-rate schedules."""

import dataclasses

import numpy as np
import pytest
import schedule_headroom

import keras_lopt
from training import runner, tasks


def test_cosine_starts_at_the_rate_and_reaches_zero_at_the_budget():
    assert schedule_headroom.rate_at("cosine", 0.01, 0, 100) == 0.01
    assert schedule_headroom.rate_at("cosine", 0.01, 50, 100) == pytest.approx(0.005)
    assert schedule_headroom.rate_at("cosine", 0.01, 100, 100) == pytest.approx(0.0)
    assert schedule_headroom.rate_at("constant", 0.01, 100, 100) == 0.01


def _small_spec():
    spec = tasks.sample_task(5, families=("tabular_mlp",))
    return dataclasses.replace(spec, control_steps=4, control_every=5, batch_size=16)


def test_a_constant_schedule_is_lhopt_with_its_controller_off_and_cosine_differs():
    spec = _small_spec()
    task = tasks.build_task(spec)
    _, constant = schedule_headroom.run_schedule(task, spec, "constant", 1e-2)
    _, plain = runner.TaskRun(task, keras_lopt.LHOPT(policy=None), chunk_steps=spec.control_every).run()
    assert constant == pytest.approx(plain)
    _, cosine = schedule_headroom.run_schedule(task, spec, "cosine", 1e-2)
    assert cosine[1] == pytest.approx(constant[1])  # the first chunk runs at the start rate
    assert not np.allclose(cosine[2:], constant[2:])


def test_a_missing_evaluation_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        schedule_headroom.main(["--evaluation", str(tmp_path / "missing.json")])
    assert "run python -m training.evaluate first" in capsys.readouterr().err
