"""Meta-training throughput: episodes per hour and where worker time goes, read from runs' own logs.

`python -m training.train` appends one line per iteration to ROOT/progress.jsonl with wall times measured
in the learner and, per episode, in the workers. This script sums them per run:

- episodes per hour over the measured iterations;
- the share of worker time (wall time x workers) inside the inner XLA training steps, and in the
  rest: compiling new tasks, Adam baselines, eval losses, the fixed frame's runs, the policy's
  actions, and, where workers wait for the learner's PPO update (lockstep collection), that update.

Summarise an existing run:

    python benchmarks/meta_training_throughput.py --root_dir runs/ppo

or run meta-training side by side, one after the other on this machine with the same settings (the
training distribution's families and cadence on a smaller pool, the Adam reward so the frame cache
plays no part), for each code tree given, and compare:

    python benchmarks/meta_training_throughput.py --run new=. --run old=../old-checkout --iterations 10

Writes benchmarks/results/meta_training_throughput.json and .md.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results" / "meta_training_throughput.json"
# The campaign's configuration (training/configs/ppo.gin) on a pool small enough to compile in minutes.
RUN_SETTINGS = [
    "TaskDistribution.pool_size=12",
    "TaskDistribution.long_run_pool_size=3",
    "train_eval.max_cached_runs=15",
    "train_eval.reward_baseline='adam'",
    "train_eval.export_interval=0",
]


def _load(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarise(rows):
    workers = rows[0]["num_environments"]
    wall = sum(r["seconds"] for r in rows)
    capacity = wall * workers  # worker-seconds available
    parts = {
        "inner_steps": sum(r["inner_seconds"] for r in rows),
        "compiling_new_tasks": sum(r["compile_seconds"] for r in rows),
        "adam_baselines": sum(r["baseline_seconds"] for r in rows),
        "eval_losses": sum(r["eval_seconds"] for r in rows),
        "frame_runs": sum(r.get("frame_seconds", 0.0) for r in rows),
        "policy_actions": sum(r.get("policy_seconds", 0.0) for r in rows),
    }
    # Actors (rows with policy_seconds) collect while the learner trains; lockstep workers idle then.
    lockstep = not all("policy_seconds" in r for r in rows)
    parts["ppo_update_idle"] = sum(r["agent_train_seconds"] for r in rows) * workers if lockstep else 0.0
    parts["other_overhead"] = capacity - sum(parts.values())
    episodes = sum(r["episodes"] for r in rows)
    return {
        "collection": "lockstep" if lockstep else "actors",
        "iterations": [rows[0]["iteration"], rows[-1]["iteration"]],
        "episodes": episodes,
        "wall_hours": wall / 3600,
        "episodes_per_hour": episodes / (wall / 3600),
        "inner_steps_per_hour": parts["inner_steps"] / (wall / 3600),
        "workers": workers,
        "share_of_worker_time": {k: v / capacity for k, v in parts.items()},
    }


def run(code, root, iterations, baseline_dir):
    """Meta-trains with the code tree `code` into `root` for `iterations` iterations."""
    settings = RUN_SETTINGS + [f"train_eval.num_iterations={iterations}", f"train_eval.baseline_dir={str(baseline_dir)!r}"]
    command = [sys.executable, "-m", "training.train", "--root_dir", str(root)]
    command += [arg for setting in settings for arg in ("--gin_param", setting)]
    subprocess.run(command, cwd=code, env={**os.environ, "PYTHONPATH": str(code)}, check=True)


SHARES = ("inner_steps", "compiling_new_tasks", "adam_baselines", "eval_losses", "frame_runs", "policy_actions",
          "ppo_update_idle", "other_overhead")


def table(result):
    lines = [
        "| run | collection | iterations | episodes | wall hours | episodes/hour | inner step hours/hour | "
        + " | ".join(SHARES) + " |",
        "|---" * (7 + len(SHARES)) + "|",
    ]
    for name, s in result["runs"].items():
        share = s["share_of_worker_time"]
        lines.append(
            f"| {name} | {s['collection']} | {s['iterations'][0]}-{s['iterations'][1]} | {s['episodes']} | "
            f"{s['wall_hours']:.2f} | {s['episodes_per_hour']:.0f} | {s['inner_steps_per_hour'] / 3600:.2f} | "
            + " | ".join(f"{100 * share[k]:.0f}%" for k in SHARES) + " |"
        )
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--root_dir", help="summarise this run's progress.jsonl")
    source.add_argument("--run", action="append", metavar="NAME=CODE_DIR",
                        help="meta-train with the code tree CODE_DIR (repeat to compare)")
    parser.add_argument("--iterations", type=int, default=10, help="iterations per run (with --run)")
    parser.add_argument("--skip", type=int, default=2,
                        help="first iterations left out of --run summaries (tracing the PPO update)")
    parser.add_argument("--work_dir", help="where runs go (default: a temporary directory)")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    result = {"command": "python benchmarks/meta_training_throughput.py " + " ".join(sys.argv[1:]), "runs": {}}
    if args.root_dir:
        rows = _load(pathlib.Path(args.root_dir) / "progress.jsonl")
        if not rows:
            sys.exit(f"No iterations logged in {args.root_dir}/progress.jsonl yet.")
        result["runs"][pathlib.Path(args.root_dir).name] = summarise(rows)
    else:
        work = pathlib.Path(args.work_dir or tempfile.mkdtemp(prefix="throughput-"))
        result["settings"] = RUN_SETTINGS
        for name, code in (entry.split("=", 1) for entry in args.run):
            root = work / name
            if not (root / "progress.jsonl").exists():
                run(pathlib.Path(code).resolve(), root, args.iterations, work / "baselines")
            rows = _load(root / "progress.jsonl")[args.skip:]
            result["runs"][name] = summarise(rows)
        if len(result["runs"]) > 1:
            first, *others = result["runs"].values()
            result["episodes_per_hour_over_first"] = {
                name: s["episodes_per_hour"] / first["episodes_per_hour"] for name, s in result["runs"].items()}
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1))
    lines = [
        "# Meta-training throughput",
        "",
        f"Generated by `{result['command']}` from each run's progress.jsonl (times measured by the learner and",
        "the workers). Shares are of worker time (wall time x workers).",
        "",
        *table(result),
    ]
    if "episodes_per_hour_over_first" in result:
        lines += ["", "Episodes per hour relative to the first run: " + ", ".join(
            f"{name} {ratio:.2f}x" for name, ratio in result["episodes_per_hour_over_first"].items())]
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
