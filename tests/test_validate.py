"""training/validate.py's table labels and start options (its scoring runs are exercised by benchmarks, not here)."""

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
