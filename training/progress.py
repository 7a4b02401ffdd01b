"""Is the policy learning? Meta-training returns over time, read from a run's episodes.jsonl.

Every episode's return is its final clipped log speedup over the task's Adam
baseline (0 = as fast as Adam at Keras' defaults, -3 the floor, log(reward.MAX_EXTRAPOLATION)
the most a final value can be, as Adam's curve is extrapolated to at most that many times its
budget), or in runs paid relative to the frame (`train_eval.reward_baseline = 'frame'`) over
the fixed frame's run from the same start (0 = what the frame does). For
consecutive windows of episodes this reports the mean return, the geometric-mean
speedup, how many episodes hit the floor or beat Adam, the mean return of the
episodes that started near LHOPT's default learning rate (within 3x of
`--near_lr`, by default the constructor's, where evaluation starts) and of those that started exactly at LHOPT's defaults
(runs with `default_start_probability` > 0), and how far the policy moved the learning rate
(mean log2 of final over initial lr). Task draws are noisy (an easy task scores high
whatever the policy), so each window also has its mean return relative to the task:
every episode's return minus the mean return of all the run's episodes of the same
task and kind of start; a trend in it is the policy's, not the draw's. The share of
return variance that the task and kind of start explain is reported too, and PPO's
losses (from the run's TensorBoard summaries in ROOT/train) averaged over as many
equal spans of iterations as there are windows. Per family:
first window against last, with long-run pool episodes apart (in runs that did not
record the pool: episodes of more than tasks.MAX_STEPS steps).

    python -m training.progress --root_dir runs/ppo [--window 500] [--near_lr 1e-2]
    # writes research/results/meta_training_progress.json, .md and .png
"""

import argparse
import collections
import json
import math
import pathlib
import sys

import numpy as np

from training import reward, tasks

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "research" / "results" / "meta_training_progress.json"


# What a return measures, by the run's reward baseline (episode records without one are from Adam-paid runs).
RETURN_OVER = {
    "adam": ("the task's Adam baseline", "Adam", reward.SCALE),
    "frame": ("the fixed frame's run from the same start, weights and batches", "the frame",
              f"0 = what the frame does, clipped to +-{reward.CLIP:g}; both runs measured in the Adam baseline's steps"),
}


def reward_baseline(episodes):
    kinds = {e.get("reward_baseline", "adam") for e in episodes}
    if len(kinds) > 1:
        sys.exit(f"The run's episodes were paid relative to different baselines ({sorted(kinds)}); summarise "
                 f"runs of one kind.")
    return kinds.pop()


def _mean(values):
    return float(np.mean(values)) if len(values) else None


def _signed(value):
    return "-" if value is None else f"{value:+.2f}"


def _group(episode):
    # Runs before episodes recorded their pool: a long run is one longer than any main-pool task.
    long_run = episode.get("long_run", episode["steps"] > tasks.MAX_STEPS)
    return f"{episode['family']} (long runs)" if long_run else episode["family"]


def _task(episode):
    return episode["task"], episode.get("default_start", False)


def relative_to_task(episodes):
    """Each episode's return minus the mean return of the episodes of its task and kind of start;
    the share of the returns' variance those means explain; and how many such groups there are."""
    returns = np.array([e["return"] for e in episodes])
    keys = [_task(e) for e in episodes]
    by_key = collections.defaultdict(list)
    for key, value in zip(keys, returns):
        by_key[key].append(value)
    relative = returns - np.array([np.mean(by_key[k]) for k in keys])
    total = np.sum((returns - returns.mean()) ** 2)
    return relative, float(1.0 - np.sum(relative ** 2) / total) if total > 0 else 0.0, len(by_key)


PPO_LOSSES = ("value_estimation_loss", "policy_gradient_loss", "entropy_regularization_loss")


def ppo_losses(root, spans):
    """Mean of each of PPO's `PPO_LOSSES` over `spans` equal spans of the run's iterations
    (read from ROOT/train's summaries; {} if it has none)."""
    import tensorflow as tf

    by_step = {name: {} for name in PPO_LOSSES}
    for events in sorted((root / "train").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                name = value.tag.removeprefix("losses/")
                if value.tag.startswith("losses/") and name in by_step:
                    by_step[name][event.step] = float(tf.make_ndarray(value.tensor))  # a restart's repeat overwrites
    return {name: [float(np.mean(part)) for part in np.array_split([steps[s] for s in sorted(steps)], spans)]
            for name, steps in by_step.items() if len(steps) >= spans}


def summarise(episodes, near_lr, relative=None):
    returns = np.array([e["return"] for e in episodes])
    initial_lr = np.array([e["initial_hyperparameters"]["learning_rate"] for e in episodes])
    final_lr = np.array([e["hyperparameters"]["learning_rate"] for e in episodes])
    near_default = np.abs(np.log(initial_lr / near_lr)) <= math.log(3.0)
    default_start = np.array([e.get("default_start", False) for e in episodes])
    return {
        "episodes": len(episodes),
        "mean_return": _mean(returns),
        "geometric_mean_speedup": float(np.exp(np.mean(returns))),
        "share_at_floor": float(np.mean(returns <= -2.999)),
        "share_beating_adam": float(np.mean(returns > 0)),
        "mean_return_near_default_lr": _mean(returns[near_default]),
        "episodes_near_default_lr": int(near_default.sum()),
        "mean_return_default_start": _mean(returns[default_start]),
        "episodes_default_start": int(default_start.sum()),
        "mean_log2_lr_change": _mean(np.log2(final_lr / initial_lr)),
        **({} if relative is None else {"mean_return_relative_to_task": _mean(relative)}),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root_dir", required=True)
    parser.add_argument("--window", type=int, default=500, help="episodes per window (default 500)")
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--near_lr", type=float, default=tasks.default_hyperparameters()["learning_rate"],
                        help="report episodes whose initial lr is within 3x of this (default: LHOPT's default lr)")
    args = parser.parse_args()
    if not args.near_lr > 0:
        parser.error(f"--near_lr must be a positive learning rate, got {args.near_lr}.")
    root = pathlib.Path(args.root_dir)
    path = root / "episodes.jsonl"
    episodes = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    if len(episodes) < args.window:
        sys.exit(f"{path} has {len(episodes)} episodes, fewer than one window of {args.window}.")
    starts = range(0, len(episodes) - args.window + 1, args.window)
    windows = [episodes[i:i + args.window] for i in starts]
    over, short, scale = RETURN_OVER[reward_baseline(episodes)]
    relative, task_share, groups = relative_to_task(episodes)
    families = sorted({_group(e) for e in episodes})
    result = {
        "command": "python -m training.progress " + " ".join(sys.argv[1:]),
        "run": str(root),  # as given: a results file names no machine path
        "near_lr": args.near_lr,
        "task_share_of_return_variance": task_share,
        "tasks": groups,
        "ppo_losses": ppo_losses(root, len(windows)),
        "windows": [{"first_episode": i, **summarise(w, args.near_lr, relative[i:i + args.window])}
                    for i, w in zip(starts, windows)],
        "families": {
            family: {which: summarise([e for e in w if _group(e) == family], args.near_lr) if any(
                _group(e) == family for e in w) else None for which, w in (("first", windows[0]),
                                                                              ("last", windows[-1]))}
            for family in families
        },
    }
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1))

    lines = [
        "# Meta-training progress",
        "",
        f"Generated by `{result['command']}` from the run's episodes.jsonl. Return = final clipped log speedup over",
        f"{over} ({scale}). Episodes",
        "start from random hyperparameters or, in runs with `default_start_probability`, from LHOPT's defaults (as users",
        "do). \"Relative to task\": return minus the run's mean return on that task and kind of start.",
        "",
        f"The task and kind of start explain {100 * task_share:.0f}% of the return variance ({result['tasks']} of them over "
        f"{len(episodes)} episodes; group means fitted to pure noise would explain about "
        f"{100 * result['tasks'] / len(episodes):.0f}%).",
        "",
        f"| episodes | mean return | relative to task | geometric-mean speedup | at floor | beating {short} | mean return, "
        f"initial lr within 3x of {args.near_lr:g} (n) | mean return, started at LHOPT's defaults (n) | "
        "mean log2(final lr / initial lr) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for w in result["windows"]:
        lines.append(
            f"| {w['first_episode']}-{w['first_episode'] + w['episodes'] - 1} | {w['mean_return']:+.2f} | "
            f"{w['mean_return_relative_to_task']:+.2f} | {w['geometric_mean_speedup']:.2f}x | {100 * w['share_at_floor']:.0f}% | "
            f"{100 * w['share_beating_adam']:.0f}% | {_signed(w['mean_return_near_default_lr'])} "
            f"({w['episodes_near_default_lr']}) | {_signed(w['mean_return_default_start'])} "
            f"({w['episodes_default_start']}) | {_signed(w['mean_log2_lr_change'])} |"
        )
    if result["ppo_losses"]:
        lines += ["", f"PPO's losses, mean over {len(windows)} equal spans of the run's iterations:", "",
                  "| loss | " + " | ".join(f"span {i + 1}" for i in range(len(windows))) + " |",
                  "|---|" + "---|" * len(windows)]
        lines += [f"| {name} | " + " | ".join(f"{v:+.4f}" for v in values) + " |"
                  for name, values in result["ppo_losses"].items()]
    lines += ["", "Per family, first window against last:", "",
              "| family | mean return (first) | mean return (last) | episodes (last) |", "|---|---|---|---|"]
    for family, both in result["families"].items():
        first, last = both["first"], both["last"]
        lines.append(
            f"| {family} | {first['mean_return']:+.2f} | " if first else f"| {family} | - | "
        )
        lines[-1] += f"{last['mean_return']:+.2f} | {last['episodes']} |" if last else "- | 0 |"
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    _plot(episodes, args.window, output.with_suffix(".png"), short)
    print("\n".join(lines))


def _plot(episodes, window, path, over):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    returns = np.array([e["return"] for e in episodes])
    smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(returns, ".", ms=1, alpha=0.3, label="episode return")
    axis.plot(np.arange(window - 1, len(returns)), smooth, lw=2, label=f"mean of last {window}")
    axis.axhline(0, color="gray", ls=":", lw=1)
    axis.set(xlabel="episode", ylabel=f"final log speedup over {over}", title="Meta-training returns")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


if __name__ == "__main__":
    main()
