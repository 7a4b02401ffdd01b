"""Would candidates beat the frame from a high start if the learning-rate ceiling followed the frame's path?

LHOPT keeps the controller's learning rate at or below `max_learning_rate` (0.04), or where it already is if
higher. From a start above it (x10 of the default is 0.1) an upward move of the policy is clamped at the start
while the frame's cosine is already lowering the rate, so early in the run the controller runs hotter than the
frame (results/start_trajectories_x10_*.md). This asks what the candidates would score from such starts if, above
the cap, the ceiling were also the rate the schedule alone would give (start x cosine(progress)): never above the
frame's path. A research variant (`FrameCeilingLHOPT`), not the product; the validation tasks, starts and seeds are
the ones of paired_selection.py's files, so every score pairs with the frame's and the candidate's (the usual
ceiling) on the same task.

    KERAS_LOPT_BASELINE_DIR=research/campaigns/paired/validation/baselines \\
    python research/frame_ceiling.py --controllers iteration_00050 iteration_00060 \\
        --work_dir research/campaigns/paired/validation --lr_factor 10 [--processes 2]
    # writes research/results/frame_ceiling.json and .md
"""

import argparse
import json
import multiprocessing
import pathlib
import sys

import numpy as np
import tensorflow as tf

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras_lopt  # noqa: E402
from keras_lopt import actions  # noqa: E402
from research import paired_selection as selection  # noqa: E402
from training import baselines, combine_validation, tasks, validate  # noqa: E402

RESULTS = ROOT / "research" / "results" / "frame_ceiling.json"


class FrameCeilingLHOPT(keras_lopt.LHOPT):
    """LHOPT whose learning-rate ceiling above `max_learning_rate` is also the cosine frame's own path."""

    def moved_hyperparameters(self, stored, amounts):
        moved = actions.apply_amounts(stored, amounts)
        current = tf.cast(stored["learning_rate"], tf.float32)
        loop = self._control
        progress = tf.cast(loop.variables["update_count"] + 1, tf.float32) / tf.maximum(loop.total_steps, 1.0)
        frame = tf.convert_to_tensor(loop.start["learning_rate"]) * actions.cosine(progress)
        ceiling = tf.maximum(tf.constant(self.max_learning_rate, tf.float32), tf.minimum(current, frame))
        moved["learning_rate"] = tf.minimum(moved["learning_rate"], ceiling)
        return moved


def score_task(set_name, seed, policies, learning_rate):
    """{label: clipped log speedup over Adam} of each policy with the frame-following ceiling on one task."""
    sampling, _ = selection.validation_tasks(set_name)
    spec = tasks.sample_task(seed, **sampling)
    task = tasks.build_task(spec)
    baseline = baselines.BaselineCache().get(spec, task)
    return spec.describe(), {label: validate.score(spec, task, baseline, policy, {"learning_rate": learning_rate},
                                                   optimizer_class=FrameCeilingLHOPT)
                             for label, policy in policies.items()}


def _score_task_job(arguments):
    return score_task(*arguments)


def recorded_scores(work_dir, label, factor):
    """A controller's scores from its validation files (paired_selection.py), every set in order, by task."""
    path = work_dir / "controllers" / label
    rows = {}
    for set_name in selection.VALIDATION_SETS:
        data = json.loads(selection.validation_file(work_dir, set_name, label).read_text())
        for row in data["results"]:
            rows[row["task"]] = row["scores"][selection.relative(path) + selection.start_name(factor, {})]
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controllers", nargs="+", required=True, help="labels of controllers in WORK/controllers")
    parser.add_argument("--work_dir", required=True, help="paired_selection.py's work dir (controllers, files)")
    parser.add_argument("--lr_factor", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    work_dir = pathlib.Path(args.work_dir)
    policies = {label: str(work_dir / "controllers" / label) for label in args.controllers}
    learning_rate = tasks.default_hyperparameters()["learning_rate"] * args.lr_factor
    frame = recorded_scores(work_dir, selection.FRAME, args.lr_factor)
    usual = {label: recorded_scores(work_dir, label, args.lr_factor) for label in args.controllers}
    jobs = [(set_name, seed, policies, learning_rate)
            for set_name in selection.VALIDATION_SETS for seed in selection.validation_tasks(set_name)[1]]
    rows = []
    with multiprocessing.get_context("spawn").Pool(args.processes, maxtasksperchild=1) as pool:
        for task, scores in pool.imap(_score_task_job, jobs):
            rows.append({"task": task, "frame": frame[task], "usual_ceiling": {l: usual[l][task] for l in usual},
                         "frame_ceiling": scores})
            print(task[:40], {label: round(value, 2) for label, value in scores.items()}, flush=True)
    rng = np.random.default_rng(0)
    summary = {}
    for label in args.controllers:
        new = np.array([r["frame_ceiling"][label] for r in rows])
        old = np.array([r["usual_ceiling"][label] for r in rows])
        base = np.array([r["frame"] for r in rows])
        summary[label] = {name: dict(zip(("mean", "interval_95"), combine_validation.mean_and_interval(diff, rng)))
                          for name, diff in (("usual_ceiling_minus_frame", old - base),
                                             ("frame_ceiling_minus_frame", new - base),
                                             ("frame_ceiling_minus_usual_ceiling", new - old))}
    command = "python research/frame_ceiling.py " + " ".join(sys.argv[1:] if argv is None else argv)
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"command": command, "lr_factor": args.lr_factor, "summary": summary,
                                  "results": rows}, indent=1))

    def cell(entry):
        return f"{entry['mean']:+.3f} ({entry['interval_95'][0]:+.3f} .. {entry['interval_95'][1]:+.3f})"

    lines = [f"Generated by `{command}`.", "",
             f"From {args.lr_factor:g}x LHOPT's default learning rate, on the {len(rows)} validation tasks of "
             "paired_selection.py: paired differences of clipped log speedups over Adam, mean with a 95% bootstrap "
             "interval over tasks. Usual ceiling: LHOPT's (scores read from the validation files); frame ceiling: "
             "above max_learning_rate, never above the frame's cosine path either (run here).", "",
             "| controller | usual ceiling - frame | frame ceiling - frame | frame ceiling - usual ceiling |",
             "|---|---|---|---|"]
    columns = ("usual_ceiling_minus_frame", "frame_ceiling_minus_frame", "frame_ceiling_minus_usual_ceiling")
    lines += [f"| {label} | " + " | ".join(cell(s[k]) for k in columns) + " |" for label, s in summary.items()]
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
