"""training/progress.py: windows of a run's episodes.jsonl summarised."""

import json
import math
import pathlib
import subprocess
import sys

import pytest

from training import progress

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _episode(ret, initial_lr, final_lr, default_start=False, task="t"):
    return {"task": task, "family": "quadratic", "long_run": False, "steps": 100, "return": ret,
            "default_start": default_start, "initial_hyperparameters": {"learning_rate": initial_lr},
            "hyperparameters": {"learning_rate": final_lr}}


def test_summary_counts_episodes_near_the_given_lr_and_default_starts():
    episodes = [_episode(0.5, 1e-2, 4e-2, default_start=True),   # near 1e-2, lr x4
                _episode(-1.0, 2e-3, 2e-3),                      # near 1e-3 only
                _episode(0.1, 5e-3, 2.5e-3)]                     # near both, lr /2
    summary = progress.summarise(episodes, near_lr=1e-2)
    assert summary["episodes_near_default_lr"] == 2
    assert summary["mean_return_near_default_lr"] == pytest.approx(0.3)
    assert summary["episodes_default_start"] == 1
    assert summary["mean_return_default_start"] == pytest.approx(0.5)
    assert summary["mean_log2_lr_change"] == pytest.approx((2 + 0 - 1) / 3)
    assert summary["geometric_mean_speedup"] == pytest.approx(math.exp(-0.4 / 3))
    assert progress.summarise(episodes, near_lr=1e-3)["episodes_near_default_lr"] == 1


def test_returns_relative_to_their_task_and_kind_of_start():
    episodes = [_episode(1.0, 1e-2, 1e-2, task="easy"), _episode(2.0, 1e-2, 1e-2, task="easy"),
                _episode(-1.0, 1e-2, 1e-2, task="hard"), _episode(0.0, 1e-2, 1e-2, task="hard"),
                _episode(5.0, 1e-2, 1e-2, task="hard", default_start=True)]  # alone in its group
    relative, share, groups = progress.relative_to_task(episodes)
    assert groups == 3
    assert list(relative) == pytest.approx([-0.5, 0.5, -0.5, 0.5, 0.0])
    returns = [e["return"] for e in episodes]
    total = sum((r - sum(returns) / 5) ** 2 for r in returns)
    assert share == pytest.approx(1 - 1.0 / total)


def test_ppo_losses_are_averaged_over_spans_of_iterations(tmp_path):
    import tensorflow as tf

    with tf.summary.create_file_writer(str(tmp_path / "train")).as_default():
        for step in range(1, 7):
            tf.summary.scalar("losses/value_estimation_loss", float(step), step=step)
            tf.summary.scalar("losses/total", 99.0, step=step)  # not one of the reported losses
        tf.summary.scalar("losses/value_estimation_loss", 10.0, step=6)  # a resumed run redoes iteration 6
    losses = progress.ppo_losses(tmp_path, spans=2)
    assert losses == {"value_estimation_loss": [pytest.approx(2.0), pytest.approx((4 + 5 + 10) / 3)]}
    assert progress.ppo_losses(tmp_path / "elsewhere", spans=2) == {}


def _run(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "training.progress", "--root_dir", str(tmp_path), "--output",
                           str(tmp_path / "out" / "progress.json"), *args], capture_output=True, text=True, cwd=ROOT)


def test_script_writes_windows_and_refuses_bad_input(tmp_path):
    lines = [json.dumps(_episode(0.1 * i, 1e-2, 1e-2)) for i in range(6)]
    (tmp_path / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    done = _run(tmp_path, "--window", "3")
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "out" / "progress.json").read_text())
    assert [w["first_episode"] for w in result["windows"]] == [0, 3]
    assert result["windows"][1]["mean_return"] == pytest.approx(0.4)
    # One task: relative to it, the first window is below the run's mean by as much as the second is above.
    assert result["windows"][1]["mean_return_relative_to_task"] == pytest.approx(0.15)
    assert result["windows"][0]["mean_return_relative_to_task"] == pytest.approx(-0.15)
    assert (tmp_path / "out" / "progress.md").exists() and (tmp_path / "out" / "progress.png").exists()

    assert "the task's Adam baseline (0 = Adam's pace" in (tmp_path / "out" / "progress.md").read_text()

    # A run paid relative to the frame says so; a mix of the two is refused.
    frame = [json.loads(line) | {"reward_baseline": "frame"} for line in lines]
    (tmp_path / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in frame))
    assert _run(tmp_path, "--window", "3").returncode == 0
    text = (tmp_path / "out" / "progress.md").read_text()
    assert "the fixed frame's run from the same start, weights and batches (0 = what the frame does" in text and "beating the frame" in text
    (tmp_path / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in frame[:3]) + "\n".join(lines[3:]))
    mixed = _run(tmp_path, "--window", "3")
    assert mixed.returncode != 0 and "different baselines" in mixed.stderr

    too_few = _run(tmp_path, "--window", "10")
    assert too_few.returncode != 0 and "fewer than one window" in too_few.stderr
    bad_lr = _run(tmp_path, "--window", "3", "--near_lr", "-1")
    assert bad_lr.returncode != 0 and "--near_lr must be a positive" in bad_lr.stderr
