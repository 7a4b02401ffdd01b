"""Can the controller tell a mis-set learning rate from its features? How much its input shows the absolute rate.

The controller sees every hyperparameter relative to its start, so the `*_log_relative` inputs are 0 at the first
control step whatever the start. The absolute rate can still show through `log_step_over_parameter`
(log(lr_p ||u||) - log||p||, averaged over tensors): for a weight matrix the trust ratio makes it about log(lr),
for a vector (no trust ratio) it also depends on the vector's scale. This script runs training-distribution tasks
with LHOPT's controller in "external" mode and no actions (so the rate stays at its start), from initial learning
rates `--factors` times the default and initial weights times `--weight_scales`, and records that input after each
of the first `--control_steps` control steps. It reports, per task and weight scale, the slope of the early mean
against log(factor) (1 would be log(lr) itself), whether the early means are in the starts' order, and how much a
weight rescaling moves the input compared with a 10x change of the rate.

    python research/learning_rate_signal.py --tasks 12 --output research/results/learning_rate_signal.json  # and .md
"""

import argparse
import json
import multiprocessing
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras_lopt  # noqa: E402
from keras_lopt import features  # noqa: E402
from training import runner, tasks  # noqa: E402

FEATURE = "log_step_over_parameter"


def early_values(spec, task, factor, weight_scale, control_steps):
    """The feature after each of the first `control_steps` control steps, LHOPT held at its start."""
    hyperparameters = tasks.default_hyperparameters()
    hyperparameters["learning_rate"] *= factor
    optimizer = keras_lopt.LHOPT(**hyperparameters, policy="external", total_steps=spec.total_steps)
    run = runner.TaskRun(task, optimizer)
    for variable in run.model.trainable_variables:
        variable.assign(variable * weight_scale)
    index = features.FEATURE_NAMES.index(FEATURE)
    values = []
    run.run(chunks=min(control_steps, spec.total_steps // run.chunk_steps),
            on_chunk=lambda r: values.append(float(np.asarray(r.optimizer.observation)[index])))
    return values


def task_row(job):
    """One task's early values from every start and weight scale."""
    seed, max_steps, factors, weight_scales, control_steps = job
    spec = tasks.sample_task(seed, max_steps=max_steps)
    task = tasks.build_task(spec)
    values = {f"{f:g}": {f"{s:g}": early_values(spec, task, f, s, control_steps) for s in weight_scales}
              for f in factors}
    return {"seed": seed, "task": f"{spec.family} (seed {seed})", "description": spec.describe(), "values": values}


def early_mean(row, factor, scale):
    """A run's input averaged over its early control steps."""
    return np.mean(row["values"][f"{factor:g}"][f"{scale:g}"])


def summarise(rows, factors, weight_scales):
    """Slopes, order and weight-scale shifts over every (task, weight scale)."""
    log_factors = np.log(factors)
    slopes, ordered, scale_shifts, noise = [], [], [], []
    for row in rows:
        for scale in weight_scales:
            means = [early_mean(row, factor, scale) for factor in factors]
            slopes.append(float(np.polyfit(log_factors, means, 1)[0]))
            ordered.append(bool(np.all(np.diff(means) > 0)))
            noise.extend(float(np.std(row["values"][f"{factor:g}"][f"{scale:g}"])) for factor in factors)
        for factor in factors:
            means = [early_mean(row, factor, scale) for scale in weight_scales]
            scale_shifts.append(float(np.max(means) - np.min(means)))
    ten_x = float(np.log(10.0) * np.median(slopes))
    # One threshold for every task: how often a run from the higher of two neighbouring starts shows a higher
    # input than a run (any task, any weight scale) from the lower one (0.5: no better than chance, 1: always).
    early = {f: [early_mean(row, f, s) for row in rows for s in weight_scales] for f in factors}
    separability = {f"x{high:g} vs x{low:g}": float(np.mean([h > l for h in early[high] for l in early[low]]))
                    for low, high in zip(factors, factors[1:])}
    return {
        "slope_median": float(np.median(slopes)),
        "slope_quartiles": [float(q) for q in np.percentile(slopes, [25, 75])],
        "in_order": f"{sum(ordered)} of {len(ordered)}",
        "shift_for_10x_rate": ten_x,
        "weight_scale_shift_median": float(np.median(scale_shifts)),
        "within_run_std_median": float(np.median(noise)),
        "separability_across_tasks": separability,
    }


def markdown(rows, summary, factors, weight_scales, command):
    lines = [f"# How much the controller's `{FEATURE}` input shows the absolute learning rate", "",
             f"`{command}`", "",
             f"Mean of the input over the first control steps, LHOPT held at its start (no actions); columns are the "
             f"initial learning rate as a factor of the default, at weight scale(s) {', '.join(map(str, weight_scales))}.",
             "", "| task | weight scale | " + " | ".join(f"x{f:g}" for f in factors) + " |",
             "|---|---|" + "---|" * len(factors)]
    for row in rows:
        for scale in weight_scales:
            cells = [f"{early_mean(row, f, scale):.2f}" for f in factors]
            lines.append(f"| {row['task']} | {scale:g} | " + " | ".join(cells) + " |")
    lines += ["", f"- slope against log(factor): median {summary['slope_median']:.2f} (quartiles "
                  f"{summary['slope_quartiles'][0]:.2f} .. {summary['slope_quartiles'][1]:.2f}); log(lr) itself would be 1",
              f"- early means in the starts' order: {summary['in_order']}",
              f"- a 10x rate moves the input by about {summary['shift_for_10x_rate']:.2f}; rescaling the initial weights "
              f"(over {', '.join(map(str, weight_scales))}) moves it by {summary['weight_scale_shift_median']:.2f} (median)",
              f"- its spread over the early control steps of one run: {summary['within_run_std_median']:.2f} (median std)",
              "- across tasks, with one threshold: how often a run from the higher start shows the higher input "
              "(0.5 chance, 1 always): " + ", ".join(f"{pair} {value:.2f}"
                                                     for pair, value in summary["separability_across_tasks"].items())]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=12)
    parser.add_argument("--first_seed", type=int, default=1000, help="task seeds (default: outside the training pool)")
    parser.add_argument("--max_steps", type=int, default=500)
    parser.add_argument("--factors", type=float, nargs="+", default=[0.01, 0.1, 1.0, 10.0, 100.0])
    parser.add_argument("--weight_scales", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--control_steps", type=int, default=5, help="early control steps averaged")
    parser.add_argument("--output", required=True, help="JSON file; the markdown goes beside it")
    parser.add_argument("--report_only", action="store_true",
                        help="run nothing: summarise the rows already in --output again")
    args = parser.parse_args(argv)
    if len(args.factors) < 2 or any(not f > 0 for f in args.factors):
        parser.error(f"--factors needs at least two positive factors; got {args.factors}.")
    factors = sorted(args.factors)
    output = pathlib.Path(args.output)
    if args.report_only:
        saved = json.loads(output.read_text())
        by_factor = saved["rows"][0]["values"]
        factors = sorted(float(f) for f in by_factor)
        weight_scales = [float(s) for s in next(iter(by_factor.values()))]
        summary = summarise(saved["rows"], factors, weight_scales)
        output.write_text(json.dumps(saved | {"summary": summary}, indent=1))
        output.with_suffix(".md").write_text(markdown(saved["rows"], summary, factors, weight_scales,
                                                      saved["command"]))
        return
    jobs = [(seed, args.max_steps, factors, args.weight_scales, args.control_steps)
            for seed in range(args.first_seed, args.first_seed + args.tasks)]
    # One child process per task: TensorFlow keeps every compiled run for the life of a process.
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        rows = []
        for row in pool.imap(task_row, jobs):
            rows.append(row)
            print(row["description"], {f: [round(float(np.mean(v)), 2) for v in by_scale.values()]
                                       for f, by_scale in row["values"].items()}, flush=True)
    summary = summarise(rows, factors, args.weight_scales)
    command = "python research/learning_rate_signal.py " + " ".join(sys.argv[1:] if argv is None else argv)
    output.write_text(json.dumps({"command": command, "summary": summary, "rows": rows}, indent=1))
    output.with_suffix(".md").write_text(markdown(rows, summary, factors, args.weight_scales, command))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
