"""The meta-training environment: one episode is one training run of a task.

LHOPT runs in external-control mode (docs/design.md, "One feature path": the environment
drives the very optimizer users get). An episode:

- `reset()` picks a task and the episode's start (`tasks.TaskDistribution.draw_start`:
  LHOPT's defaults with probability `default_start_probability`, else one of the
  task's mis-set starts, with its model's initial weights rescaled), trains the
  first control interval and returns the first observation;
- each `step(action)` applies the action to LHOPT's hyperparameters, trains the
  next `control_every` steps in one compiled chunk, reads the eval loss and
  returns the reward: the change in the clipped log speedup over the task's
  Adam baseline (training/reward.py; the first step's reward counts from 0,
  so an episode's undiscounted return is its final log speedup), or with
  `reward_baseline="frame"` over the fixed frame's run from the same start,
  weights and batches (every action the no-op, following the learning-rate
  schedule): a controller that does what the frame does scores exactly 0, so
  the return measures what the learned part adds. The frame's run is made on
  the worker's compiled run of the task the first time a (task, start) comes
  up and cached;
- the episode ends after the task's last control step.

With `task_return_baseline` > 0, each reward is lowered by an equal share of
the mean return of that task's (and start's) last `task_return_baseline`
episodes, read from `stats_path` (every worker's episodes, and those of earlier
starts of the run). The shaped return is then the episode's log speedup minus
what the policy recently scored on that task: the advantage measures the
controller rather than how easy the drawn task is (the paper lets the critic
use the baseline's reward statistics). The baseline does not depend on the
episode's actions, so the policy gradient keeps its direction; episode records
keep the unshaped return.

Observation: {"observation": LHOPT's controller features (what the deployed
policy sees), "critic": privileged inputs only the value network gets (LHOPT's
critic observation: raw losses, log norms and hyperparameters; the current log
speedup; the family)}. Action: one categorical per hyperparameter head
(keras_lopt.actions.ACTION_HEADS), as a tuple of scalar specs.

Tasks are drawn from a fixed pool of seeds and reused across episodes, as the
paper reuses its baselines: a task's model and compiled chunk function are
kept (up to `max_cached_runs`) and reset to their initial values between
episodes, so XLA compiles each task once per worker, not once per episode.
"""

import collections
import ctypes
import json
import multiprocessing
import os
import pathlib
import signal
import sys
import time

# TF-Agents is written for Keras 2 (tf_keras); the tasks use Keras 3 through `import keras`.

import numpy as np
import tensorflow as tf
from tf_agents.environments import py_environment
from tf_agents.specs import array_spec
from tf_agents.trajectories import time_step as ts

from keras_lopt import actions, features
from training import baselines, reward, runner, tasks

# The value network's extra inputs after LHOPT's critic observation.
CRITIC_EXTRAS = ("log_speedup", "progress", "log_control_every") + tuple(f"family_{f}" for f in tasks.FAMILIES)
# The critic's input, by name: LHOPT's critic features, then the environment's.
CRITIC_NAMES = features.CRITIC_FEATURE_NAMES + CRITIC_EXTRAS
CRITIC_SIZE = len(CRITIC_NAMES)
_RAW_LOSSES = [features.CRITIC_FEATURE_NAMES.index(name) for name in ("train_loss", "val_loss")]


def bounded(values, limit=1e3):
    """Finite float32 within +-limit (nan -> 0), safe for the agent's running statistics."""
    values = np.nan_to_num(np.asarray(values, np.float64), nan=0.0, posinf=limit, neginf=-limit)
    return np.clip(values, -limit, limit).astype(np.float32)


def read_episode_records(path, offset):
    """Episode records appended to `path` since byte `offset`; returns (records, new offset)."""
    path = pathlib.Path(path)
    if not path.exists():
        return [], offset
    with open(path) as f:
        f.seek(offset)
        text = f.read()
    complete = text[: text.rfind("\n") + 1]
    records = [json.loads(line) for line in complete.splitlines() if line.strip()]
    return records, offset + len(complete.encode())


def keep_first_records(path, count):
    """Keeps only the first `count` complete records of the JSON-lines file `path` (if it exists); returns how
    many were dropped. A killed trainer leaves the records of iterations it never checkpointed; a resumed run
    counts from its checkpoint, so those go."""
    path = pathlib.Path(path)
    if not path.exists():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.endswith("\n")][:count]
    if kept != lines:
        partial = path.with_suffix(".partial")
        partial.write_text("".join(kept))
        partial.replace(path)
    return len(lines) - len(kept)


def die_with_trainer():
    """In a worker process, asks Linux to kill it when the process that started it dies, even by SIGKILL: a
    killed trainer leaves no worker behind (each holds its compiled tasks, about a GB). Does nothing in the
    trainer's own process or off Linux."""
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent.pid:  # the trainer died before the request was made
        os._exit(1)


def observation_spec():
    return {
        "observation": array_spec.ArraySpec((features.NUM_FEATURES,), np.float32, name="observation"),
        "critic": array_spec.ArraySpec((CRITIC_SIZE,), np.float32, name="critic"),
    }


def action_spec():
    return tuple(
        array_spec.BoundedArraySpec((), np.int32, 0, len(head.choices) - 1, name=head.hyperparameter)
        for head in actions.ACTION_HEADS
    )


REWARD_BASELINES = ("adam", "frame")
FRAME_CACHE_VERSION = 1


class FrameCache:
    """The fixed frame's eval losses per task, start and learning-rate schedule, one JSON file each.

    Parallel workers share it: files are written then renamed, so none reads half a file.
    """

    def __init__(self, directory):
        self.directory = pathlib.Path(directory)

    def path(self, spec, start, schedule):
        return self.directory / f"{spec.key}_{start.key}_{schedule}.json"

    def get(self, spec, start, schedule):
        path = self.path(spec, start, schedule)
        if not path.exists():
            return None
        record = json.loads(path.read_text())
        if record.get("version") != FRAME_CACHE_VERSION:
            return None
        return [float(x) for x in record["losses"]]

    def put(self, spec, start, schedule, losses):
        path = self.path(spec, start, schedule)
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        # JSON has no nan/inf: stored as strings, read back by float().
        partial.write_text(json.dumps({"version": FRAME_CACHE_VERSION,
                                       "losses": [x if np.isfinite(x) else str(x) for x in losses]}))
        partial.replace(path)


def _new_episode(spec, prepared):
    return {"spec": spec, "prepared": prepared, "control_step": 0, "inner_seconds": 0.0, "compile_seconds": 0.0,
            "eval_seconds": 0.0, "return": 0.0,
            "previous_progress": 0.0}  # where the learning-rate schedule was last moved to


class _PreparedRun:
    """A task's compiled run plus the values to reset it to between episodes."""

    def __init__(self, spec, task):
        self.spec = spec
        self.run = runner.TaskRun(task, runner.make_optimizer(spec, "lhopt"))
        self.variables = list(self.run.model.variables) + list(self.run.optimizer.variables) + [self.run.step]
        self.initial = [v.numpy() for v in self.variables]
        self.compiled = False
        # Compiled once per task: run eagerly, the action's few dozen small ops cost ~3 ms per control step.
        self.apply_action = tf.function(self.run.optimizer.apply_action)

    def reset(self, start=None):
        """Back to the task's initial state; from `start` (a `tasks.Start`) if given: its hyperparameters,
        and the model's initial weights times its `weight_scale`."""
        for variable, value in zip(self.variables, self.initial):
            variable.assign(value)
        if start is not None:
            if start.weight_scale != 1.0:
                for variable in self.run.model.trainable_variables:
                    variable.assign(variable * start.weight_scale)
            self.run.optimizer.reset_hyperparameters(**start.hyperparameters)


class LHOPTEnvironment(py_environment.PyEnvironment):
    """A TF-Agents `PyEnvironment` over sampled tasks (see the module docstring).

    Args:
        seed: seeds the choice of tasks (give parallel workers different seeds).
        distribution: a `tasks.TaskDistribution`: the pool of tasks, their
            budgets and control steps, and the share of episodes that start at
            LHOPT's default hyperparameters (as users do; the others start from
            the task's random ones, so the controller learns to repair bad
            settings; drawn per episode, so a task does not always come with
            the same start).
        baseline_dir: where Adam baselines are cached (see training/baselines.py).
        stats_path: if given, one JSON line per finished episode is appended
            here (return, speedup, timings, final hyperparameters); the
            latest episode's record is also `finished_record`.
        returns_path: the episode records `task_return_baseline` reads
            (default `stats_path`; meta-training's learner writes them).
        max_cached_runs: compiled task runs kept per worker.
        warm_up: build and compile every task of the pool (and its baseline)
            before the first episode, so compile time stays out of the
            episodes' timings.
        worker: (index, count) among parallel workers; in warm-up each one
            runs the baselines of its share of the pool only.
        task_return_baseline: if > 0, rewards are shaped by the mean return of
            the last this many episodes of the same task and kind of start
            (see the module docstring); needs `stats_path`.
        reward_baseline: "adam": the reward is the log speedup over the
            task's Adam baseline; "frame": over the fixed frame's run from the
            same start (`reward.paired_log_speedup`; the frame's eval losses
            are cached per task, start and schedule beside the baselines).
            Episode records keep both returns either way.
        learning_rate_schedule: "constant" (the learning rate moves by the
            head's choices) or "cosine": it follows a cosine decay over the
            episode and the head's choice multiplies that
            (`keras_lopt.actions.scheduled_amounts`, as the exported
            controller then does).
    """

    def __init__(self, seed=0, distribution=None, baseline_dir=None, stats_path=None, max_cached_runs=8,
                 warm_up=False, worker=(0, 1), task_return_baseline=0, learning_rate_schedule="constant",
                 reward_baseline="adam", returns_path=None):
        super().__init__(handle_auto_reset=True)
        die_with_trainer()
        actions.check_learning_rate_schedule(learning_rate_schedule)
        if reward_baseline not in REWARD_BASELINES:
            raise ValueError(f"reward_baseline must be one of {REWARD_BASELINES}; got {reward_baseline!r}.")
        self._reward_baseline = reward_baseline
        self._learning_rate_schedule = learning_rate_schedule
        self._rng = np.random.default_rng(seed)
        self._distribution = distribution or tasks.TaskDistribution()
        self._baselines = baselines.BaselineCache(baseline_dir)
        self._frames = FrameCache(self._baselines.directory / "frames")
        self._stats_path = stats_path
        self._returns_path = returns_path or stats_path
        self.finished_record = None
        self._runs = collections.OrderedDict()
        self._max_cached_runs = max_cached_runs
        self._observation_spec = observation_spec()
        self._action_spec = action_spec()
        self._episode = None
        self._worker = worker
        if task_return_baseline < 0 or int(task_return_baseline) != task_return_baseline:
            raise ValueError(f"task_return_baseline must be a whole number >= 0 (episodes); got {task_return_baseline!r}.")
        if task_return_baseline and not self._returns_path:
            raise ValueError("task_return_baseline reads past returns from stats_path; give stats_path (or "
                             "returns_path) too.")
        self._task_return_baseline = int(task_return_baseline)
        # (task key, default start) -> its latest returns
        self._task_returns = collections.defaultdict(lambda: collections.deque(maxlen=self._task_return_baseline))
        self._stats_offset = 0
        if warm_up:
            self.warm_up()

    def warm_up(self):
        """Computes missing baselines and compiles every pool task's run; returns the seconds taken."""
        start = time.perf_counter()
        pool = self._distribution.seeds[: self._max_cached_runs]
        index, count = self._worker
        for seed in pool[index::count]:
            self._baselines.get(self._distribution.sample(seed))
        for seed in pool:
            prepared = self._prepared(self._distribution.sample(seed))
            if not prepared.compiled:
                prepared.run.train_chunk()
                prepared.run.eval_loss()
                prepared.compiled = True
        return time.perf_counter() - start

    def observation_spec(self):
        return self._observation_spec

    def action_spec(self):
        return self._action_spec

    # --- Episode bookkeeping ------------------------------------------------------

    def _prepared(self, spec):
        if spec.key in self._runs:
            self._runs.move_to_end(spec.key)
            return self._runs[spec.key]
        task = tasks.build_task(spec)
        prepared = _PreparedRun(spec, task)
        self._runs[spec.key] = prepared
        while len(self._runs) > self._max_cached_runs:
            self._runs.popitem(last=False)
        return prepared

    def _train_chunk(self):
        episode = self._episode
        start = time.perf_counter()
        episode["prepared"].run.train_chunk()
        seconds = time.perf_counter() - start
        if episode["prepared"].compiled:
            episode["inner_seconds"] += seconds
        else:  # the first chunk of a new run compiles it
            episode["compile_seconds"] += seconds
            episode["prepared"].compiled = True
        episode["control_step"] += 1
        start = time.perf_counter()
        loss = episode["prepared"].run.eval_loss()
        episode["eval_seconds"] += time.perf_counter() - start
        return loss

    def _observation(self, log_speedup):
        episode = self._episode
        spec, optimizer = episode["spec"], episode["prepared"].run.optimizer
        extras = {
            "log_speedup": log_speedup,
            "progress": episode["control_step"] / spec.control_steps,
            "log_control_every": np.log(spec.control_every) / 5.0,
            **{f"family_{f}": float(spec.family == f) for f in tasks.FAMILIES},
        }
        critic = np.array(optimizer.critic_observation, np.float64)
        # Raw losses reach 1e21 on diverged runs; the agent's running variance of such
        # values overflows float32 and turned the whole network NaN. Signed log instead.
        critic[_RAW_LOSSES] = np.sign(critic[_RAW_LOSSES]) * np.log1p(np.abs(critic[_RAW_LOSSES]))
        return {
            "observation": bounded(optimizer.observation),
            "critic": bounded(np.concatenate([critic, [extras[name] for name in CRITIC_EXTRAS]])),
        }

    def _return_baseline(self, spec, default_start):
        """Mean return of the task's latest episodes with this kind of start (0 before any)."""
        if not self._task_return_baseline:
            return 0.0
        records, self._stats_offset = read_episode_records(self._returns_path, self._stats_offset)
        for record in records:
            self._task_returns[(record["task"], record["default_start"])].append(record["return"])
        returns = self._task_returns.get((spec.key, default_start))
        return float(np.mean(returns)) if returns else 0.0

    def _values(self, loss):
        """(the episode's value over Adam, over the frame) after this control step; the reward follows one."""
        episode = self._episode
        steps, fit = episode["prepared"].run.steps_done, episode["baseline"].fit
        over_adam = reward.fitted_log_speedup(fit, loss, steps)
        frame = episode["frame_losses"]
        if frame is None:
            return over_adam, None
        return over_adam, reward.paired_log_speedup(fit, loss, frame[episode["control_step"] - 1], steps)

    def _act(self, action):
        """Moves the hyperparameters by `action` (following the run's learning-rate schedule), trains the
        next control interval; returns its eval loss."""
        episode = self._episode
        progress = float(episode["prepared"].run.optimizer.observation[features.PROGRESS])
        amounts = actions.scheduled_amounts(actions.chosen_amounts(action), episode["previous_progress"], progress,
                                            self._learning_rate_schedule)
        episode["previous_progress"] = progress
        episode["prepared"].apply_action(tf.constant(action), amounts)
        return self._train_chunk()

    def _frame_losses(self, spec, prepared, start):
        """The eval losses of the fixed frame (every action the no-op) from `start`, one per control step:
        from the cache, or run now on this worker's compiled run of the task."""
        cached = self._frames.get(spec, start, self._learning_rate_schedule)
        if cached is not None:
            return cached, 0.0
        began = time.perf_counter()
        prepared.reset(start)
        self._episode = _new_episode(spec, prepared)
        losses = [self._train_chunk()]
        noop = np.asarray(actions.NOOP_ACTION, np.int32)
        while self._episode["control_step"] < spec.control_steps:
            losses.append(self._act(noop))
        self._frames.put(spec, start, self._learning_rate_schedule, losses)
        return losses, time.perf_counter() - began

    # --- PyEnvironment ------------------------------------------------------------

    def _reset(self):
        began = time.perf_counter()
        spec = self._distribution.sample(int(self._rng.choice(self._distribution.seeds)))
        baseline_start = time.perf_counter()
        baseline = self._baselines.get(spec)
        baseline_seconds = time.perf_counter() - baseline_start
        prepared = self._prepared(spec)
        start = self._distribution.draw_start(spec, self._rng)
        frame_losses, frame_seconds = None, 0.0
        if self._reward_baseline == "frame":
            frame_losses, frame_seconds = self._frame_losses(spec, prepared, start)
        prepared.reset(start)
        return_baseline = self._return_baseline(spec, start.index == 0)
        self._episode = _new_episode(spec, prepared) | {
            "return_baseline": return_baseline,
            # One share per step() call: the first control interval runs here.
            "baseline_per_step": return_baseline / max(spec.control_steps - 1, 1),
            "start": start, "baseline": baseline, "frame_losses": frame_losses, "began": began,
            "baseline_seconds": baseline_seconds, "frame_seconds": frame_seconds,
        }
        loss = self._train_chunk()
        over_adam, over_frame = self._values(loss)
        # Rewards count from 0, so the return is the final value (the first interval's is in the first reward).
        self._episode.update(previous_over_adam=0.0, previous_over_frame=None if over_frame is None else 0.0)
        return ts.restart(self._observation(self._value(over_adam, over_frame)))

    def _value(self, over_adam, over_frame):
        return over_adam if self._reward_baseline == "adam" else over_frame

    def _step(self, action):
        episode = self._episode
        action = np.asarray(action, dtype=np.int32).reshape(-1)
        try:
            actions.check_action(action)
        except ValueError as error:
            raise ValueError(f"Invalid action: {error} A policy samples out of range when its logits are NaN.") from None
        loss = self._act(action)
        over_adam, over_frame = self._values(loss)
        value = self._value(over_adam, over_frame)
        gain = value - self._value(episode["previous_over_adam"], episode["previous_over_frame"])
        episode.update(previous_over_adam=over_adam, previous_over_frame=over_frame)
        episode["return"] += gain
        step_reward = np.float32(gain - episode["baseline_per_step"])
        observation = self._observation(value)
        if episode["control_step"] >= episode["spec"].control_steps:
            self._finish(loss, over_adam, over_frame)
            return ts.termination(observation, step_reward)
        return ts.transition(observation, step_reward, discount=1.0)

    def _finish(self, loss, over_adam, over_frame):
        episode = self._episode
        record = {
            "task": episode["spec"].key,
            "family": episode["spec"].family,
            "long_run": episode["spec"].seed in self._distribution.long_run_seeds,
            "control_steps": episode["spec"].control_steps,
            "steps": episode["prepared"].run.steps_done,
            "return": episode["return"],
            "reward_baseline": self._reward_baseline,
            "log_speedup": over_adam,  # the return over Adam (each reward's sum, unshaped)
            "log_speedup_over_frame": over_frame,  # the return over the frame (None unless it ran)
            "final_eval_loss": loss if np.isfinite(loss) else str(loss),
            "baseline_final_eval_loss": float(episode["baseline"].losses[-1]),
            "seconds": time.perf_counter() - episode["began"],
            "inner_seconds": episode["inner_seconds"],
            "compile_seconds": episode["compile_seconds"],
            "eval_seconds": episode["eval_seconds"],
            "baseline_seconds": episode["baseline_seconds"],
            "frame_seconds": episode["frame_seconds"],
            "hyperparameters": episode["prepared"].run.optimizer.hyperparameters,
            "initial_hyperparameters": episode["start"].hyperparameters,
            "default_start": episode["start"].index == 0,
            "start": episode["start"].index,
            "weight_scale": episode["start"].weight_scale,
            "return_baseline": episode["return_baseline"],
            "pid": os.getpid(),
        }
        self.finished_record = record
        if not self._stats_path:
            return
        with open(self._stats_path, "a") as f:
            f.write(json.dumps(record) + "\n")
