"""Rules 2-5 of research/notes/paired_campaign.md: the candidates validated paired with the frame, and the choice.

Each candidate snapshot is deployed with expected moves (`training.export --policy SNAPSHOT --moves expected`), the
frame is written as a controller (`training.evaluate.save_frame_controller`, the campaign's cosine), and every one
of them is validated on the three validation sets at LHOPT's defaults and from initial learning rates x0.1 and x10
(`training.validate`, one results file per set and controller, so adding a candidate later runs only its own). A
candidate's score on a task and start is its clipped log speedup minus the frame's from the same task and start;
per start, the mean over the 36 tasks with a 95% bootstrap interval over tasks. Rule 5 then names the candidate
with the highest mean at default starts and ships it only if that interval excludes 0 and its mean is at least
+0.2 from each of x0.1 and x10. As amended before iteration 120 was validated, among the candidates from
iteration 120 on, the one highest at default starts of those that clear every threshold ships.

Everything goes to --work_dir (controllers, validation files, the Adam baselines of the validation tasks), so a
run stopped between files resumes where it stopped:

    python research/paired_selection.py --snapshots research/campaigns/paired/policies/iteration_00050 ... \\
        --work_dir research/campaigns/paired/validation [--processes 2]
    # writes research/results/paired_selection.json and .md
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training import combine_validation, reward  # noqa: E402
from training.tasks import MIN_STEPS  # noqa: E402
from training.validate import start_name  # noqa: E402

RESULTS = ROOT / "research" / "results" / "paired_selection.json"
FRAME = "frame"
START_FACTORS = (0.1, 1.0, 10.0)
MISSET_MARGIN = 0.2  # rule 5: at least x1.22 over the frame from each mis-set start
# Rule 5 as amended before any of these was validated: candidates from this iteration on are eligible.
AMENDED_FROM_ITERATION = 120
# Rule 3: the validation sets (12 tasks of every family, 8 image MLPs, 16 runs of 600-2,000 steps).
VALIDATION_SETS = {
    "mixed": ["--tasks", "12"],
    "image_mlp": ["--families", "image_mlp", "--first_seed", "2000", "--tasks", "8"],
    "longer": ["--tasks", "16", "--min_steps", "600", "--max_steps", "2000", "--first_seed", "4000"],
}


def validation_tasks(set_name):
    """(sample_task keywords, seeds) of a validation set: the tasks `training.validate` draws from its arguments
    (its defaults: seeds from 1000, at most 500 steps, every family)."""
    options = dict(zip(VALIDATION_SETS[set_name][::2], VALIDATION_SETS[set_name][1::2]))
    sampling = {"min_steps": int(options.get("--min_steps", MIN_STEPS)),
                "max_steps": int(options.get("--max_steps", 500))}
    if "--families" in options:
        sampling["families"] = (options["--families"],)
    first = int(options.get("--first_seed", 1000))
    return sampling, range(first, first + int(options["--tasks"]))


def relative(path):
    """`path` as given from the repository root where possible: results files name no machine path."""
    path = pathlib.Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run(arguments, environment=None):
    print("+", " ".join(arguments), flush=True)
    subprocess.run([sys.executable, *arguments], check=True, cwd=ROOT, env={**os.environ, **(environment or {})})


def controllers(snapshots, work_dir):
    """{label: controller directory}: the frame and each snapshot with expected moves, written once."""
    directory = work_dir / "controllers"
    paths = {FRAME: directory / FRAME}
    if not paths[FRAME].exists():
        run(["-c", "import sys; from training.evaluate import save_frame_controller; "
                   "save_frame_controller(sys.argv[1], 'cosine')", str(paths[FRAME])])
    for snapshot in snapshots:
        name = pathlib.Path(snapshot).name
        paths[name] = directory / name
        if not paths[name].exists():
            run(["-m", "training.export", "--policy", str(snapshot), "--name", name, "--moves", "expected",
                 "--output_dir", str(directory)])
    return paths


def validation_file(work_dir, set_name, label):
    return work_dir / f"{set_name}-{label}.json"


def validate(paths, work_dir, processes):
    """Runs every missing (set, controller) validation file; the Adam baselines stay in the work dir."""
    environment = {"KERAS_LOPT_BASELINE_DIR": str(work_dir / "baselines")}
    for set_name, set_arguments in VALIDATION_SETS.items():
        for label, path in paths.items():
            output = validation_file(work_dir, set_name, label)
            if output.exists():
                continue
            run(["-m", "training.validate", "--policies", relative(path), "--lr_factors",
                 "--policy_lr_factors", *map(str, START_FACTORS), "--processes", str(processes),
                 "--output", str(output), *set_arguments], environment)


def scores(work_dir, label, path):
    """{start factor: [score per task, every set in order]} of one controller."""
    result = {factor: [] for factor in START_FACTORS}
    for set_name in VALIDATION_SETS:
        data = json.loads(validation_file(work_dir, set_name, label).read_text())
        for row in data["results"]:
            for factor in START_FACTORS:
                result[factor].append(row["scores"][relative(path) + start_name(factor, {})])
    return result


def select(candidate_scores, frame_scores, seed=0):
    """Per candidate and start, the paired mean and interval; and rule 5's choice (None: ship nothing)."""
    rng = np.random.default_rng(seed)
    paired = {label: {factor: combine_validation.mean_and_interval(
        np.subtract(values[factor], frame_scores[factor]), rng) for factor in START_FACTORS}
        for label, values in candidate_scores.items()}
    best = max(paired, key=lambda label: paired[label][1.0][0])
    return paired, best, clears_thresholds(paired[best])


def clears_thresholds(by_factor):
    """Rule 5's bar: the interval at default starts above 0, and at least +0.2 from each mis-set start."""
    return by_factor[1.0][1][0] > 0 and all(by_factor[f][0] >= MISSET_MARGIN for f in START_FACTORS if f != 1.0)


def iteration(label):
    """The iteration of a snapshot's label ("iteration_00120" -> 120), None for any other label."""
    prefix, _, number = label.partition("_")
    return int(number) if prefix == "iteration" and number.isdigit() else None


def amended_choice(paired):
    """Rule 5 as amended: of the candidates from AMENDED_FROM_ITERATION on that clear every threshold, the one
    highest at default starts (None if there is none)."""
    eligible = [label for label, by_factor in paired.items()
                if (iteration(label) or 0) >= AMENDED_FROM_ITERATION and clears_thresholds(by_factor)]
    return max(eligible, key=lambda label: paired[label][1.0][0], default=None)


def saturated(frame_scores):
    """Per start, how many tasks the frame already scores at the clip (no candidate can gain there) and at the
    floor (a candidate can only gain by repairing a failed run)."""
    return {factor: (int(np.sum(np.asarray(values) >= reward.MAX_LOG_SPEEDUP - 1e-6)),
                     int(np.sum(np.asarray(values) <= -reward.CLIP + 1e-6)))
            for factor, values in frame_scores.items()}


def markdown(paired, frame_scores, best, passes, amended, tasks, command):
    def cell(mean, interval):
        return f"{mean:+.3f} ({interval[0]:+.3f} .. {interval[1]:+.3f})"

    starts = [f"x{f:g}" for f in START_FACTORS]
    lines = [f"Generated by `{command}`.", "",
             f"Paired score: clipped log speedup over Adam minus the frame's from the same task and start, mean over "
             f"{tasks} validation tasks with a 95% bootstrap interval over tasks. Initial learning rate as a multiple "
             f"of LHOPT's default.", "",
             "| controller | " + " | ".join(starts) + " |", "|---|" + "---|" * len(starts),
             "| frame (its score over Adam) | " + " | ".join(f"{np.mean(frame_scores[f]):+.3f}" for f in START_FACTORS)
             + " |"]
    for label, by_factor in paired.items():
        lines.append(f"| {label} | " + " | ".join(cell(*by_factor[f]) for f in START_FACTORS) + " |")
    counts = saturated(frame_scores)
    lines += ["", f"Tasks where the frame's own score is at the clip (+{reward.MAX_LOG_SPEEDUP:.3f}: a candidate's "
              f"paired score there is at most 0) / at the floor (-{reward.CLIP:g}): "
              + ", ".join(f"x{f:g} {counts[f][0]} / {counts[f][1]}" for f in START_FACTORS) + f" of {tasks}."]
    mean, (low, high) = paired[best][1.0]
    misset = ", ".join(f"x{f:g} {paired[best][f][0]:+.3f}" for f in START_FACTORS if f != 1.0)
    verdict = "ships" if passes else "does not meet it; nothing ships"
    lines += ["", f"Rule 5: the highest mean at default starts is `{best}` ({mean:+.3f}, interval {low:+.3f} .. "
              f"{high:+.3f}; from mis-set starts {misset}; needed: interval above 0 and at least +{MISSET_MARGIN} "
              f"from each): it {verdict}."]
    lines += ["", f"Rule 5 as amended (candidates from iteration {AMENDED_FROM_ITERATION} on; of those that clear "
              f"every threshold, the highest at default starts): "
              + (f"`{amended}` ships." if amended else "none clears them; nothing ships.")]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", nargs="+", required=True, help="the candidates (rule 1: paired_candidates.py)")
    parser.add_argument("--work_dir", required=True, help="controllers, validation files and baselines go here")
    parser.add_argument("--processes", type=int, default=2, help="validation tasks run in parallel")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    for snapshot in args.snapshots:
        if not (pathlib.Path(snapshot) / "tf_agents_policy").is_dir():
            parser.error(f"{snapshot} is not a snapshot the run exported (no tf_agents_policy/ in it).")
    if len({pathlib.Path(s).name for s in args.snapshots}) != len(args.snapshots):
        parser.error("two --snapshots share a folder name; their controllers would overwrite each other.")
    work_dir = pathlib.Path(args.work_dir)
    paths = controllers(args.snapshots, work_dir)
    validate(paths, work_dir, args.processes)
    frame_scores = scores(work_dir, FRAME, paths[FRAME])
    candidate_scores = {label: scores(work_dir, label, path) for label, path in paths.items() if label != FRAME}
    paired, best, passes = select(candidate_scores, frame_scores)
    amended = amended_choice(paired)
    command = "python research/paired_selection.py " + " ".join(sys.argv[1:] if argv is None else argv)
    tasks = len(frame_scores[1.0])
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({
        "command": command, "tasks": tasks, "chosen": amended or (best if passes else None),
        "highest_at_default_starts": best, "rule_5_as_written": best if passes else None, "rule_5_amended": amended,
        "frame_mean_log_speedup": {f"x{f:g}": float(np.mean(frame_scores[f])) for f in START_FACTORS},
        "frame_tasks_at_clip_and_floor": {f"x{f:g}": counts for f, counts in saturated(frame_scores).items()},
        "paired_with_frame": {label: {f"x{f:g}": {"mean": m, "interval_95": i} for f, (m, i) in by_factor.items()}
                              for label, by_factor in paired.items()}}, indent=1))
    text = markdown(paired, frame_scores, best, passes, amended, tasks, command)
    output.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
