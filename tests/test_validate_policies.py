"""benchmarks/validate_policies.py's table labels and start options (its scoring runs are exercised by benchmarks, not here)."""

import pytest
import validate_policies


def test_labels_are_the_shortest_path_suffixes_that_keep_policies_apart():
    names = ["controller off", "default", "/runs/ft3/policies/iteration_00040", "/runs/ft4/policies/iteration_00040",
             "/runs/ft4/policies/iteration_00020"]
    assert validate_policies.short_labels(names) == [
        "controller off", "default", "ft3/policies/iteration_00040", "ft4/policies/iteration_00040",
        "ft4/policies/iteration_00020"]
    assert validate_policies.short_labels(["default", "runs/a"]) == ["default", "a"]


def test_policy_starts_parse_to_constructor_arguments_and_name_the_contender():
    assert validate_policies.parse_start("default") == {}
    start = validate_policies.parse_start("epsilon=1e-8,beta_1=0.8")
    assert start == {"epsilon": 1e-8, "beta_1": 0.8}
    assert validate_policies.start_name(1.0, start) == ", epsilon=1e-08, beta_1=0.8"
    assert validate_policies.start_name(10.0, {}) == ", lr x10"
    assert validate_policies.start_name(1.0, {}) == ""


@pytest.mark.parametrize("text, message", [
    ("epsilon", "'epsilon' is not NAME=VALUE"),
    ("epsilon=1e-8,epsilon=1e-7", "sets epsilon twice"),
    ("epsilom=1e-8", "Did you mean 'epsilon'"),
    ("beta_1=1.5", "beta_1 must be a float strictly between 0 and 1"),
])
def test_a_bad_policy_start_is_one_line_naming_it(text, message):
    with pytest.raises(ValueError, match=message):
        validate_policies.parse_start(text)
