"""research/paired_selection.py: rule 5 of the paired campaign on known validation scores."""

import json

import numpy as np
import paired_selection as selection
import pytest


def _scores(values_by_factor, tasks=36):
    return {factor: [value] * tasks for factor, value in values_by_factor.items()}


def test_rule_5_ships_the_best_at_default_starts_only_if_it_also_repairs_misset_starts():
    frame = _scores({0.1: -1.0, 1.0: 0.4, 10.0: -0.8})
    noise = np.random.default_rng(0).normal(0, 0.05, 36)
    steady = {f: list(np.add(v, 0.3 + noise)) for f, v in frame.items()}  # +0.3 everywhere
    paired, best, passes = selection.select({"steady": steady}, frame)
    assert best == "steady" and passes
    assert paired["steady"][1.0][0] == pytest.approx(0.3 + noise.mean())
    low, high = paired["steady"][1.0][1]
    assert low < 0.3 + noise.mean() < high

    # Higher at default starts but only +0.1 from x10: it is the one rule 5 names, and it fails,
    # so nothing ships even though "steady" would pass on its own.
    narrow = {0.1: list(np.add(frame[0.1], 0.5)), 1.0: list(np.add(frame[1.0], 0.5 + noise)),
              10.0: list(np.add(frame[10.0], 0.1))}
    _, best, passes = selection.select({"steady": steady, "narrow": narrow}, frame)
    assert best == "narrow" and not passes

    # An interval at default starts that reaches 0 fails too, whatever the mis-set starts show.
    coin = {0.1: list(np.add(frame[0.1], 1.0)), 1.0: list(np.add(frame[1.0], [0.5, -0.5] * 18)),
            10.0: list(np.add(frame[10.0], 1.0))}
    _, best, passes = selection.select({"coin": coin}, frame)
    assert best == "coin" and not passes


def test_amended_rule_5_ships_the_best_at_default_starts_of_the_new_candidates_that_clear_every_threshold():
    frame = _scores({0.1: -1.0, 1.0: 0.4, 10.0: -0.8})
    noise = np.random.default_rng(0).normal(0, 0.05, 36)

    def candidate(default, misset):
        return {0.1: list(np.add(frame[0.1], misset)), 1.0: list(np.add(frame[1.0], default + noise)),
                10.0: list(np.add(frame[10.0], misset))}

    candidates = {
        "iteration_00050": candidate(0.6, 0.1),   # highest at defaults, fails from mis-set starts
        "iteration_00110": candidate(0.5, 0.5),   # clears every threshold but was seen before the amendment
        "iteration_00120": candidate(0.2, 0.3),   # clears every threshold
        "iteration_00130": candidate(0.3, 0.3),   # clears every threshold, higher at defaults
        "iteration_00140": candidate(0.4, 0.1),   # higher still at defaults, fails from mis-set starts
    }
    paired, best, passes = selection.select(candidates, frame)
    assert best == "iteration_00050" and not passes  # rule 5 as written
    assert selection.amended_choice(paired) == "iteration_00130"
    del candidates["iteration_00120"], candidates["iteration_00130"]
    assert selection.amended_choice(selection.select(candidates, frame)[0]) is None
    assert selection.iteration("iteration_00120") == 120 and selection.iteration("frame") is None


def test_reads_each_controllers_validation_files_and_writes_the_choice(tmp_path, monkeypatch):
    monkeypatch.chdir(selection.ROOT)
    work = tmp_path / "work"
    snapshot = tmp_path / "campaign" / "iteration_00050"
    (snapshot / "tf_agents_policy").mkdir(parents=True)
    offsets = {selection.FRAME: 0.0, "iteration_00050": 0.25}
    for label, offset in offsets.items():
        (work / "controllers" / label).mkdir(parents=True)  # already written: nothing is exported or run
        name = selection.relative(work / "controllers" / label)
        for set_name in selection.VALIDATION_SETS:
            rows = [{"task": f"{set_name} {i}", "scores": {
                name + selection.start_name(f, {}): offset + i * 0.01 for f in selection.START_FACTORS}}
                for i in range(4)]
            selection.validation_file(work, set_name, label).write_text(json.dumps({"results": rows}))
    output = tmp_path / "selection.json"
    selection.main(["--snapshots", str(snapshot), "--work_dir", str(work), "--output", str(output)])
    result = json.loads(output.read_text())
    assert result["tasks"] == 4 * len(selection.VALIDATION_SETS)
    assert result["chosen"] == "iteration_00050" and result["rule_5_amended"] is None  # before iteration 120
    assert result["paired_with_frame"]["iteration_00050"]["x10"]["mean"] == pytest.approx(0.25)
    assert "it ships" in output.with_suffix(".md").read_text()


def test_counts_the_tasks_where_the_frame_is_already_at_the_clip_or_the_floor():
    top, floor = selection.reward.MAX_LOG_SPEEDUP, -selection.reward.CLIP
    frame = {0.1: [floor, floor, 0.2, top], 1.0: [top, top, top, 0.0], 10.0: [0.5, 0.5, 0.5, 0.5]}
    assert selection.saturated(frame) == {0.1: (1, 2), 1.0: (3, 0), 10.0: (0, 0)}
