"""research/trajectory_summary.py: each held-out run's hyperparameters relative to their start."""

import json

import pytest
import trajectory_summary


def _evaluation(path, per_seed):
    path.write_text(json.dumps({"policy": "default", "start": {"epsilon": 1e-8},
                                "results": [{"task": "t", "per_seed": per_seed}]}))
    return str(path)


def _seed(seed, trajectory, speedup=1.5):
    return {"seed": seed, "speedup_over_adam": speedup, "speedup_capped": False, "lhopt_final_eval_loss": 0.5,
            "lhopt_hyperparameters": trajectory}


def test_every_seed_is_summarised_relative_to_its_start(tmp_path):
    trajectory = [{"learning_rate": 1e-2, "beta_1": 0.9}, {"learning_rate": 4e-2, "beta_1": 0.8},
                  {"learning_rate": 1e-3, "beta_1": 0.95}]
    files = [_evaluation(tmp_path / "e.json", [_seed(7, trajectory), _seed(8, trajectory[:1] * 2, speedup=0.5)])]
    output = tmp_path / "summary.json"
    trajectory_summary.main([*files, "--output", str(output)])
    (entry,) = json.loads(output.read_text())["files"]
    first, second = entry["rows"]
    assert (first["seed"], second["seed"]) == (7, 8)
    lr, beta_1 = first["hyperparameters"]["learning_rate"], first["hyperparameters"]["beta_1"]
    assert (lr["end"], lr["min"], lr["max"]) == pytest.approx((0.1, 0.1, 4.0))
    assert lr["argmax_fraction"] == pytest.approx(2 / 3)
    assert (beta_1["end"], beta_1["max"]) == pytest.approx((0.5, 2.0))  # 1 - beta_1: 0.1 -> 0.2 -> 0.05
    assert second["hyperparameters"]["learning_rate"]["end"] == 1.0
    markdown = output.with_suffix(".md").read_text()
    assert "start {'epsilon': 1e-08}" in markdown
    assert "| t | 7 | 1.50x | 0.1 (0.1-4) | 0.5 (0.5-2) |" in markdown


def test_an_evaluation_without_per_seed_trajectories_is_one_line(tmp_path, capsys):
    old = _evaluation(tmp_path / "old.json", [{"seed": 1, "speedup_over_adam": 1.0}])
    with pytest.raises(SystemExit):
        trajectory_summary.main([old, "--output", str(tmp_path / "s.json")])
    assert "has no per-seed trajectories" in capsys.readouterr().err
