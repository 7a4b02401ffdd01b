"""research/compare_evaluations.py: evaluations side by side."""

import json

import compare_evaluations
import pytest


def _evaluation(policy, speedups, mean):
    results = [{"task": f"task{i}", "speedup_over_adam": s, "speedup_capped": s >= 3.0,
                "final_loss_ratio_to_best_cosine": 1.0 / s} for i, s in enumerate(speedups)]
    return {"policy": policy, "results": results, "geometric_mean_speedup": mean,
            "goal": {"geometric_mean_speedup_at_least_2": mean >= 2, "no_task_below_0.9": min(speedups) >= 0.9}}


def test_one_column_per_evaluation_with_goals(tmp_path):
    paths = []
    for policy, speedups, mean in (("a", [0.5, 3.0], 1.22), ("b", [2.0, 2.5], 2.24)):
        paths.append(tmp_path / f"{policy}.json")
        paths[-1].write_text(json.dumps(_evaluation(policy, speedups, mean)))
    out = tmp_path / "table.md"
    compare_evaluations.main([str(p) for p in paths] + ["--output", str(out)])
    lines = out.read_text().splitlines()
    assert "| task | a | b |" in lines
    assert "| task0 | 0.50x, 2.000 | 2.00x, 0.500 |" in lines
    assert "| task1 | >= 3.00x, 0.333 | 2.50x, 0.400 |" in lines
    assert "| **geometric mean** | **1.22x** | **2.24x** |" in lines
    assert "| goal: geometric_mean_speedup_at_least_2 | not met | met |" in lines


def test_different_tasks_and_unreadable_files_are_usage_errors(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_evaluation("a", [1.0, 1.0], 1.0)))
    b.write_text(json.dumps(_evaluation("b", [1.0], 1.0)))
    with pytest.raises(SystemExit):
        compare_evaluations.main([str(a), str(b), "--output", str(tmp_path / "t.md")])
    assert "other tasks" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare_evaluations.main([str(a), str(tmp_path / "missing.json"), "--output", str(tmp_path / "t.md")])
    assert "cannot read" in capsys.readouterr().err
