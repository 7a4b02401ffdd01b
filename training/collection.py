"""Independent actors: worker processes that each run whole episodes with their own copy of the policy.

TF-Agents' `ParallelPyEnvironment` steps its environments in lockstep: every control step waits for the
slowest worker's task (a 4-step tabular chunk waits for a 100-step CNN chunk) and for the learner's batched
policy call, and every worker idles while the learner runs its PPO update. Here each actor runs episodes on
its own and goes on collecting while the learner trains, acting at every control step with the latest policy
weights the learner has published (an episode can outlast several updates: a long run's episode takes as long
as dozens of short ones). The trajectories keep the acting policy's logits, so PPO's clipped ratio is taken
against the policy that acted; an episode whose last step was acted by a policy more than `max_policy_lag`
updates old is dropped and counted.

The learner gets each finished episode as a `Trajectory` of NumPy arrays shaped [time, ...] (the driver's
layout: one item per control step plus the boundary item after the last) and packs them into rows for
`agent.train` (`pack`).
"""

import multiprocessing
import queue
import time
import traceback

import numpy as np
import tensorflow as tf
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory
from tf_agents.utils import common

from training import agent as agent_lib

# How long the learner waits on its queue before checking that every actor is alive.
_POLL_SECONDS = 5.0


class ActorError(RuntimeError):
    """An actor process failed or died; the message carries its traceback or exit code."""


def _collect_policy(time_step_spec, action_spec):
    """The collect policy as the learner's agent builds it (same networks, same variable order)."""
    agent = agent_lib.create_agent(time_step_spec, action_spec,
                                   train_step_counter=tf.Variable(0, dtype=tf.int64, trainable=False))
    return agent.collect_policy


def set_weights(policy, weights):
    variables = policy.variables()
    shapes = [tuple(v.shape) for v in variables]
    if shapes != [w.shape for w in weights]:
        raise ValueError(f"Published weights do not fit the actor's policy ({len(weights)} arrays vs "
                         f"{len(variables)} variables): learner and actors were built from different settings.")
    for variable, value in zip(variables, weights):
        variable.assign(value)


def policy_weights(policy):
    return [v.numpy() for v in policy.variables()]


class Stopped(Exception):
    """The learner asked the actor to stop."""


class PolicyInbox:
    """The actor's end of the learner's weight broadcasts: `refresh()` sets the newest published weights (if
    any arrived since) on the policy and returns their version; waits for the first."""

    def __init__(self, inbox, policy):
        self._inbox, self._policy, self.version = inbox, policy, None

    def refresh(self):
        message = self._inbox.get() if self.version is None else False
        while True:
            if message is None:
                raise Stopped
            if message is not False:
                self.version, weights = message
                set_weights(self._policy, weights)
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                return self.version


def run_episode(env, policy, action_fn, refresh=lambda: None):
    """One episode of `env` with `policy` (batch size 1), calling `refresh()` before every action (it returns
    the policy version that acts); returns (trajectory [time, ...], policy seconds, first and last version)."""
    def batched(nest):
        return tf.nest.map_structure(lambda x: tf.convert_to_tensor(np.asarray(x)[None]), nest)

    def unbatched(nest):
        return tf.nest.map_structure(lambda x: np.asarray(x)[0], nest)

    items, policy_seconds, versions = [], 0.0, []
    time_step, state = env.reset(), policy.get_initial_state(1)
    while True:
        versions.append(refresh())
        started = time.perf_counter()
        action_step = action_fn(batched(time_step), state)
        policy_seconds += time.perf_counter() - started
        state = action_step.state
        action_step = action_step._replace(action=unbatched(action_step.action), state=(),
                                           info=unbatched(action_step.info))
        if time_step.is_last():
            # The boundary item, as TF-Agents' drivers record it before the next episode's first step.
            following = ts.TimeStep(np.asarray(ts.StepType.FIRST, np.int32), np.float32(0.0), np.float32(1.0),
                                    time_step.observation)
            items.append(trajectory.from_transition(time_step, action_step, following))
            break
        next_time_step = env.step(action_step.action)
        items.append(trajectory.from_transition(time_step, action_step, next_time_step))
        time_step = next_time_step
    return tf.nest.map_structure(lambda *xs: np.stack(xs), *items), policy_seconds, versions[0], versions[-1]


def _actor_main(index, make_environment, specs, inbox, outbox, credits):
    try:
        env = make_environment()
        policy = _collect_policy(*specs)
        action_fn = common.function(policy.action, autograph=False)
        weights = PolicyInbox(inbox, policy)
        outbox.put(("ready", index, None))
        while True:
            credits.acquire()  # one per episode; the learner gives one back for each episode it takes
            episode, policy_seconds, first, last = run_episode(env, policy, action_fn, weights.refresh)
            record = env.finished_record | {"policy_seconds": policy_seconds, "policy_version": last,
                                            "first_policy_version": first}
            outbox.put(("episode", index, (last, episode, record)))
    except Stopped:
        return
    except Exception:  # noqa: BLE001 - reported to the learner, which raises it
        outbox.put(("error", index, traceback.format_exc()))


class Actors:
    """`count` actor processes, each running `make_environment(index)`'s episodes.

    Start them before the learner builds any TensorFlow state (they are forked).
    """

    def __init__(self, make_environment, count, specs, lookahead, max_policy_lag=1):
        if count < 1 or lookahead < 1:
            raise ValueError(f"Need at least one actor and a lookahead of one episode; got {count} and {lookahead}.")
        context = multiprocessing.get_context()
        self.count = count
        self.max_policy_lag = max_policy_lag
        self._credits = context.Semaphore(lookahead)
        self._outbox = context.Queue()
        self._inboxes = [context.Queue() for _ in range(count)]
        self._processes = [
            context.Process(target=_actor_main, args=(i, lambda i=i: make_environment(i), specs, inbox, self._outbox,
                                                         self._credits),
                            daemon=True)
            for i, inbox in enumerate(self._inboxes)
        ]
        for process in self._processes:
            process.start()
        ready = 0
        while ready < count:  # each has built its environment (and warmed it up) and its policy
            kind, _, _ = self._next()
            ready += kind == "ready"

    def _next(self):
        while True:
            # Checked at every message, not only when none come: with one actor dead the others keep the queue
            # busy, and collection would go on at a fraction of its speed without a word.
            self._check_alive()
            try:
                kind, index, payload = self._outbox.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
            if kind == "error":
                raise ActorError(f"Actor {index} failed:\n{payload}")
            return kind, index, payload

    def _check_alive(self):
        for i, process in enumerate(self._processes):
            if not process.is_alive():
                cause = " (killed: SIGKILL, e.g. by the out-of-memory killer)" if process.exitcode == -9 else ""
                raise ActorError(f"Actor {i} died (exit code {process.exitcode}){cause}; the run resumes from its "
                                 f"last checkpoint when restarted.")

    def publish(self, weights, version):
        """Every actor's next episode acts with `weights` (policy version `version`)."""
        for inbox in self._inboxes:
            inbox.put((version, weights))

    def episodes(self, count, version):
        """`count` finished episodes whose last step was acted by policy version >= version - max_policy_lag,
        as [(trajectory, record)], and how many older episodes were dropped."""
        accepted, dropped = [], 0
        while len(accepted) < count:
            _, _, (acted_by, episode, record) = self._next()
            self._credits.release()
            if acted_by < version - self.max_policy_lag:
                dropped += 1
            else:
                accepted.append((episode, record))
        return accepted, dropped

    def close(self):
        for inbox in self._inboxes:
            inbox.put(None)
            self._credits.release()  # an actor waiting for a credit goes on to read the stop
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


def pack(episodes, rows):
    """Episodes ([time, ...] trajectories) laid end to end in `rows` rows of equal length, [rows, time, ...].

    Longest first, each into the shortest row so far; rows are padded with copies of their last item (a
    boundary item, which PPO masks out). The LSTM's state restarts at every episode's first step.
    """
    rows = min(rows, len(episodes))
    lengths = [0] * rows
    assigned = [[] for _ in range(rows)]
    for episode in sorted(episodes, key=lambda e: -len(e.step_type)):
        row = int(np.argmin(lengths))
        assigned[row].append(episode)
        lengths[row] += len(episode.step_type)
    width = max(lengths)

    def row_of(parts):
        joined = tf.nest.map_structure(lambda *xs: np.concatenate(xs), *parts)
        padding = width - len(joined.step_type)
        return tf.nest.map_structure(lambda x: np.concatenate([x, np.repeat(x[-1:], padding, axis=0)]), joined)

    return tf.nest.map_structure(lambda *xs: np.stack(xs), *[row_of(parts) for parts in assigned])
