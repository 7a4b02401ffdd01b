"""benchmarks/validate_policies.py's table labels (its scoring runs are exercised by benchmarks, not here)."""

import validate_policies


def test_labels_are_the_shortest_path_suffixes_that_keep_policies_apart():
    names = ["controller off", "default", "/runs/ft3/policies/iteration_00040", "/runs/ft4/policies/iteration_00040",
             "/runs/ft4/policies/iteration_00020"]
    assert validate_policies.short_labels(names) == [
        "controller off", "default", "ft3/policies/iteration_00040", "ft4/policies/iteration_00040",
        "ft4/policies/iteration_00020"]
    assert validate_policies.short_labels(["default", "runs/a"]) == ["default", "a"]
