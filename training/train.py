"""Meta-trains the controller with PPO (docs/design.md).

    python -m training.train --root_dir runs/ppo [--gin_file training/configs/ppo.gin ...] [--gin_param X=Y ...]

Each iteration collects whole episodes from parallel environment processes
(training/environment.py), trains the PPO agent on them (training/agent.py)
and writes a checkpoint, so a killed run resumes from its last finished
iteration when started again with the same --root_dir. TensorBoard summaries
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
import functools
import json
import os
import pathlib
import shutil
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gin  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tf_agents.drivers import dynamic_episode_driver  # noqa: E402
from tf_agents.environments import parallel_py_environment, tf_py_environment  # noqa: E402
from tf_agents.metrics import tf_metrics  # noqa: E402
from tf_agents.replay_buffers import tf_uniform_replay_buffer  # noqa: E402
from tf_agents.specs import tensor_spec  # noqa: E402
from tf_agents.trajectories import time_step as ts  # noqa: E402
from tf_agents.utils import common  # noqa: E402

from keras_lopt import actions, features  # noqa: E402
from training import agent as agent_lib  # noqa: E402
from training import environment, tasks  # noqa: E402

DEFAULT_GIN_FILE = pathlib.Path(__file__).resolve().parent / "configs" / "ppo.gin"
EPISODES_FILE = "episodes.jsonl"
TF_AGENTS_POLICY_DIR = "tf_agents_policy"  # where an exported policy keeps its PolicySaver export


def time_step_and_action_specs():
    """The environment's specs as tensor specs, known without starting one."""
    observation = tensor_spec.from_spec(environment.observation_spec())
    return ts.time_step_spec(observation), tensor_spec.from_spec(environment.action_spec())


def create_agent_for_root(root_dir):
    """The agent and its checkpointer, restored from ROOT/train if it has a checkpoint."""
    global_step = tf.compat.v1.train.get_or_create_global_step()
    time_step_spec, action_spec = time_step_and_action_specs()
    agent = agent_lib.create_agent(time_step_spec, action_spec, train_step_counter=global_step)
    iteration = tf.Variable(0, dtype=tf.int64, name="iteration")
    episodes = tf.Variable(0, dtype=tf.int64, name="episodes")
    checkpointer = common.Checkpointer(
        ckpt_dir=os.path.join(root_dir, "train"),
        max_to_keep=2,
        agent=agent,
        global_step=global_step,
        iteration=iteration,
        episodes=episodes,
    )
    # Optimizer slots are restored once training creates them; exporting never does.
    checkpointer.initialize_or_restore().expect_partial()
    return agent, checkpointer, iteration, episodes


def tf_agents_policy_directory(policy):
    """The PolicySaver export inside an exported policy ("default" or a directory from training.export)."""
    from keras_lopt import controller

    directory = controller.resolve(policy) / TF_AGENTS_POLICY_DIR
    if not directory.is_dir():
        raise ValueError(f"{directory.parent} has no {TF_AGENTS_POLICY_DIR}/ (the TF-Agents export of the "
                         f"policy) to start from; export it with training.export.")
    return directory


def check_policy_schedule(policy, learning_rate_schedule, fresh_heads):
    """A copied learning-rate head moves the rate relative to the schedule it was meta-trained in."""
    from keras_lopt import controller

    trained_in = controller.learning_rate_schedule_of(controller.read_metadata(policy))
    if trained_in != learning_rate_schedule and "learning_rate" not in fresh_heads:
        raise ValueError(
            f"The policy {policy!r} was meta-trained with learning_rate_schedule={trained_in!r}: its learning-rate "
            f"head moves the rate relative to that. Fine-tune it with --gin_param "
            f"\"train_eval.learning_rate_schedule='{trained_in}'\", or start that head fresh with --gin_param "
            f"\"train_eval.init_fresh_heads=('learning_rate',)\".")


def check_logit_scale(logit_scale):
    if not (isinstance(logit_scale, (int, float)) and 0 < logit_scale < float("inf")):
        raise ValueError(f"The logit scale must be a positive finite number (1 keeps the policy as exported); "
                         f"got {logit_scale!r}.")


class SettingError(ValueError):
    """A train_eval setting (gin binding) that cannot work; found before any worker starts."""


def warm_start(agent, policy, logit_scale=1.0, fresh_heads=()):
    """Sets `agent`'s policy variables (actor, value network, observation normaliser)
    to those of an exported policy ("default" or a directory from training.export).

    `logit_scale` multiplies every action head's logits (its output layer's
    kernel and bias), i.e. divides the policy's temperature: above 1 the
    sampled policy moves closer to its mode, which the deployed controller
    takes, while the mode itself stays the same.

    `fresh_heads` names action heads (hyperparameters) whose output layer is
    not copied but keeps `agent`'s fresh, no-op-biased initialisation: for a
    head whose meaning changed (e.g. the learning rate's, when the run follows
    a learning-rate schedule the policy was not trained with).
    """
    check_logit_scale(logit_scale)
    check_fresh_heads(fresh_heads)
    import tensorflow_probability  # noqa: F401  (registers the ops a PolicySaver export uses)

    directory = tf_agents_policy_directory(policy)
    source = list(tf.saved_model.load(str(directory)).model_variables)
    target = agent.policy.variables()
    if [tuple(v.shape) for v in source] != [tuple(v.shape) for v in target]:
        raise ValueError(
            f"The policy in {directory.parent} does not fit this agent ({len(source)} variables vs "
            f"{len(target)}, or different shapes): it was trained with other network sizes (create_networks) "
            f"or another feature, action or critic spec."
        )
    logits = [v for v in agent.actor_net.variables if f"/{agent_lib.LOGITS_LAYER}/" in v.name]
    # Two per head (kernel, bias), in the heads' order.
    fresh = {v.ref() for i, head in enumerate(actions.ACTION_HEADS) if head.hyperparameter in fresh_heads
             for v in logits[2 * i: 2 * i + 2]}
    for variable, value in zip(target, source):
        if variable.ref() not in fresh:
            variable.assign(value)
    for variable in logits:
        if variable.ref() not in fresh:
            variable.assign(variable * logit_scale)


def run_learning_rate_schedule(root_dir):
    """The learning-rate schedule the run in `root_dir` trains with (its startup
    records; "constant" for runs from before it was recorded), None for no run yet."""
    path = pathlib.Path(root_dir) / "startup.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return records[-1].get("learning_rate_schedule", "constant") if records else None


def check_fresh_heads(fresh_heads):
    names = [head.hyperparameter for head in actions.ACTION_HEADS]
    unknown = [name for name in fresh_heads if name not in names]
    if unknown or isinstance(fresh_heads, str):
        raise ValueError(f"fresh heads must be a tuple of action heads' hyperparameters ({', '.join(names)}); "
                         f"got {fresh_heads!r}.")


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


def _write_summaries(records, trajectories, step):
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
    critic = trajectories.observation["critic"].numpy().reshape(-1, environment.CRITIC_SIZE)
    progress = critic[:, len(features.CRITIC_FEATURE_NAMES) + environment.CRITIC_EXTRAS.index("progress")]
    for i, name in enumerate(features.CRITIC_FEATURE_NAMES):
        if name.startswith("log_") and name.endswith("_stored"):
            tf.summary.histogram(f"hyperparameter_trajectories/{name}", critic[:, i], step=step)
            late = critic[progress > 0.9, i]
            if late.size:
                tf.summary.scalar(f"hyperparameter_trajectories/{name}_at_end", late.mean(), step=step)


def _export_snapshot(agent, root, iteration, episodes, learning_rate_schedule):
    from training import export  # export imports this module

    name = f"iteration_{iteration:05d}"
    target = root / "policies" / name
    if target.exists():
        return
    # Written beside and renamed, so a run killed mid-export leaves no partial snapshot.
    partial = target.with_name(f".{name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    export.save_policy(agent, partial, name, export.training_record(agent, iteration, episodes, root),
                       learning_rate_schedule=learning_rate_schedule)
    partial.rename(target)


@gin.configurable
def train_eval(
    root_dir,
    num_iterations=1000,
    num_parallel_environments=2,
    collect_episodes_per_iteration=8,
    task_pool_size=64,
    first_task_seed=0,
    long_run_pool_size=0,
    families=tasks.FAMILIES,
    balance_families=False,
    min_steps=tasks.MIN_STEPS,
    max_steps=tasks.MAX_STEPS,
    min_control_steps=tasks.MIN_CONTROL_STEPS,
    max_control_steps=tasks.MAX_CONTROL_STEPS,
    checkpoint_interval=1,
    seed=0,
    baseline_dir=None,
    max_cached_runs=24,
    warm_up=True,
    default_start_probability=0.0,
    export_interval=0,
    init_policy=None,
    init_logit_scale=1.0,
    task_return_baseline=0,
    learning_rate_schedule="constant",
    init_fresh_heads=(),
    log=print,
):
    """Runs (or resumes) meta-training in `root_dir`; returns the last progress line.

    `init_policy`: an exported policy a new run starts from, its logits scaled by
    `init_logit_scale` (see `warm_start`).
    `long_run_pool_size`: long-run tasks added to the pool (`environment.LHOPTEnvironment`'s
    `long_task_seeds`), with the seeds after the `task_pool_size` ones.
    `task_return_baseline`: shape rewards by the mean return of each task's latest this many
    episodes (`environment.LHOPTEnvironment`); 0 leaves them unshaped.
    `learning_rate_schedule`: "constant", or "cosine" for a policy whose learning-rate head moves
    the rate relative to a cosine decay over the run (`keras_lopt.actions.scheduled_amounts`);
    its exported controllers follow the same schedule.
    `init_fresh_heads`: heads of `init_policy` not copied (`warm_start`'s `fresh_heads`).
    """
    try:  # wrong settings fail now, not in a worker process or after the workers' warm-up
        tasks.check_control_steps_range(min_control_steps, max_control_steps)
        if init_policy:
            tf_agents_policy_directory(init_policy)
            check_logit_scale(init_logit_scale)
        elif init_logit_scale != 1 or init_fresh_heads:
            raise ValueError("init_logit_scale and init_fresh_heads change how init_policy is copied; "
                             "set init_policy too.")
        check_fresh_heads(init_fresh_heads)
        actions.check_learning_rate_schedule(learning_rate_schedule)
        if init_policy:
            check_policy_schedule(init_policy, learning_rate_schedule, init_fresh_heads)
        earlier = run_learning_rate_schedule(root_dir)
        if earlier not in (None, learning_rate_schedule):
            raise ValueError(f"The run in {root_dir} trains with learning_rate_schedule={earlier!r}; resume it with "
                             f"that (got {learning_rate_schedule!r}), or start a new run in another directory.")
    except ValueError as error:
        raise SettingError(str(error)) from None
    root = pathlib.Path(root_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    episodes_path = root / EPISODES_FILE
    # Each (re)start draws new task orders: the seed mixes in how many starts came before.
    starts_path = root / "starts.log"
    start_index = len(starts_path.read_text().splitlines()) if starts_path.exists() else 0
    with open(starts_path, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid={os.getpid()}\n")
    baseline_dir = baseline_dir or str(root / "baselines")
    task_seeds = tuple(range(first_task_seed, first_task_seed + task_pool_size))
    long_first_seed = first_task_seed + task_pool_size
    long_task_seeds = tuple(range(long_first_seed, long_first_seed + long_run_pool_size))
    # training.export reads the schedule from here: a controller must follow the one it was trained with.
    startup = {"start": start_index, "learning_rate_schedule": learning_rate_schedule}

    constructors = [
        functools.partial(
            environment.LHOPTEnvironment,
            seed=[seed, start_index, index],
            task_seeds=task_seeds,
            long_task_seeds=long_task_seeds,
            families=tuple(families),
            min_steps=min_steps,
            max_steps=max_steps,
            min_control_steps=min_control_steps,
            max_control_steps=max_control_steps,
            baseline_dir=baseline_dir,
            stats_path=str(episodes_path),
            max_cached_runs=max_cached_runs,
            warm_up=warm_up,
            worker=(index, num_parallel_environments),
            default_start_probability=default_start_probability,
            balance_families=balance_families,
            task_return_baseline=task_return_baseline,
            learning_rate_schedule=learning_rate_schedule,
        )
        for index in range(num_parallel_environments)
    ]
    # Environments first: worker processes start before the agent builds any TensorFlow state.
    started = time.perf_counter()
    if num_parallel_environments > 1:
        py_env = parallel_py_environment.ParallelPyEnvironment(constructors, start_serially=False)
    else:
        py_env = constructors[0]()
    tf_env = tf_py_environment.TFPyEnvironment(py_env)
    startup["environment_start_seconds"] = time.perf_counter() - started  # includes compiling the pool
    with open(root / "startup.jsonl", "a") as f:
        f.write(json.dumps(startup) + "\n")

    agent, checkpointer, iteration, episode_count = create_agent_for_root(str(root))
    if init_policy and checkpointer.checkpoint_exists:
        log(f"Resuming from the checkpoint in {root / 'train'}; init_policy={init_policy!r} is not used.")
    elif init_policy:
        warm_start(agent, init_policy, init_logit_scale, init_fresh_heads)
        log(f"Starting from the policy {init_policy!r}" + (
            f", its logits scaled by {init_logit_scale}" if init_logit_scale != 1 else "") + (
            f", heads {', '.join(init_fresh_heads)} fresh" if init_fresh_heads else "") + ".")
    replay_buffer = tf_uniform_replay_buffer.TFUniformReplayBuffer(
        agent.collect_data_spec,
        batch_size=tf_env.batch_size,
        max_length=(collect_episodes_per_iteration + 1) * (tasks.MAX_CONTROL_STEPS + 1),
    )
    number_of_episodes = tf_metrics.NumberOfEpisodes()
    driver = dynamic_episode_driver.DynamicEpisodeDriver(
        tf_env,
        agent.collect_policy,
        observers=[replay_buffer.add_batch, number_of_episodes],
        num_episodes=collect_episodes_per_iteration,
    )
    collect = common.function(driver.run, autograph=False)
    # Episodes differ in length, so every iteration's batch has a new time dimension:
    # reduce_retracing traces once for any length instead of once per length (~50 s each).
    train = common.function(agent.train, autograph=False, reduce_retracing=True)
    writer = tf.summary.create_file_writer(str(root / "train"))

    _, offset = environment.read_episode_records(episodes_path, 0)  # episodes of earlier starts are not this run's
    line = ""
    # Episodes still running when an iteration's episodes are done continue in the next
    # iteration, with the LSTM state they had (not a fresh one).
    time_step, policy_state = None, None
    try:
        with writer.as_default():
            while int(iteration.numpy()) < num_iterations:
                started = time.perf_counter()
                time_step, policy_state = collect(time_step=time_step, policy_state=policy_state)
                collected = time.perf_counter()
                trajectories = replay_buffer.gather_all()
                loss = train(experience=trajectories)
                replay_buffer.clear()
                elapsed = time.perf_counter() - started
                train_seconds = time.perf_counter() - collected

                if not np.isfinite(loss.loss.numpy()):
                    raise RuntimeError(
                        f"PPO loss is not finite at iteration {int(iteration.numpy()) + 1}; stopping without "
                        f"checkpointing it (the last checkpoint in {root / 'train'} is kept)."
                    )
                records, offset = environment.read_episode_records(episodes_path, offset)
                iteration.assign_add(1)
                episode_count.assign_add(len(records))
                step = int(iteration.numpy())
                inner = sum(r["inner_seconds"] for r in records)
                inner_share = inner / (elapsed * num_parallel_environments)
                tf.summary.scalar("losses/total", loss.loss, step=step)
                for name, value in loss.extra._asdict().items():
                    if tf.size(value) == 1:
                        tf.summary.scalar(f"losses/{name}", tf.reshape(value, []), step=step)
                tf.summary.scalar("time/seconds_per_iteration", elapsed, step=step)
                tf.summary.scalar("time/inner_step_share", inner_share, step=step)
                tf.summary.scalar("time/episodes_per_hour", len(records) * 3600 / elapsed, step=step)
                _write_summaries(records, trajectories, step)
                if step % checkpoint_interval == 0 or step == num_iterations:
                    checkpointer.save(global_step=step)
                if export_interval and step % export_interval == 0:
                    _export_snapshot(agent, root, step, int(episode_count.numpy()), learning_rate_schedule)
                line = _progress_line(step, num_iterations, int(episode_count.numpy()), records, elapsed, inner_share)
                log(line)
                with open(root / "progress.jsonl", "a") as f:
                    f.write(json.dumps({
                        "iteration": step, "episodes": len(records), "seconds": elapsed,
                        "collect_seconds": elapsed - train_seconds, "agent_train_seconds": train_seconds,
                        "environment_steps": int(np.prod(trajectories.step_type.shape)),
                        "inner_seconds": inner, "compile_seconds": sum(r["compile_seconds"] for r in records),
                        "eval_seconds": sum(r["eval_seconds"] for r in records),
                        "baseline_seconds": sum(r["baseline_seconds"] for r in records),
                        "mean_return": float(np.mean([r["return"] for r in records])) if records else None,
                        "num_environments": num_parallel_environments,
                    }) + "\n")
    finally:
        py_env.close()
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
