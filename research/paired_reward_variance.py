"""Does pairing with the frame make the return a cleaner signal? One policy, both returns, same episodes.

Runs one policy (the packaged default's TF-Agents policy, sampled as meta-training samples it) for a number of
episodes of the training distribution with the frame-paired reward, and reads each episode's two returns from the
episode record: over Adam at its defaults (the reward before pairing) and over the fixed frame's run from the same
start (the paired reward). Reports, for each, the variance over episodes and the share of it that the task and
start explain (what a policy cannot change, and what PPO's advantage has to see through).

    python research/paired_reward_variance.py --episodes 60 --output research/results/paired_reward_variance.json
"""

import argparse
import json
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import training  # noqa: E402,F401  (first: it selects Keras 2 for TF-Agents before TensorFlow loads)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from training import agent as agent_lib  # noqa: E402
from training import environment, policy_io, tasks, train  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "paired_reward_variance.json"


def explained_share(values, groups):
    """Share of the variance of `values` explained by group means (1 - within-group / total)."""
    values, groups = np.asarray(values, float), list(groups)
    total = np.var(values)
    if total == 0:
        return 0.0
    means = {g: np.mean([v for v, h in zip(values, groups) if h == g]) for g in set(groups)}
    within = np.mean([(v - means[g]) ** 2 for v, g in zip(values, groups)])
    return float(1.0 - within / total)


def summary(records):
    groups = [(r["task"], r["start"]) for r in records]
    out = {}
    for name, key in (("over_adam", "log_speedup"), ("over_frame", "log_speedup_over_frame")):
        values = [r[key] for r in records]
        out[name] = {"mean": float(np.mean(values)), "variance": float(np.var(values)),
                     "task_and_start_share": explained_share(values, groups),
                     "task_share": explained_share(values, [r["task"] for r in records])}
    return out


def collect_policy(policy):
    """The exported `policy` as meta-training samples it: PPO's collect policy, warm-started from it."""
    train.parse_gin([], [])
    agent = agent_lib.create_agent(*policy_io.time_step_and_action_specs(),
                                   train_step_counter=tf.Variable(0, dtype=tf.int64))
    policy_io.warm_start(agent, policy)
    return agent.collect_policy


def run(policy, episodes, distribution, baseline_dir, stats_path, seed):
    sampled = collect_policy(policy)
    action = tf.function(sampled.action)
    env = environment.LHOPTEnvironment(seed=seed, distribution=distribution, baseline_dir=baseline_dir,
                                       stats_path=stats_path, max_cached_runs=64, learning_rate_schedule="cosine",
                                       reward_baseline="frame")
    for episode in range(episodes):
        time_step, state = env.reset(), sampled.get_initial_state(1)
        while not time_step.is_last():
            batched = tf.nest.map_structure(lambda x: tf.expand_dims(tf.convert_to_tensor(x), 0), time_step)
            step = action(batched, state, seed=None)
            state = step.state
            time_step = env.step(tuple(np.int32(a.numpy()[0]) for a in tf.nest.flatten(step.action)))
        print(f"episode {episode + 1}/{episodes}", flush=True)
    return environment.read_episode_records(stats_path, 0)[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="default")
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--pool_size", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline_dir", default=None, help="Adam baselines and frame runs (default: a temp dir)")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    distribution = tasks.TaskDistribution(pool_size=args.pool_size, balance_families=True, min_control_steps=32,
                                          max_control_steps=80, default_start_probability=0.5, random_starts=4,
                                          max_weight_scale=3.0)
    with tempfile.TemporaryDirectory() as scratch:
        records = run(args.policy, args.episodes, distribution, args.baseline_dir or scratch,
                      pathlib.Path(scratch) / "episodes.jsonl", args.seed)
    result = {"command": "python research/paired_reward_variance.py " + " ".join(sys.argv[1:]),
              "policy": args.policy, "episodes": len(records), "distribution": vars(distribution) | {
                  "families": list(distribution.families)},
              "all": summary(records),
              "default_starts": summary([r for r in records if r["start"] == 0]),
              "mis_set_starts": summary([r for r in records if r["start"] != 0])}
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1))
    lines = ["# Return variance with and without pairing", "", f"Generated by `{result['command']}`: "
             f"{len(records)} episodes of the `{args.policy}` policy (sampled), cosine frame.", "",
             "| episodes | return over | mean | variance | share explained by task and start | by task |",
             "|---|---|---|---|---|---|"]
    for part in ("all", "default_starts", "mis_set_starts"):
        for name in ("over_adam", "over_frame"):
            row = result[part][name]
            lines.append(f"| {part} | {name.replace('over_', '')} | {row['mean']:+.3f} | {row['variance']:.4f} | "
                         f"{row['task_and_start_share']:.0%} | {row['task_share']:.0%} |")
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
