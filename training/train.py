"""Meta-trains the controller with PPO (docs/design.md).

    python -m training.train --root_dir runs/ppo [--gin_file training/configs/ppo.gin ...] [--gin_param X=Y ...]

Actor processes (training/collection.py) run whole episodes of the environment
(training/environment.py) on their own, each with the latest policy the
learner has published; each iteration takes the next finished episodes, trains
the PPO agent on them (training/agent.py), publishes the new policy and writes
a checkpoint, so a killed run resumes from its last finished iteration when
started again with the same --root_dir. Actors keep collecting while the
learner trains. TensorBoard summaries
go to ROOT/train (`tensorboard --logdir ROOT`); every finished episode is also
a JSON line in ROOT/episodes.jsonl. Export the policy with
`python -m training.export --root_dir ROOT --name NAME`; with
`export_interval` set, the run also exports itself every that many
iterations to ROOT/policies/iteration_NNNNN (checkpoints are pruned, these
snapshots are kept, so a good policy can still be chosen after training
went on: training/validate.py compares them).

    python -m training.train --root_dir runs/finetune --init_policy default

starts a new run from an exported policy (its actor, value network and
observation statistics; PPO's optimizer starts afresh) instead of from random
weights: to fine-tune a shipped controller on a changed task distribution.
A run that already has a checkpoint resumes from it and ignores --init_policy.
"""

import argparse
import json
import os
import pathlib
import shutil
import sys
import time


import gin
import numpy as np
import tensorflow as tf
from tf_agents.utils import common

from keras_lopt import actions
from training import collection, environment, policy_io, tasks

DEFAULT_GIN_FILE = pathlib.Path(__file__).resolve().parent / "configs" / "ppo.gin"
EPISODES_FILE = "episodes.jsonl"
TF_AGENTS_POLICY_DIR = "tf_agents_policy"  # where an exported policy keeps its PolicySaver export
# Episodes are laid two to a row for the PPO update: the LSTM runs over rows one time step after another, so
# short rows train faster, while pairs of episodes need little padding to equal length.
EPISODES_PER_ROW = 2


class SettingError(ValueError):
    """A train_eval setting (gin binding) that cannot work; found before any worker starts."""


def _format_seconds(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _progress_line(iteration, total, episodes, records, seconds_per_iteration, inner_share):
    filled = int(20 * iteration / max(total, 1))
    bar = "#" * filled + "-" * (20 - filled)
    returns = [r["return"] for r in records]
    mean_return = float(np.mean(returns)) if returns else float("nan")
    left = _format_seconds(seconds_per_iteration * (total - iteration))
    return (
        f"[{bar}] iteration {iteration}/{total} | episodes {episodes} | mean return {mean_return:+.3f} | "
        f"mean speedup {np.exp(mean_return):.2f}x | inner steps {100 * inner_share:.0f}% of wall time | "
        f"{seconds_per_iteration:.1f} s/iteration | time left {left}"
    )


def _write_summaries(records, critic, step):
    """Returns, speedups, timings, and hyperparameter trajectories from this iteration."""
    if records:
        returns = np.array([r["return"] for r in records])
        tf.summary.scalar("episodes/mean_return", returns.mean(), step=step)
        tf.summary.scalar("episodes/geometric_mean_speedup", np.exp(returns.mean()), step=step)
        tf.summary.histogram("episodes/log_speedup", returns, step=step)
        for family in tasks.FAMILIES:
            mine = [r["return"] for r in records if r["family"] == family]
            if mine:
                tf.summary.scalar(f"speedup_by_family/{family}", np.exp(np.mean(mine)), step=step)
        for name in records[0]["hyperparameters"]:
            ratios = [np.log(r["hyperparameters"][name] / r["initial_hyperparameters"][name]) for r in records]
            tf.summary.histogram(f"final_hyperparameters/log_{name}_over_initial", ratios, step=step)
    # Trajectories: mean log stored hyperparameter per episode progress decile.
    progress = critic[:, environment.CRITIC_NAMES.index("progress")]
    for i, name in enumerate(environment.CRITIC_NAMES):
        if name.startswith("log_") and name.endswith("_stored"):
            tf.summary.histogram(f"hyperparameter_trajectories/{name}", critic[:, i], step=step)
            late = critic[progress > 0.9, i]
            if late.size:
                tf.summary.scalar(f"hyperparameter_trajectories/{name}_at_end", late.mean(), step=step)


def _export_snapshot(agent, root, iteration, episodes, learning_rate_schedule):
    name = f"iteration_{iteration:05d}"
    target = root / "policies" / name
    if target.exists():
        return
    # Written beside and renamed, so a run killed mid-export leaves no partial snapshot.
    partial = target.with_name(f".{name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    policy_io.save_policy(agent, partial, name, policy_io.training_record(agent, iteration, episodes, root),
                       learning_rate_schedule=learning_rate_schedule)
    partial.rename(target)


def _check_settings(root_dir, distribution, init_policy, init_logit_scale, init_fresh_heads, learning_rate_schedule):
    """Raises `SettingError` for settings that cannot work, before any worker starts."""
    try:
        if init_policy:
            policy_io.tf_agents_policy_directory(init_policy)
            policy_io.check_logit_scale(init_logit_scale)
        elif init_logit_scale != 1 or init_fresh_heads:
            raise ValueError("init_logit_scale and init_fresh_heads change how init_policy is copied; "
                             "set init_policy too.")
        policy_io.check_fresh_heads(init_fresh_heads)
        actions.check_learning_rate_schedule(learning_rate_schedule)
        if init_policy:
            policy_io.check_policy_schedule(init_policy, learning_rate_schedule, init_fresh_heads)
        earlier = policy_io.run_learning_rate_schedule(root_dir)
        if earlier not in (None, learning_rate_schedule):
            raise ValueError(f"The run in {root_dir} trains with learning_rate_schedule={earlier!r}; resume it with "
                             f"that (got {learning_rate_schedule!r}), or start a new run in another directory.")
        return distribution or tasks.TaskDistribution()
    except ValueError as error:
        raise SettingError(str(error)) from None


def _forget_uncheckpointed(root, log):
    """Drops what a killed trainer recorded after its last checkpoint (episodes and progress rows of
    iterations that will run again), so the records match the checkpoint the run resumes from."""
    iterations, episodes = policy_io.checkpointed_progress(str(root))
    dropped = environment.keep_first_records(root / EPISODES_FILE, episodes)
    progress = root / "progress.jsonl"
    if progress.exists():
        rows = [line for line in progress.read_text().splitlines(keepends=True) if line.endswith("\n")]
        kept = [row for row in rows if json.loads(row)["iteration"] <= iterations]
        if kept != rows:
            progress.write_text("".join(kept))
    if dropped:
        log(f"Dropped {dropped} episode records written after the checkpoint of iteration {iterations}.")


def _start_actors(root, distribution, num_parallel_environments, seed, lookahead, max_policy_lag, **settings):
    """The actor processes (started before the agent builds any TensorFlow state) and the run's start
    record; each (re)start draws new task orders."""
    starts_path = root / "starts.log"
    start_index = len(starts_path.read_text().splitlines()) if starts_path.exists() else 0
    with open(starts_path, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid={os.getpid()}\n")

    def make_environment(index):
        return environment.LHOPTEnvironment(
            seed=[seed, start_index, index], distribution=distribution, returns_path=str(root / EPISODES_FILE),
            worker=(index, num_parallel_environments), **settings)

    started = time.perf_counter()
    actors = collection.Actors(make_environment, num_parallel_environments, policy_io.time_step_and_action_specs(),
                               lookahead=lookahead, max_policy_lag=max_policy_lag)
    # training.export reads the schedule from here: a controller must follow the one it was trained with.
    startup = {"start": start_index, "learning_rate_schedule": settings["learning_rate_schedule"],
               "environment_start_seconds": time.perf_counter() - started}  # includes compiling the pool
    with open(root / "startup.jsonl", "a") as f:
        f.write(json.dumps(startup) + "\n")
    return actors


def _start_agent(root, init_policy, init_logit_scale, init_fresh_heads, log):
    agent, checkpointer, iteration, episode_count = policy_io.create_agent_for_root(str(root))
    if init_policy and checkpointer.checkpoint_exists:
        log(f"Resuming from the checkpoint in {root / 'train'}; init_policy={init_policy!r} is not used.")
    elif init_policy:
        policy_io.warm_start(agent, init_policy, init_logit_scale, init_fresh_heads)
        log(f"Starting from the policy {init_policy!r}" + (
            f", its logits scaled by {init_logit_scale}" if init_logit_scale != 1 else "") + (
            f", heads {', '.join(init_fresh_heads)} fresh" if init_fresh_heads else "") + ".")
    return agent, checkpointer, iteration, episode_count


def _iteration_record(step, records, dropped, elapsed, collect_seconds, train_seconds, num_parallel_environments):
    """What progress.jsonl keeps of an iteration: its wall time, how long the learner waited for episodes
    and trained, and the worker time its episodes took (summed over them)."""
    def total(key):
        return sum(r[key] for r in records)

    return {
        "iteration": step, "episodes": len(records), "seconds": elapsed,
        "collect_seconds": collect_seconds, "agent_train_seconds": train_seconds,
        "environment_steps": sum(r["control_steps"] for r in records),
        "episode_seconds": total("seconds"), "inner_seconds": total("inner_seconds"),
        "compile_seconds": total("compile_seconds"), "eval_seconds": total("eval_seconds"),
        "baseline_seconds": total("baseline_seconds"), "frame_seconds": total("frame_seconds"),
        "policy_seconds": total("policy_seconds"),
        "dropped_episodes": dropped,
        "mean_policy_lag": float(np.mean([step - 1 - r["policy_version"] for r in records])),
        "mean_return": float(np.mean([r["return"] for r in records])) if records else None,
        "num_environments": num_parallel_environments,
    }


def _inner_share(record):
    """The share of worker time an iteration spent inside the inner XLA steps."""
    return record["inner_seconds"] / (record["seconds"] * record["num_environments"])


def _write_loss_summaries(loss, record, step):
    tf.summary.scalar("losses/total", loss.loss, step=step)
    for name, value in loss.extra._asdict().items():
        if tf.size(value) == 1:
            tf.summary.scalar(f"losses/{name}", tf.reshape(value, []), step=step)
    inner_share = _inner_share(record)
    tf.summary.scalar("time/seconds_per_iteration", record["seconds"], step=step)
    tf.summary.scalar("time/inner_step_share", inner_share, step=step)
    tf.summary.scalar("time/episodes_per_hour", record["episodes"] * 3600 / record["seconds"], step=step)


@gin.configurable
def train_eval(
    root_dir,
    distribution=None,
    num_iterations=1000,
    num_parallel_environments=2,
    collect_episodes_per_iteration=8,
    checkpoint_interval=1,
    seed=0,
    baseline_dir=None,
    max_cached_runs=24,
    warm_up=True,
    export_interval=0,
    init_policy=None,
    init_logit_scale=1.0,
    task_return_baseline=0,
    learning_rate_schedule="constant",
    init_fresh_heads=(),
    reward_baseline="adam",
    max_policy_lag=1,
    log=print,
):
    """Runs (or resumes) meta-training in `root_dir`; returns the last progress line.

    `distribution`: the tasks to train on, a `tasks.TaskDistribution` (gin: `TaskDistribution.*`).
    `init_policy`: an exported policy a new run starts from, its logits scaled by
    `init_logit_scale`, its `init_fresh_heads` not copied (`policy_io.warm_start`).
    `task_return_baseline`: shape rewards by the mean return of each task's latest this many
    episodes (`environment.LHOPTEnvironment`); 0 leaves them unshaped.
    `learning_rate_schedule`: "constant", or "cosine" for a policy whose learning-rate head moves
    the rate relative to a cosine decay over the run (`keras_lopt.actions.scheduled_amounts`);
    its exported controllers follow the same schedule.
    `reward_baseline`: "adam" (the log speedup over Adam at its defaults) or "frame" (over the fixed
    frame's run from the same start: what the learned moves add; `environment.LHOPTEnvironment`).
    `max_policy_lag`: an episode whose last step was acted by a policy more than this many updates
    old is dropped (`collection.Actors`: actors collect while the learner trains and take every
    new policy at their next step, so their episodes are at most about one update behind).
    Every iteration collects episodes, trains PPO on them, then runs its periodic work: summaries,
    a checkpoint every `checkpoint_interval` iterations, a policy snapshot every `export_interval`
    (ROOT/policies/iteration_NNNNN), a progress line and record.
    """
    distribution = _check_settings(root_dir, distribution, init_policy, init_logit_scale, init_fresh_heads,
                                   learning_rate_schedule)
    root = pathlib.Path(root_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    _forget_uncheckpointed(root, log)
    actors = _start_actors(
        root, distribution, num_parallel_environments, seed, collect_episodes_per_iteration, max_policy_lag,
        baseline_dir=baseline_dir or str(root / "baselines"), max_cached_runs=max_cached_runs, warm_up=warm_up,
        task_return_baseline=task_return_baseline, learning_rate_schedule=learning_rate_schedule,
        reward_baseline=reward_baseline)
    agent, checkpointer, iteration, episode_count = _start_agent(root, init_policy, init_logit_scale,
                                                                 init_fresh_heads, log)
    # Episodes differ in length, so every iteration's batch has a new time dimension:
    # reduce_retracing traces once for any length instead of once per length (~50 s each).
    train = common.function(agent.train, autograph=False, reduce_retracing=True)
    rows = max(1, collect_episodes_per_iteration // EPISODES_PER_ROW)

    def periodic_work(step, records, loss, critic, record):
        _write_loss_summaries(loss, record, step)
        _write_summaries(records, critic, step)
        if step % checkpoint_interval == 0 or step == num_iterations:
            checkpointer.save(global_step=step)
        if export_interval and step % export_interval == 0:
            _export_snapshot(agent, root, step, int(episode_count.numpy()), learning_rate_schedule)
        line = _progress_line(step, num_iterations, int(episode_count.numpy()), records, record["seconds"],
                              _inner_share(record))
        log(line)
        with open(root / "progress.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        return line

    line = ""
    try:
        with tf.summary.create_file_writer(str(root / "train")).as_default():
            # The policy version is the number of PPO updates behind it.
            actors.publish(collection.policy_weights(agent.collect_policy), int(iteration.numpy()))
            mark = time.perf_counter()
            while int(iteration.numpy()) < num_iterations:
                episodes, dropped = actors.episodes(collect_episodes_per_iteration, int(iteration.numpy()))
                collected = time.perf_counter()
                experience = collection.pack([trajectory for trajectory, _ in episodes], rows)
                loss = train(experience=tf.nest.map_structure(tf.convert_to_tensor, experience))
                if not np.isfinite(loss.loss.numpy()):
                    raise RuntimeError(
                        f"PPO loss is not finite at iteration {int(iteration.numpy()) + 1}; stopping without "
                        f"checkpointing it (the last checkpoint in {root / 'train'} is kept)."
                    )
                iteration.assign_add(1)
                step = int(iteration.numpy())
                actors.publish(collection.policy_weights(agent.collect_policy), step)
                trained = time.perf_counter()
                records = [record for _, record in episodes]
                with open(root / EPISODES_FILE, "a") as f:
                    f.writelines(json.dumps(record) + "\n" for record in records)
                episode_count.assign_add(len(records))
                now = time.perf_counter()
                record = _iteration_record(step, records, dropped, now - mark, collected - mark, trained - collected,
                                           num_parallel_environments)
                mark = now
                critic = np.concatenate([trajectory.observation["critic"] for trajectory, _ in episodes])
                line = periodic_work(step, records, loss, critic, record)
    finally:
        actors.close()
    return line


def parse_gin(gin_files, gin_params):
    files = list(gin_files) if gin_files else [str(DEFAULT_GIN_FILE)]
    gin.parse_config_files_and_bindings(files, gin_params or [], finalize_config=False)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.splitlines()[0])
    parser.add_argument("--root_dir", required=True, help="where checkpoints, summaries and episode logs go")
    parser.add_argument("--gin_file", action="append", default=[],
                        help=f"gin config file(s) (default {DEFAULT_GIN_FILE.relative_to(DEFAULT_GIN_FILE.parents[2])})")
    parser.add_argument("--gin_param", action="append", default=[], help="gin binding, e.g. train_eval.num_iterations=10")
    parser.add_argument("--init_policy", help='start a new run from an exported policy ("default" or a directory)')
    args = parser.parse_args(argv)
    if args.init_policy:  # a gin binding, so exported policies record it in their metadata; train_eval checks it
        args.gin_param.append(f"train_eval.init_policy = {args.init_policy!r}")
    from tf_agents.system import system_multiprocessing

    system_multiprocessing.enable_interactive_mode()
    parse_gin(args.gin_file, args.gin_param)
    try:
        train_eval(args.root_dir, log=lambda line: print(line, flush=True))
    except SettingError as error:
        parser.error(str(error))


if __name__ == "__main__":
    sys.exit(main())
