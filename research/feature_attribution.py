"""Which of its inputs make the controller raise or cut the learning rate on a task?

    python research/feature_attribution.py [--policy default] [--tasks ...] \
        [--output research/results/feature_attribution.json]

Runs LHOPT(policy) once on each held-out evaluation task (training.evaluate's tasks, their
first seed, LHOPT's own cadence of about 50 control steps per run) and records the observation
the controller saw at every control step. Then it replays the controller on those
observations, open loop in the task (the recorded task-side features are fed back) but closed
loop in the controller's own features:
the hyperparameters relative to their start (raw and history CDFs) and the previous action
are recomputed from the replayed moves, so a replay that changes a move sees its effect on
those inputs as a real run would.

Two counterfactuals, each summarised by the replay's learning rate relative to its start
(log2, mean over the control steps and at the end):

- progress: the same run as if its budget were 10x longer (progress / 10: the first tenth
  of a longer run) or unknown (progress 0, total_steps_known 0);
- swaps: for a recipient task and a donor task, one group of task-side features is taken
  from the donor's recording (same control-step index) and the rest from the
  recipient's; against the recipient's own schedule and the donor's, this says how much
  of the difference between the two tasks' schedules that group explains. The
  evaluation tasks all run 50 control steps without a validation loss, so progress and
  validation-loss features are the same in every recording and are not swapped.

Two checks guard the method and are written to the results: the replay without a change
reproduces the recorded run's moves, and the replay with every task-side group swapped
reproduces the donor's moves.

Writes the results JSON and a markdown table beside it (same name, .md).
"""

import argparse
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "feature_attribution.json"


def feature_groups():
    """Task-side feature groups (by observation index) and the controller's own features."""
    from keras_lopt import features

    names = features.FEATURE_NAMES

    def where(predicate):
        return [i for i, name in enumerate(names) if predicate(name)]

    statistics = tuple(features.STATISTICS)
    own = where(lambda n: n.startswith("previous_") or "_log_relative" in n)
    groups = {
        "progress": where(lambda n: n in ("progress", "total_steps_known")),
        "train loss": where(lambda n: n.startswith("train_loss")),
        "validation loss": where(lambda n: n.startswith("val_loss")),
        "gradient and update statistics": where(lambda n: n.startswith(statistics)),
        "step and parameter norm ratios": where(lambda n: n.startswith(("step_norm", "parameter_norm"))),
    }
    covered = sorted(set(own).union(*groups.values()))
    if covered != list(range(len(names))):
        missing = [names[i] for i in range(len(names)) if i not in covered]
        raise RuntimeError(f"features in no group: {missing}")
    return groups, own


def record(spec, policy, evaluation=True):
    """Runs LHOPT(policy) from its defaults on the task `spec` (a `training.tasks.TaskSpec`) for its
    whole budget; returns the observations it saw and its learning rates, one per control step."""
    import keras_lopt
    from training import runner, tasks

    task = tasks.build_task(spec, evaluation=evaluation)
    optimizer = keras_lopt.LHOPT(policy=policy, total_steps=spec.total_steps)
    observations, learning_rates = [], []

    def on_chunk(run):
        observations.append(run.optimizer.observation)
        learning_rates.append(run.optimizer.hyperparameters["learning_rate"])

    run = runner.TaskRun(task, optimizer, chunk_steps=optimizer.control_every)
    steps, losses = run.run(chunks=spec.total_steps // optimizer.control_every, on_chunk=on_chunk)
    return {
        "control_every": optimizer.control_every,
        "observations": np.stack(observations),
        "learning_rates": np.asarray(learning_rates),
        "initial_learning_rate": tasks.default_hyperparameters()["learning_rate"],
        "final_eval_loss": float(losses[-1]),
        "optimizer": optimizer,
    }


def replay(controller, optimizer, observations, own):
    """The controller's learning rates on `observations`, its own features recomputed.

    `optimizer` supplies the starting hyperparameters and the rule that moves them
    (bounds and max_learning_rate), so the replay moves exactly as LHOPT does.
    Returns (learning rates after each control step, observations as replayed).
    """
    import tensorflow as tf

    from keras_lopt import actions, features

    relative_names = [f"{head.hyperparameter}_log_relative" for head in actions.ACTION_HEADS]
    raw_index = [features.FEATURE_NAMES.index(n) for n in relative_names]
    cdf_index = [features.FEATURE_NAMES.index(c) for n in relative_names for c in features.horizon_names(n)]
    previous_index = [i for i in own if features.FEATURE_NAMES[i].startswith("previous_")]
    initial = {name: tf.convert_to_tensor(v) for name, v in optimizer.control_start.items()}
    stored = dict(initial)
    history = features.empty_history(len(relative_names))
    previous = tf.constant(actions.NOOP_ACTION, tf.int32)
    state = tf.zeros([controller.state_size])
    learning_rates, replayed = [], []
    for observation in observations:
        observation = observation.copy()
        relative = tf.stack(list(features.relative_to_start(stored, initial).values()))
        cdf, history = features.history_cdf(relative, history)
        observation[raw_index] = relative.numpy()
        observation[cdf_index] = cdf.numpy().reshape(-1)
        observation[previous_index] = np.concatenate(
            [np.eye(len(head.choices))[int(a)] for head, a in zip(actions.ACTION_HEADS, previous.numpy())])
        action, amounts, state = controller.move(tf.constant(observation, tf.float32), state)
        stored = optimizer.moved_hyperparameters(stored, amounts)
        previous = action
        learning_rates.append(float(stored["learning_rate"]))
        replayed.append(observation)
    return np.asarray(learning_rates), np.stack(replayed)


SWAPPED_GROUPS = ("train loss", "gradient and update statistics", "step and parameter norm ratios")


def schedule(learning_rates, initial):
    """A learning-rate schedule in two numbers: log2(rate / start), mean over control steps and final."""
    relative = np.log2(np.asarray(learning_rates) / initial)
    return {"mean": float(relative.mean()), "final": float(relative[-1])}


def attribute(recordings, controller, groups, own):
    """The checks, the progress counterfactuals per task and the swaps per recipient/donor pair."""
    from keras_lopt import features

    progress = features.PROGRESS
    known = features.FEATURE_NAMES.index("total_steps_known")
    checks, progress_rows, pairs = [], [], []
    for name, r in recordings.items():
        rates, replayed = replay(controller, r["optimizer"], r["observations"], own)
        checks.append({
            "task": name,
            "replayed_moves_match_recording": bool(np.allclose(rates, r["learning_rates"], rtol=1e-5)),
            "max_abs_difference_of_recomputed_features": float(np.max(np.abs(
                replayed[:, own] - r["observations"][:, own]))),
        })
        longer, unknown = r["observations"].copy(), r["observations"].copy()
        longer[:, progress] /= 10
        unknown[:, [progress, known]] = 0.0
        initial = r["initial_learning_rate"]
        progress_rows.append({
            "task": name,
            "own": schedule(r["learning_rates"], initial),
            "budget_10x_longer": schedule(replay(controller, r["optimizer"], longer, own)[0], initial),
            "budget_unknown": schedule(replay(controller, r["optimizer"], unknown, own)[0], initial),
        })
    task_side = sorted(set().union(*groups.values()))
    for recipient, r in recordings.items():
        for donor, d in recordings.items():
            if donor == recipient:
                continue
            steps = min(len(r["observations"]), len(d["observations"]))
            mine, theirs = r["observations"][:steps], d["observations"][:steps]
            initial = r["initial_learning_rate"]

            def replay_swapped(indices):
                observations = mine.copy()
                observations[:, indices] = theirs[:, indices]
                return replay(controller, r["optimizer"], observations, own)[0]

            everything = replay_swapped(task_side)
            pairs.append({
                "recipient": recipient,
                "donor": donor,
                "control_steps": steps,
                "own": schedule(r["learning_rates"][:steps], initial),
                "donor_own": schedule(d["learning_rates"][:steps], initial),
                "all_task_side_swapped": schedule(everything, initial),
                "all_swapped_reproduces_donor": bool(np.allclose(everything, d["learning_rates"][:steps], rtol=1e-5)),
                "swapped": {group: schedule(replay_swapped(groups[group]), initial) for group in SWAPPED_GROUPS},
            })
    return checks, progress_rows, pairs


def _between(value, a, b, tolerance=0.05):
    return min(a, b) - tolerance <= value <= max(a, b) + tolerance


def _cell(s):
    return f"{s['mean']:+.1f} / {s['final']:+.1f}"


def markdown(result):
    lines = [
        "# Which inputs drive the controller's learning rate",
        "",
        f"Generated by `{result['command']}`.",
        "",
        "Each cell: the learning rate relative to its start, log2 (1 = a factor of 2), as *mean over the run's",
        "control steps / at the end*, from a replay of the controller on recorded observations with some inputs",
        "changed (see the script's docstring).",
        "",
        "Checks: " + "; ".join(
            f"{c['task']}: replay {'reproduces' if c['replayed_moves_match_recording'] else 'DOES NOT reproduce'} "
            f"the run (recomputed features within {c['max_abs_difference_of_recomputed_features']:.1g})"
            for c in result["checks"]) + ".",
        "",
        "Runs: " + "; ".join(f"{t}: acts every {r['control_every']} steps, final eval loss "
                              f"{r['final_eval_loss']:.4g}" for t, r in result["runs"].items()) + ".",
        "",
        "## Progress",
        "",
        "| task | own run | as the first tenth of a 10x longer budget | budget unknown |",
        "|---|---|---|---|",
    ]
    for row in result["progress"]:
        lines.append(f"| {row['task']} | {_cell(row['own'])} | {_cell(row['budget_10x_longer'])} | "
                     f"{_cell(row['budget_unknown'])} |")
    groups = list(result["pairs"][0]["swapped"])
    lines += [
        "",
        "## One group of features from another task",
        "",
        "| recipient | donor | own | donor's | all task-side from donor | " + " | ".join(groups) + " |",
        "|---|---|---|---|---|" + "---|" * len(groups),
    ]
    for p in result["pairs"]:
        everything = _cell(p["all_task_side_swapped"]) + ("" if p["all_swapped_reproduces_donor"] else " (!)")
        lines.append(f"| {p['recipient']} | {p['donor']} | {_cell(p['own'])} | {_cell(p['donor_own'])} | "
                     f"{everything} | " + " | ".join(_cell(p["swapped"][g]) for g in groups) + " |")
    outside = {part: sum(not _between(p["swapped"][g][part], p["own"][part], p["donor_own"][part])
                         for p in result["pairs"] for g in groups) for part in ("mean", "final")}
    lines += ["", f"Swaps of one group that move the schedule outside the range of the two tasks' own: "
                  f"{outside['mean']} of {len(result['pairs']) * len(groups)} by the mean, {outside['final']} by "
                  f"the final learning rate (0.05 tolerance)."]
    if not all(p["all_swapped_reproduces_donor"] for p in result["pairs"]):
        lines += ["", "(!): the replay with every task-side group swapped does not reproduce the donor's run."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    from training import evaluate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="default", help='"default" or the path of a controller')
    parser.add_argument("--tasks", nargs="+", default=list(evaluate.EVALUATION_TASKS),
                        choices=list(evaluate.EVALUATION_TASKS))
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    if len(args.tasks) < 2:
        parser.error("--tasks needs at least two tasks (a recipient and a donor).")
    from keras_lopt import controller as controller_module

    try:
        controller = controller_module.Controller.load(args.policy)
    except ValueError as error:
        parser.error(str(error))
    groups, own = feature_groups()
    recordings = {}
    for name in args.tasks:
        recordings[name] = record(evaluate.EVALUATION_TASKS[name], args.policy)
        print(f"{name}: recorded {len(recordings[name]['observations'])} control steps", flush=True)
    checks, progress, pairs = attribute(recordings, controller, groups, own)
    command = "python research/feature_attribution.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {
        "command": command.strip(),
        "policy": args.policy,
        "groups": {g: len(indices) for g, indices in groups.items()},
        "checks": checks,
        "runs": {name: {"control_every": r["control_every"], "final_eval_loss": r["final_eval_loss"],
                        "learning_rates": r["learning_rates"].tolist()} for name, r in recordings.items()},
        "progress": progress,
        "pairs": pairs,
    }
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1))
    output.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
