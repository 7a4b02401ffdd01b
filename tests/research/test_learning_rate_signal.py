"""research/learning_rate_signal.py: what the controller's input shows of the absolute learning rate."""

import learning_rate_signal
import numpy as np
import pytest

from training import tasks


def test_summary_slope_is_one_for_an_input_that_is_log_lr():
    factors, scales = [0.1, 1.0, 10.0], [1.0, 3.0]
    row = {"values": {f"{f:g}": {f"{s:g}": [np.log(0.01 * f) + 0.1 * s, np.log(0.01 * f) + 0.1 * s]
                                 for s in scales} for f in factors}}
    summary = learning_rate_signal.summarise([row], factors, scales)
    assert summary["slope_median"] == pytest.approx(1.0)
    assert summary["in_order"] == "2 of 2"
    assert summary["shift_for_10x_rate"] == pytest.approx(np.log(10.0))
    assert summary["weight_scale_shift_median"] == pytest.approx(0.2)
    assert summary["within_run_std_median"] == pytest.approx(0.0)
    # Weight scale shifts it by 0.2, far less than a 10x rate: one threshold separates every neighbouring start.
    assert summary["separability_across_tasks"] == {"x1 vs x0.1": 1.0, "x10 vs x1": 1.0}


def test_a_hundredfold_learning_rate_raises_the_step_over_parameter_input():
    spec = tasks.sample_task(1000, max_steps=200)
    task = tasks.build_task(spec)
    low, high = (np.mean(learning_rate_signal.early_values(spec, task, factor, 1.0, control_steps=2))
                 for factor in (0.1, 10.0))
    assert high > low + 1.0
