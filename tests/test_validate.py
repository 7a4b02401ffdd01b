"""training/validate.py's table labels and start options (its scoring runs are exercised by benchmarks, not here),
and training/combine_validation.py's paired comparison."""

import pathlib

import pytest

from training import validate


def test_labels_are_the_shortest_path_suffixes_that_keep_policies_apart():
    names = ["controller off", "default", "/runs/a/policies/iteration_00040", "/runs/b/policies/iteration_00040",
             "/runs/b/policies/iteration_00020"]
    assert validate.short_labels(names) == [
        "controller off", "default", "a/policies/iteration_00040", "b/policies/iteration_00040",
        "b/policies/iteration_00020"]
    assert validate.short_labels(["default", "runs/a"]) == ["default", "a"]


def test_a_contender_name_says_how_its_start_differs_from_the_defaults():
    assert validate.start_name(1.0, {"epsilon": 1e-8, "beta_1": 0.8}) == ", epsilon=1e-08, beta_1=0.8"
    assert validate.start_name(10.0, {}) == ", lr x10"
    assert validate.start_name(1.0, {}) == ""


def test_paired_comparison_with_a_reference_has_a_bootstrap_interval(tmp_path):
    import json
    import subprocess
    import sys

    from training import combine_validation

    rows = [{"frame": f, "steady": f + 0.2, "noisy": f + d} for f, d in
            [(0.1, 0.5), (-1.0, -0.4), (0.3, 0.6), (0.0, -0.5), (2.0, 0.3), (0.5, -0.2)]]
    path = tmp_path / "v.json"
    means = {c: sum(r[c] for r in rows) / len(rows) for c in rows[0]}
    path.write_text(json.dumps({"mean_log_speedup": means, "results": [{"scores": r} for r in rows]}))
    against = combine_validation.paired([path], "frame")
    mean, (low, high) = against["steady"]
    assert mean == pytest.approx(0.2) and low == pytest.approx(0.2) and high == pytest.approx(0.2)
    mean, (low, high) = against["noisy"]
    assert mean == pytest.approx(0.05) and low < 0 < high
    assert combine_validation.paired([path], "frame") == against  # seeded: the same interval every time
    with pytest.raises(ValueError, match="not scored on every task"):
        combine_validation.paired([path], "other")

    output = tmp_path / "c.json"
    subprocess.run([sys.executable, "-m", "training.combine_validation", str(path), "--reference", "frame",
                    "--output", str(output)], check=True, capture_output=True, cwd=pathlib.Path(__file__).parents[1])
    table = output.with_suffix(".md").read_text()
    assert "| steady | +0.200 | +0.200 .. +0.200 | better |" in table and "not told apart" in table
    assert json.loads(output.read_text())["paired_with_reference"]["noisy"]["mean"] == pytest.approx(0.05)
