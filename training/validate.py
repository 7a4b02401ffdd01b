"""Controllers compared on unseen tasks of the training distribution: for choosing which one to ship.

Picking a checkpoint by its score on the held-out evaluation (training/evaluate.py)
would make that score optimistic, so candidates are compared here instead: tasks
drawn by the meta-training sampler with seeds outside the training pool (default
1000-1011; the pool uses 0-35), every run starting from LHOPT's default
hyperparameters and at LHOPT's default control cadence (about
keras_lopt.control.AUTO_CONTROL_STEPS control steps per run, or --control_steps) as a
user's would, scored by the meta-training reward (clipped
log speedup over the task's cached Adam baseline; 0 = Adam's pace, -3 the floor,
log(reward.MAX_EXTRAPOLATION) the most a final score can be, as Adam's curve is
extrapolated to at most that many times its budget). LHOPT with its controller off is included as a reference
at the multiples of its default learning rate given by --lr_factors (default 1; where an
untrained controller starts from, and what a fixed learning rate alone gives; none if given no value).
--policy_lr_factors starts each policy from multiples of the default learning rate
too (what a different default would give), and --policy_starts from other values of
any hyperparameter (NAME=VALUE, several joined by commas; "default" for LHOPT's
defaults).

    python -m training.validate --policies saved_policies/a saved_policies/b [--lr_factors 1 10] [--tasks 12]
        [--control_steps 30 100] [--policy_lr_factors 1 10] [--families image_mlp] [--processes 2]
        [--policy_starts default epsilon=1e-8 weight_decay=1e-3,beta_1=0.8]
    # long runs, as in meta-training's long-run pool:
    python -m training.validate --policies ... --families quadratic image_mlp tabular_mlp \
        --min_steps 4000 --max_steps 20000 --min_train_examples 4000 --tasks 8 --first_seed 3000 --processes 2
    # writes research/results/validate_policies.json and .md
"""

import argparse
import json
import multiprocessing
import pathlib
import sys


import numpy as np

import keras_lopt
from keras_lopt.control import control_every_for
from training import baselines, reward, runner, tasks

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "research" / "results" / "validate_policies.json"
CONTROLLER_OFF = "controller off"


def short_labels(names):
    """Each name cut to the fewest trailing path parts that keep the labels apart:
    snapshots of different runs share folder names (runs/a/policies/iteration_00040)."""
    for parts in range(1, max(len(pathlib.Path(n).parts) for n in names) + 1):
        labels = ["/".join(pathlib.Path(n).parts[-parts:]) for n in names]
        if len(set(labels)) == len(labels):
            return labels
    return list(names)


def controller_off_name(lr_factor):
    return CONTROLLER_OFF if lr_factor == 1.0 else f"{CONTROLLER_OFF}, lr x{lr_factor:g}"


def start_name(lr_factor, start):
    """How a contender's start differs from LHOPT's defaults, e.g. ", lr x10, epsilon=1e-08" ("" if not)."""
    return (f", lr x{lr_factor:g}" if lr_factor != 1.0 else "") + tasks.describe_start(start)


def score(spec, task, baseline, policy, start=None, control_steps=None, optimizer_class=keras_lopt.LHOPT,
          on_chunk=None):
    """Clipped log speedup over the Adam baseline of LHOPT (`policy`, starting from its defaults updated
    with `start`, acting about `control_steps` times in the run, or at its default cadence). `optimizer_class`
    (an LHOPT subclass) and `on_chunk` (`runner.TaskRun.run`'s) are for studies of variants."""
    hyperparameters = tasks.default_hyperparameters() | (start or {})
    control_every = None if control_steps is None else control_every_for(spec.total_steps, control_steps)
    optimizer = optimizer_class(**hyperparameters, policy=policy, total_steps=spec.total_steps,
                                control_every=control_every)
    steps, losses = runner.TaskRun(task, optimizer).run(on_chunk=on_chunk)
    return reward.fitted_log_speedup(baseline.fit, float(losses[-1]), int(steps[-1]))


def score_task(seed, min_steps, max_steps, contenders, families=tasks.FAMILIES, min_train_examples=0):
    """One validation task's row: every contender's score on it."""
    spec = tasks.sample_task(seed, families=families, min_steps=min_steps, max_steps=max_steps,
                             min_train_examples=min_train_examples)
    task = tasks.build_task(spec)
    baseline = baselines.BaselineCache().get(spec, task)
    scores = {name: score(spec, task, baseline, *contender) for name, contender in contenders.items()}
    return {"task": spec.describe(), "family": spec.family, "scores": scores}


def _score_task_job(arguments):
    return score_task(*arguments)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", nargs="*", default=[], help="controller directories to compare")
    parser.add_argument("--lr_factors", type=float, nargs="*", default=[1.0],
                        help="controller-off references at these multiples of LHOPT's default learning rate "
                             "(given with no value: none)")
    parser.add_argument("--policy_lr_factors", type=float, nargs="+", default=[1.0],
                        help="run each policy starting from these multiples of LHOPT's default learning rate")
    parser.add_argument("--policy_starts", nargs="+", default=["default"], metavar="START",
                        help='run each policy from these starts: "default" (LHOPT\'s defaults) or NAME=VALUE pairs '
                             'joined by commas, e.g. epsilon=1e-8,weight_decay=1e-3 (with each --policy_lr_factors)')
    parser.add_argument("--control_steps", type=int, nargs="+",
                        help="run each policy acting about this many times per run (default: LHOPT's default cadence)")
    parser.add_argument("--tasks", type=int, default=12)
    parser.add_argument("--first_seed", type=int, default=1000, help="task seeds (default: outside the training pool)")
    parser.add_argument("--min_steps", type=int, default=tasks.MIN_STEPS)
    parser.add_argument("--max_steps", type=int, default=500)
    parser.add_argument("--families", nargs="+", default=list(tasks.FAMILIES), choices=tasks.FAMILIES,
                        metavar="FAMILY", help="draw tasks from these families only (default: all)")
    parser.add_argument("--min_train_examples", type=int, default=0,
                        help="image and tabular datasets at least this large (long-run pool: "
                             f"{tasks.LONG_RUN_MIN_TRAIN_EXAMPLES}; default 0, any)")
    parser.add_argument("--processes", type=int, default=1,
                        help="tasks scored in parallel, one process each (default 1; each uses a core)")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    if args.processes < 1:
        parser.error(f"--processes must be at least 1; got {args.processes}.")
    if not 1 <= args.min_steps <= args.max_steps:
        parser.error(f"need 1 <= --min_steps <= --max_steps; got {args.min_steps} and {args.max_steps}.")
    from keras_lopt import controller

    for policy in args.policies:
        controller.resolve(policy)  # fail before any training run
    try:
        starts = [tasks.parse_start(text) for text in args.policy_starts]
    except ValueError as error:
        parser.error(f"--policy_starts: {error}")
    if any("learning_rate" in start for start in starts) and any(f != 1.0 for f in args.policy_lr_factors):
        parser.error("--policy_starts sets learning_rate; leave --policy_lr_factors at 1.")
    default_lr = tasks.default_hyperparameters()["learning_rate"]
    # name -> (policy, start, control steps)
    contenders = {controller_off_name(f): (None, {"learning_rate": default_lr * f}, None) for f in args.lr_factors}
    for policy in args.policies:
        for factor in args.policy_lr_factors:
            for start in starts:
                name = policy + start_name(factor, start)
                start_values = {"learning_rate": default_lr * factor} | start
                if args.control_steps:
                    contenders.update({f"{name} @{n}": (policy, start_values, n) for n in args.control_steps})
                else:
                    contenders[name] = (policy, start_values, None)

    rows = []
    # One fresh process per task: XLA's CPU JIT never frees its code mappings, and a
    # process that had compiled ~70 runs died with "LLVM ERROR: Unable to allocate
    # section memory" (vm.max_map_count here is 65530), even with the runs deleted.
    jobs = [(seed, args.min_steps, args.max_steps, contenders, tuple(args.families), args.min_train_examples)
            for seed in range(args.first_seed, args.first_seed + args.tasks)]
    with multiprocessing.get_context("spawn").Pool(args.processes, maxtasksperchild=1) as pool:
        for row in pool.imap(_score_task_job, jobs):  # in task order, whichever process ran it
            rows.append(row)
            print(row["family"], {name: round(value, 2) for name, value in row["scores"].items()}, flush=True)

    means = {name: float(np.mean([r["scores"][name] for r in rows])) for name in contenders}
    command = "python -m training.validate " + " ".join(sys.argv[1:])
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"command": command, "mean_log_speedup": means, "results": rows}, indent=1))
    names = list(contenders)
    columns = [n if contenders[n][0] is None else f"`{label}`" for n, label in zip(names, short_labels(names))]
    lines = [
        "# Controllers on unseen training-distribution tasks",
        "",
        f"Generated by `{command.strip()}`. Clipped log speedup over Adam at Keras' defaults (the meta-training",
        f"reward's final value; {reward.SCALE}); LHOPT starts from its default hyperparameters unless its name says.",
        "`@N`: the policy acting about N times per run (`control_every = total_steps // N`); without it, at LHOPT's",
        "default cadence.",
        "",
        "| family | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(names),
    ]
    for r in rows:
        lines.append(f"| {r['family']} | " + " | ".join(f"{r['scores'][n]:+.2f}" for n in names) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{means[n]:+.2f}**" for n in names) + " |")
    lines += ["", "Policies:", ""] + [f"- `{n}`" for n in args.policies]
    lines += ["", "Tasks:", ""] + [f"- {r['task']}" for r in rows]
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
