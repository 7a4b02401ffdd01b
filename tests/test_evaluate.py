"""The evaluation harness: speedup arithmetic and a shrunken end-to-end run."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf

import keras_lopt
from keras_lopt import actions
from training import data, evaluate, tasks


def test_steps_to_reach_interpolates_and_reports_never():
    steps, losses = [0, 10, 20, 30], [4.0, 2.0, 1.0, 0.5]
    assert evaluate.measured_steps_to_reach(steps, losses, 2.0) == 10.0
    assert evaluate.measured_steps_to_reach(steps, losses, 1.5) == pytest.approx(15.0)
    assert evaluate.measured_steps_to_reach(steps, losses, 5.0) == 0.0
    assert evaluate.measured_steps_to_reach(steps, losses, 0.1) == math.inf
    assert evaluate.measured_steps_to_reach([0, 10, 20], [4.0, math.nan, 1.0], 2.0) == 20.0


def test_the_cached_controller_off_curve_follows_lhopt_defaults(monkeypatch):
    from keras_lopt import hyperparameters

    before = evaluate.no_controller_contender()
    assert before == evaluate.no_controller_contender()
    monkeypatch.setitem(hyperparameters.DEFAULTS, "epsilon", 1e-7)
    assert evaluate.no_controller_contender() != before


def test_speedup_is_adam_steps_over_budget_capped_at_the_horizon():
    steps = np.arange(0, 301, 10)
    losses = 1.0 / (1.0 + steps)  # Adam's curve, run to 3x a budget of 100
    assert evaluate.measured_speedup(steps, losses, 1.0 / 201, budget=100) == (pytest.approx(2.0), False)
    assert evaluate.measured_speedup(steps, losses, 1.0 / 51, budget=100) == (pytest.approx(0.5), False)
    assert evaluate.measured_speedup(steps, losses, 1e-6, budget=100) == (3.0, True)
    assert evaluate.measured_speedup(steps, losses, math.nan, budget=100) == (0.0, False)


def test_every_evaluation_task_is_held_out_of_training():
    specs = evaluate.EVALUATION_TASKS.values()
    assert len(specs) >= 8 and len({spec.family for spec in specs}) >= 4
    held_out = {spec.dataset for spec in specs}
    assert all(data.is_evaluation_only(dataset) for dataset in held_out)
    # Meta-training never draws them: a large pool of regular and long-run tasks, as the campaigns sample them.
    distribution = tasks.TaskDistribution(pool_size=240, long_run_pool_size=60)
    drawn = [distribution.sample(seed) for seed in distribution.seeds]
    assert {spec.family for spec in drawn} == set(tasks.FAMILIES)
    assert not {spec.dataset for spec in drawn} & held_out
    assert max(spec.total_steps for spec in drawn) <= evaluate.LONGEST_TRAINING_EPISODE
    longest = max(spec.total_steps for spec in specs)
    assert longest >= 10 * evaluate.LONGEST_TRAINING_EPISODE


def _noop_controller(path):
    def act(observation, state):
        batch = tf.shape(observation)[0]
        return tf.tile(tf.constant([actions.NOOP_ACTION], tf.int32), [batch, 1]), state

    keras_lopt.save_controller(path, act, state_size=0, name="noop")
    return path


def test_robustness_pairs_the_controller_with_its_frame_per_seed():
    def entry(speedup):
        return {"speedup": speedup, "speedup_capped": speedup == 3.0, "final_eval_loss": 1.0 / speedup}

    # One task, two seeds: at x0.1 the controller doubles its frame's speedup on both seeds.
    runs = [{"robustness": {"0.1": {"lhopt": entry(1.0), "frame": entry(0.5)}, "1": {"lhopt": entry(3.0),
                                                                                   "frame": entry(3.0)}}},
            {"robustness": {"0.1": {"lhopt": entry(0.4), "frame": entry(0.2)}, "1": {"lhopt": entry(2.0),
                                                                                   "frame": entry(2.5)}}}]
    summary = evaluate.summarise_robustness(runs)
    assert summary["0.1"]["ratios"] == [pytest.approx(2.0), pytest.approx(2.0)]
    assert summary["0.1"]["lhopt"]["speedup"] == pytest.approx(math.sqrt(0.4))
    assert summary["1"]["ratio"] == pytest.approx(math.sqrt(0.8)) and summary["1"]["lhopt"]["speedup_capped"]
    results = [{"task": "a", "robustness": summary}, {"task": "b", "robustness": summary}]
    means = evaluate.robustness_means(results)
    # Every draw of tasks and seeds gives ratio 2 at x0.1: the interval is [2, 2] and excludes 1.
    assert means["0.1"]["ratio"]["interval"] == (pytest.approx(2.0), pytest.approx(2.0))
    table = evaluate.robustness_table(results, means)
    assert "| a | 0.63x / 0.32x | >= 2.45x / >= 2.74x |" in table
    assert "**2.00x [2.00-2.00]**" in table
    # A diverged run (speedup 0) counts as the floor, not as minus infinity.
    assert evaluate.geometric_mean([0.0, 1.0]) == pytest.approx(math.sqrt(evaluate.SPEEDUP_FLOOR))


@pytest.mark.slow  # 6-9 minutes on 2 cores: five evaluate runs on two tasks
def test_shrunken_evaluation_writes_results_plots_and_readme_table(tmp_path, monkeypatch, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- evaluation:start -->\nold\n<!-- evaluation:end -->\noutro\n")
    monkeypatch.setattr(evaluate, "README", readme)
    policy = _noop_controller(tmp_path / "noop")
    out, cache = tmp_path / "results", tmp_path / "cache"
    evaluate.main(["--policy", str(policy), "--tasks", "diamonds_mlp", "tragedies_char_lm", "--scale", "0.02",
                   "--seeds", "1", "--output_dir", str(out), "--cache_dir", str(cache), "--update_readme",
                   "--robustness_factors", "0.1", "1"])
    summary = json.loads((out / "evaluation.json").read_text())
    assert [r["task"] for r in summary["results"]] == ["diamonds_mlp", "tragedies_char_lm"]
    for r in summary["results"]:
        assert r["budget"] == 40 or r["budget"] == 10
        assert len(r["curves"]["adam"]["steps"]) == 3 * len(r["curves"]["lhopt"]["steps"]) - 2
        assert (out / r["plot"]).stat().st_size > 1000
        assert len(r["lhopt_hyperparameters"]) == r["budget"] // 10
        # LHOPT is built as a user builds it: its cadence follows the budget.
        assert r["lhopt_control_every"] == max(1, r["budget"] // keras_lopt.control.AUTO_CONTROL_STEPS)
        # The best cosine run's own speedup over Adam, from the same curves.
        adam, cosine = r["curves"]["adam"], r["curves"][f"cosine_adam_lr{r['best_cosine_learning_rate']:g}"]
        assert (r["best_cosine_adam_speedup_over_adam"], r["best_cosine_adam_speedup_capped"]) == evaluate.measured_speedup(
            np.asarray(adam["steps"]), np.asarray(adam["losses"]), cosine["losses"][-1], r["budget"])
    # A no-op controller keeps LHOPT's defaults: the hyperparameters never move, and
    # the curve is the controller-off reference's.
    first = summary["results"][0]
    assert first["lhopt_hyperparameters"][0] == first["lhopt_hyperparameters"][-1]
    assert first["curves"]["lhopt"]["losses"] == pytest.approx(first["curves"]["lhopt_no_controller"]["losses"])
    assert first["speedup_over_adam"] == first["no_controller_speedup_over_adam"]
    # Its schedule is constant, so its frame is LHOPT at its start throughout: the controller-off run.
    assert first["learning_rate_schedule"] == "constant"
    assert first["curves"]["frame"]["losses"] == pytest.approx(first["curves"]["lhopt_no_controller"]["losses"])
    # Every contender has its numbers, and the peers' best learning rate is from their grid.
    assert {name for name, _ in evaluate.CONTENDER_COLUMNS} == set(first["contenders"])
    assert first["contenders"]["cosine_adamw"]["learning_rate"] in evaluate.COSINE_LEARNING_RATES
    assert first["contenders"]["muon"]["learning_rate"] is None
    lhopt = first["contenders"]["lhopt"]
    assert lhopt["speedup"] == first["speedup_over_adam"]
    assert lhopt["wall_clock_speedup"] == pytest.approx(
        lhopt["speedup"] * first["adam_step_seconds"] / lhopt["step_seconds"])
    means = summary["contender_geometric_means"]
    low, high = means["cosine_adam"]["speedup_interval"]
    assert low <= means["cosine_adam"]["speedup"] <= high
    # From a mis-set start the no-op controller is its frame (constant schedule) run after run: paired ratio 1.
    # At x1 the robustness entries are the main runs'.
    robust = first["robustness"]
    assert robust["0.1"]["ratios"] == [pytest.approx(1.0)]
    assert robust["0.1"]["lhopt"]["final_eval_loss"] == pytest.approx(robust["0.1"]["frame"]["final_eval_loss"])
    assert robust["0.1"]["lhopt"]["final_eval_loss"] != pytest.approx(lhopt["final_eval_loss"])
    assert robust["1"]["lhopt"]["speedups"] == lhopt["speedups"]
    assert set(summary["robustness_geometric_means"]) == {"0.1", "1"}
    assert "From mis-set starts" in (out / "evaluation.md").read_text()
    # The reports are rewritten from evaluation.json alone, identically.
    written, block = (out / "evaluation.md").read_text(), readme.read_text()
    (out / "evaluation.md").unlink()
    readme.write_text("intro\n<!-- evaluation:start -->\nold\n<!-- evaluation:end -->\noutro\n")
    evaluate.main(["--report_only", "--output_dir", str(out), "--update_readme"])
    assert (out / "evaluation.md").read_text() == written and readme.read_text() == block
    # Adam, the three-rate grids of cosine Adam, cosine AdamW and linear-to-zero Adam, schedule-free AdamW,
    # Muon, the controller-off run and the frame (from the default start and from x0.1) are cached per task ...
    assert len(list(cache.glob("*.json"))) == 2 * 15
    # ... so evaluating again runs only LHOPT with the controller on the cached seed, and
    # everything (14 references, LHOPT) on a second seed (here in this process, to count the runs; the first
    # evaluation ran each task in a child process).
    calls = []
    real_curve = evaluate.run_curve
    monkeypatch.setattr(evaluate, "run_curve", lambda *a, **k: calls.append(1) or real_curve(*a, **k))
    evaluate.main(["--policy", str(policy), "--tasks", "diamonds_mlp", "--scale", "0.02", "--seeds", "2",
                   "--output_dir", str(tmp_path / "again"), "--cache_dir", str(cache),
                   "--robustness_factors", "--in_process"])
    again = json.loads((tmp_path / "again" / "evaluation.json").read_text())["results"][0]
    assert len(calls) == 1 + 15
    assert again["curves"]["adam"]["losses"] == first["curves"]["adam"]["losses"]  # the first seed's curves
    seeds = again["per_seed"]
    assert [s["seed"] for s in seeds] == [again["seeds"][0], again["seeds"][0] + 1]
    assert seeds[0]["speedup_over_adam"] == pytest.approx(first["speedup_over_adam"])
    assert again["speedup_over_adam"] == pytest.approx(math.sqrt(seeds[0]["speedup_over_adam"]
                                                                 * seeds[1]["speedup_over_adam"]))
    assert again["speedup_range"] == [min(s["speedup_over_adam"] for s in seeds),
                                      max(s["speedup_over_adam"] for s in seeds)]
    assert again["lhopt_final_eval_loss"] == pytest.approx(np.mean([s["lhopt_final_eval_loss"] for s in seeds]))
    best = f"{again['best_cosine_learning_rate']:g}"
    assert again["best_cosine_adam_speedup_over_adam"] == pytest.approx(math.sqrt(
        seeds[0]["cosine_adam_speedups_over_adam"][best][0] * seeds[1]["cosine_adam_speedups_over_adam"][best][0]))
    for s in seeds:  # every seed's LHOPT run is kept, not only the first's
        assert s["lhopt_curve"]["losses"][-1] == pytest.approx(s["lhopt_final_eval_loss"])
        assert len(s["lhopt_hyperparameters"]) == again["budget"] // 10
    # --start moves LHOPT's starting point; the cached controller-off reference stays at the defaults.
    calls.clear()
    evaluate.main(["--policy", str(policy), "--tasks", "diamonds_mlp", "--scale", "0.02", "--seeds", "1",
                   "--start", "epsilon=1e-7", "--output_dir", str(tmp_path / "start"), "--cache_dir", str(cache),
                   "--robustness_factors", "--in_process"])
    started = json.loads((tmp_path / "start" / "evaluation.json").read_text())
    assert started["start"] == {"epsilon": 1e-7} and len(calls) == 1
    assert started["results"][0]["lhopt_hyperparameters"][0]["epsilon"] == pytest.approx(1e-7)
    # --control_steps sets LHOPT's cadence (40 steps here: every 10 steps for 4 control steps).
    evaluate.main(["--policy", str(policy), "--tasks", "diamonds_mlp", "--scale", "0.02", "--seeds", "1",
                   "--control_steps", "4", "--output_dir", str(tmp_path / "cadence"), "--cache_dir", str(cache),
                   "--robustness_factors", "--in_process"])
    cadence = json.loads((tmp_path / "cadence" / "evaluation.json").read_text())
    assert cadence["control_steps"] == 4 and cadence["results"][0]["lhopt_control_every"] == 10
    with pytest.raises(SystemExit):
        evaluate.main(["--policy", str(policy), "--start", "epsilom=1e-7", "--output_dir", str(tmp_path / "bad")])
    assert "Did you mean 'epsilon'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["--policy", str(policy), "--control_steps", "0", "--output_dir", str(tmp_path / "bad")])
    assert "--control_steps must be at least 1" in capsys.readouterr().err
    text = readme.read_text()
    assert "old" not in text and "geometric mean" in text and text.startswith("intro") and text.endswith("outro\n")


def test_the_committed_reports_are_generated_from_the_committed_results(tmp_path, monkeypatch):
    """evaluation/evaluation.md and the README's table are what evaluation/evaluation.json gives, not typed."""
    committed = evaluate.RESULTS_DIR
    readme = tmp_path / "README.md"
    readme.write_text(evaluate.README.read_text())
    monkeypatch.setattr(evaluate, "README", readme)
    (tmp_path / "evaluation.json").write_text((committed / "evaluation.json").read_text())
    evaluate.main(["--report_only", "--output_dir", str(tmp_path), "--update_readme"])
    assert (tmp_path / "evaluation.md").read_text() == (committed / "evaluation.md").read_text()
    assert readme.read_text() == evaluate.README.read_text()


def test_report_only_needs_a_finished_evaluation(tmp_path, capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--report_only", "--output_dir", str(tmp_path)])
    assert "evaluation.json does not exist" in capsys.readouterr().err
