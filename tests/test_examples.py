"""The example scripts run and do what they say."""

import pathlib
import subprocess
import sys

import numpy as np
import tensorflow as tf

from keras_lopt import actions, features

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import rule_based_controller  # noqa: E402


def _lr_choices(loss_ratios):
    """Feeds the rule-based controller a sequence of loss log ratios."""
    state = tf.zeros([1, 1])
    chosen = []
    ratio_index = features.FEATURE_NAMES.index("train_loss_log_ratio")
    for ratio in loss_ratios:
        observation = np.zeros([1, features.NUM_FEATURES], np.float32)
        observation[0, ratio_index] = ratio
        action, state = rule_based_controller.act(tf.constant(observation), state)
        assert list(action.numpy()[0, 1:]) == list(actions.NOOP_ACTION[1:])
        chosen.append(actions.ACTION_HEADS[0].choices[int(action.numpy()[0, 0])])
    return chosen


def test_rule_based_controller_rules():
    # Falls three times -> raise; rise -> lower; count restarts after a raise.
    assert _lr_choices([-0.1, -0.1, -0.1, -0.1, 0.2, -0.1]) == [1.0, 1.0, 1.1, 1.0, 0.707, 1.0]


def test_rule_based_controller_script(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "rule_based_controller.py"),
         "--output-dir", str(tmp_path), "--epochs", "2"],
        check=True, capture_output=True, text=True,
    )
    assert (tmp_path / "controller" / "keras_lopt_controller.json").is_file()
    rows = [line.split() for line in result.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 2 and all(np.isfinite(float(v)) for row in rows for v in row[1:])


def test_the_readme_usage_snippet_runs():
    import re

    from keras_lopt.hyperparameters import HYPERPARAMETERS

    snippet = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)[0]
    namespace = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert set(namespace["model"].optimizer.hyperparameters) == set(HYPERPARAMETERS)
