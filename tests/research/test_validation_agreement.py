"""research/validation_agreement.py (rank agreement between validation and held-out results) and
training/combine_validation.py (one mean over several validation files)."""

import json
import sys

from training import combine_validation
import pytest
import validation_agreement as agreement


def test_ranks_share_ties_and_spearman_reads_order_only():
    assert agreement.ranks([3.0, 1.0, 2.0, 2.0]).tolist() == [4.0, 1.0, 2.5, 2.5]
    assert agreement.spearman([1, 2, 3, 4], [10, 20, 30, 1e9]) == pytest.approx(1.0)
    assert agreement.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def _validation(path, scores, tasks=("t1", "t2")):
    path.write_text(json.dumps({"command": "validate", "mean_log_speedup": scores,
                                "results": [{"task": t} for t in tasks]}))
    return str(path)


def _evaluation(path, policy, speedups, start=None):
    path.write_text(json.dumps({"policy": policy, "geometric_mean_speedup": speedups["a"] ** 0.5 * speedups["b"] ** 0.5,
                                "results": [{"task": t, "speedup_over_adam": s} for t, s in speedups.items()]}
                               | ({"start": start} if start else {})))
    return str(path)


def test_one_set_across_files_ranked_against_held_out(tmp_path, monkeypatch):
    # Two files of one task set ("saved_policies/default" is "default"); p2 leads on
    # validation and on held-out task a, trails on task b.
    validation = [_validation(tmp_path / "v1.json", {"controller off": -1.0, "saved_policies/default": 0.1, "p1": 0.0}),
                  _validation(tmp_path / "v2.json", {"controller off": -1.0, "default": 0.1, "p2": 0.5})]
    evaluations = [_evaluation(tmp_path / "e0.json", "default", {"a": 1.0, "b": 2.0}),
                   _evaluation(tmp_path / "e1.json", "p1", {"a": 0.5, "b": 3.0}),
                   _evaluation(tmp_path / "e2.json", "p2", {"a": 4.0, "b": 1.0})]
    output = tmp_path / "agreement.json"
    monkeypatch.setattr(sys, "argv", ["validation_agreement.py", "--validation", *validation,
                                      "--evaluations", *evaluations, "--output", str(output)])
    agreement.main()
    (row,) = json.loads(output.read_text())["sets"]
    assert sorted(row["policies"]) == ["default", "p1", "p2"]
    assert row["spearman_per_held_out_task"] == pytest.approx({"a": 1.0, "b": -1.0})
    assert row["validation_favourite"] == "p2" and row["its_held_out_speedup"] == pytest.approx(2.0)
    markdown = output.with_suffix(".md").read_text()
    assert "| `v1.json` | 2 | 3 |" in markdown
    assert "| p2 | 2.00x | 4.00x | 1.00x |" in markdown  # held-out per policy, best first
    assert markdown.index("| p2 | 2.00x") < markdown.index("| p1 |")


def test_two_policies_under_one_name_is_an_error(tmp_path):
    files = [_validation(tmp_path / "old.json", {"saved_policies/default": 0.3}),
             _validation(tmp_path / "new.json", {"default": 0.4})]
    with pytest.raises(ValueError, match="two policies under one name"):
        agreement.validation_sets(files)
    evaluations = [_evaluation(tmp_path / "one_seed.json", "default", {"a": 1.0, "b": 2.0}),
                   _evaluation(tmp_path / "three_seeds.json", "default", {"a": 1.0, "b": 1.0})]
    with pytest.raises(ValueError, match="Two held-out evaluations of default disagree"):
        agreement.held_out(evaluations)


def test_the_command_line_names_a_wrong_input_file_without_a_traceback(tmp_path, monkeypatch):
    combined = tmp_path / "combined.json"
    combined.write_text(json.dumps({"mean_log_speedup": {"default": 0.4}}))  # combine_validation.py's output
    evaluation = _evaluation(tmp_path / "evaluation.json", "default", {"a": 1.0, "b": 2.0})
    monkeypatch.setattr(sys, "argv", ["validation_agreement.py", "--validation", str(combined),
                                      "--evaluations", evaluation, "--output", str(tmp_path / "out.json")])
    with pytest.raises(SystemExit, match="combined.json is not a validate_policies.py results file"):
        agreement.main()


def test_combined_mean_weighs_every_task_once(tmp_path):
    def results(path, rows):  # rows: one {contender: score} per task
        means = {c: sum(r[c] for r in rows) / len(rows) for c in rows[0]}
        path.write_text(json.dumps({"mean_log_speedup": means, "results": [{"scores": r} for r in rows]}))
        return path

    one = results(tmp_path / "one.json", [{"a": 1.0, "b": 0.0, "only_here": 5.0}])
    three = results(tmp_path / "three.json", [{"a": 0.0, "b": 1.0}] * 3)
    means, per_file, tasks = combine_validation.combine([one, three])
    assert tasks == 4 and means == pytest.approx({"a": 0.25, "b": 0.75})
    assert per_file["a"] == {str(one): 1.0, str(three): 0.0}


def test_an_evaluation_from_another_start_is_named_as_validation_names_it(tmp_path):
    evaluations = [_evaluation(tmp_path / "e0.json", "default", {"a": 1.0, "b": 2.0}),
                   _evaluation(tmp_path / "e1.json", "default", {"a": 1.0, "b": 1.0}, start={"epsilon": 1e-8})]
    assert sorted(agreement.held_out(evaluations)) == ["default", "default, epsilon=1e-08"]
