"""How fast is LHOPT's update on the held-out tasks under simple learning-rate schedules?

    python research/schedule_headroom.py [--evaluation evaluation/evaluation.json] \
        [--cache_dir DIR] [--output research/results/schedule_headroom.json]

For each held-out task of training.evaluate (its first seed) LHOPT runs with the controller off
(`policy=None`, its other hyperparameters at their defaults) under fixed learning-rate schedules:
constant, or cosine decay to zero over the budget, from each of a few starting rates; the rate
is set between the evaluation's chunks of steps. Each run's speedup over Adam at its defaults is
measured as training.evaluate measures it (against the same cached Adam curve).

What it answers: how much of the 2x goal a learned controller could reach by choosing among
such schedules per task (the best per task, in hindsight), and how much one schedule for every
task reaches (the best geometric mean), beside the controller's own first-seed speedups from an
evaluation.json. The constant 1e-2 schedule is LHOPT with its controller off, so its speedup
must equal that evaluation's controller-off first seed: a check written to the results.

Writes the results JSON and a markdown table beside it (same name, .md).
"""

import argparse
import json
import math
import pathlib
import sys


sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "schedule_headroom.json"
EVALUATION = pathlib.Path(__file__).resolve().parents[1] / "evaluation" / "evaluation.json"
START_RATES = (3e-3, 1e-2, 3e-2)
SHAPES = ("constant", "cosine")


def schedule_name(shape, rate):
    return f"{shape} {rate:g}"


def rate_at(shape, rate, step, budget):
    if shape == "constant":
        return rate
    return rate * 0.5 * (1.0 + math.cos(math.pi * step / budget))


def run_schedule(task, spec, shape, rate):
    """LHOPT (controller off) on `task` under one schedule; returns its eval-loss curve."""
    import keras_lopt
    from training import runner

    budget = spec.total_steps
    optimizer = keras_lopt.LHOPT(learning_rate=rate, policy=None)
    run = runner.TaskRun(task, optimizer, chunk_steps=spec.control_every)

    def next_rate(run):
        # Floor: LHOPT's learning rate must stay positive; cosine reaches zero only at the end.
        run.optimizer.set_hyperparameters(learning_rate=max(rate_at(shape, rate, run.steps_done, budget), 1e-12))

    return run.run(chunks=budget // spec.control_every, on_chunk=next_rate)


def headroom(evaluation, cache_dir, task_names):
    import functools

    import keras

    from training import evaluate, tasks

    by_task = {r["task"]: r for r in evaluation["results"]}
    rows = []
    for name in task_names:
        spec = evaluate.EVALUATION_TASKS[name]
        budget = spec.total_steps
        task = functools.cache(lambda spec=spec: tasks.build_task(spec, evaluation=True))
        adam = evaluate.cached_curve(cache_dir, spec, "adam", evaluate.ADAM_HORIZON * budget, keras.optimizers.Adam, task)
        adam_steps, adam_losses = adam.steps, adam.losses
        speedups, finals = {}, {}
        for shape in SHAPES:
            for rate in START_RATES:
                _, losses = run_schedule(task(), spec, shape, rate)
                key = schedule_name(shape, rate)
                finals[key] = float(losses[-1])
                speedups[key] = evaluate.measured_speedup(adam_steps, adam_losses, finals[key], budget)
                print(f"{name}: {key}: {speedups[key][0]:.2f}x (final eval loss {finals[key]:.4g})", flush=True)
        first_seed = by_task[name]["per_seed"][0]
        rows.append({
            "task": name,
            "seed": spec.seed,
            "budget": budget,
            "speedups": speedups,
            "final_eval_losses": finals,
            "controller_speedup": [first_seed["speedup_over_adam"], first_seed["speedup_capped"]],
            "evaluation_controller_off_speedup": [first_seed["no_controller_speedup_over_adam"],
                                                  first_seed["no_controller_speedup_capped"]],
        })
    names = list(rows[0]["speedups"])
    per_schedule = {key: evaluate.geometric_mean([r["speedups"][key][0] for r in rows]) for key in names}
    best_single = max(per_schedule, key=per_schedule.get)
    check = all(math.isclose(r["speedups"][schedule_name("constant", 1e-2)][0],
                             r["evaluation_controller_off_speedup"][0], rel_tol=1e-3, abs_tol=1e-3) for r in rows)
    return {
        "rows": rows,
        "geometric_mean_per_schedule": per_schedule,
        "best_single_schedule": best_single,
        "best_per_task_geometric_mean": evaluate.geometric_mean([max(v[0] for v in r["speedups"].values()) for r in rows]),
        "controller_geometric_mean": evaluate.geometric_mean([r["controller_speedup"][0] for r in rows]),
        "constant_1e-2_reproduces_controller_off": check,
    }


def markdown(result):
    from training.reward import shown_speedup

    names = list(result["geometric_mean_per_schedule"])
    lines = [
        "# LHOPT's update under fixed learning-rate schedules, held-out tasks (first seed)",
        "",
        f"Generated by `{result['command']}`; the controller's column is from `{result['evaluation']}`.",
        "",
        "Speedup over Adam at its defaults (training.evaluate's measure; capped at 3x). Controller off, other",
        "hyperparameters at LHOPT's defaults; the learning rate constant or cosine-decayed to zero from the rate",
        "shown.",
        "",
        "| task | " + " | ".join(names) + " | best per task | controller (same seed) |",
        "|---|" + "---|" * (len(names) + 2),
    ]
    for r in result["rows"]:
        best = max(r["speedups"], key=lambda k: r["speedups"][k][0])
        lines.append(f"| {r['task']} | " + " | ".join(shown_speedup(*r["speedups"][k]) for k in names)
                     + f" | {shown_speedup(*r['speedups'][best])} ({best}) | {shown_speedup(*r['controller_speedup'])} |")
    means = [f"{result['geometric_mean_per_schedule'][k]:.2f}x" for k in names]
    lines.append("| **geometric mean** | " + " | ".join(means)
                 + f" | **{result['best_per_task_geometric_mean']:.2f}x** "
                 f"| **{result['controller_geometric_mean']:.2f}x** |")
    lines += [
        "",
        f"Best single schedule for every task: {result['best_single_schedule']} "
        f"({result['geometric_mean_per_schedule'][result['best_single_schedule']]:.2f}x). Check: the constant 1e-2 "
        f"schedule {'reproduces' if result['constant_1e-2_reproduces_controller_off'] else 'DOES NOT reproduce'} "
        "the evaluation's controller-off speedups.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    from training import evaluate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluation", default=str(EVALUATION),
                        help="an evaluation.json of training.evaluate, for the controller's speedups")
    parser.add_argument("--tasks", nargs="+", default=list(evaluate.EVALUATION_TASKS),
                        choices=list(evaluate.EVALUATION_TASKS))
    parser.add_argument("--cache_dir", default=str(evaluate.default_curve_cache_dir()),
                        help="training.evaluate's cache of reference curves (Adam's is read or run there)")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    path = pathlib.Path(args.evaluation)
    if not path.is_file():
        parser.error(f"--evaluation {path}: no such file; run python -m training.evaluate first.")
    evaluation = json.loads(path.read_text())
    missing = [t for t in args.tasks if t not in {r["task"] for r in evaluation["results"]}]
    if missing:
        parser.error(f"--evaluation {path} has no results for {', '.join(missing)}.")
    result = headroom(evaluation, args.cache_dir, args.tasks)
    command = "python research/schedule_headroom.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"command": command.strip(), "evaluation": str(path)} | result
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1))
    output.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
