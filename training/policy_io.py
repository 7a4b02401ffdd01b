"""An agent and its exported policies: the one module both meta-training and export use.

An exported policy is a directory with the deployed controller (a keras_lopt controller SavedModel: the actor with
its observation normaliser, `DeployedActor`) and, in `TF_AGENTS_POLICY_DIR`, TF-Agents' `PolicySaver` export of
the same policy, which a new run can start from (`warm_start`).
"""

import json
import os
import pathlib

import gin
import tensorflow as tf
from tf_agents.policies import policy_saver
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.utils import common

import keras_lopt
from keras_lopt import actions, controller
from training import agent as agent_lib
from training import environment

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


def checkpointed_progress(root_dir):
    """(iterations, episodes) as of the run's latest checkpoint in ROOT/train; (0, 0) before the first.
    Read from the checkpoint file, without building the agent."""
    latest = tf.train.latest_checkpoint(os.path.join(root_dir, "train"))
    if latest is None:
        return 0, 0
    reader = tf.train.load_checkpoint(latest)
    return tuple(int(reader.get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE")) for name in ("iteration", "episodes"))


def tf_agents_policy_directory(policy):
    """The PolicySaver export inside an exported policy ("default" or a directory from training.export)."""
    directory = controller.resolve(policy) / TF_AGENTS_POLICY_DIR
    if not directory.is_dir():
        raise ValueError(f"{directory.parent} has no {TF_AGENTS_POLICY_DIR}/ (the TF-Agents export of the "
                         f"policy) to start from; export it with training.export.")
    return directory


def check_policy_schedule(policy, learning_rate_schedule, fresh_heads):
    """A copied learning-rate head moves the rate relative to the schedule it was meta-trained in."""
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


MOVES = ("mode", "expected", "sampled")


class DeployedActor(tf.Module):
    """The deployed controller: normalise the features, run the actor, move as `moves` says.

    `moves` chooses how the policy's action distribution becomes a move:
    "mode" (the default) takes each head's likeliest choice. "expected" also
    outputs each head's expected move ("amount", see
    `keras_lopt.actions.apply_amounts`): the probability-weighted mean of the
    log-factors (scale heads) or logit shifts, which LHOPT then moves by
    instead of the mode. "sampled" draws each head's choice as meta-training
    does, from stateless random numbers seeded by the control step's index
    (kept in the recurrent state), so a run is repeatable. Meta-training samples,
    so the mode can sit on the no-op while most probability is on moving one way.

    The recurrent state is the actor's (h, c) concatenated (then the control
    step's index, for "sampled"); zeros start an episode, as in LHOPT.
    """

    def __init__(self, agent, moves="mode"):
        super().__init__(name="deployed_actor")
        if moves not in MOVES:
            raise ValueError(f"moves must be one of {MOVES}; got {moves!r}.")
        self.actor = agent.actor_net
        self.normalizer = agent._observation_normalizer  # the agent's running statistics (TF-Agents has no public accessor)
        self.units = sum(int(s.shape[0]) for s in tf.nest.flatten(self.actor.state_spec))
        self.moves = moves
        self.state_size = self.units + (moves == "sampled")

    def __call__(self, observation, state):
        batch = tf.shape(observation)[0]
        inputs = {"observation": observation, "critic": tf.zeros([batch, environment.CRITIC_SIZE])}
        inputs = self.normalizer.normalize(inputs)
        h, c = tf.split(state[:, : self.units], 2, axis=-1)
        step_type = tf.fill([batch], ts.StepType.MID)
        distributions, (h, c) = self.actor(inputs, step_type=step_type, network_state=[h, c], training=False)
        distributions = tf.nest.flatten(distributions)
        new_state = tf.concat([h, c], axis=-1)
        if self.moves == "sampled":
            index = state[:, self.units:]
            action = tf.concat([_sample(d, index, i) for i, d in enumerate(distributions)], axis=-1)
            return action, tf.concat([new_state, index + 1.0], axis=-1)
        action = tf.stack([tf.cast(d.mode(), tf.int32) for d in distributions], axis=-1)
        if self.moves == "mode":
            return action, new_state
        amounts = tf.stack([_expected_amount(head, d) for head, d in zip(actions.ACTION_HEADS, distributions)], -1)
        return action, new_state, amounts


def _sample(distribution, index, head_index):
    """One choice per batch row, `[batch, 1]`, seeded by (control step index, head)."""
    seed = tf.stack([tf.cast(index[0, 0], tf.int32), tf.constant(head_index, tf.int32)])
    logits = tf.reshape(distribution.logits_parameter(), [tf.shape(index)[0], -1])
    return tf.cast(tf.random.stateless_categorical(logits, 1, seed), tf.int32)


def _expected_amount(head, distribution):
    probabilities = distribution.probs_parameter()
    choices = tf.constant(head.choices, tf.float32)
    if head.kind == "scale":
        return tf.exp(tf.reduce_sum(probabilities * tf.math.log(choices), -1))
    return tf.reduce_sum(probabilities * choices, -1)


def _training_summary(root):
    progress = root / "progress.jsonl"
    rows = [json.loads(line) for line in progress.read_text().splitlines()] if progress.exists() else []
    recent = [r["mean_return"] for r in rows[-10:] if r.get("mean_return") is not None]
    return {"mean_return_last_10_iterations": sum(recent) / len(recent) if recent else None}


def training_record(agent, iterations, episodes, root=None):
    """The metadata's record of how `agent` was trained (run `root`'s summary if given)."""
    return {
        "trained_with": "TF-Agents PPOClipAgent (training/train.py)",
        "iterations": int(iterations),
        "episodes": int(episodes),
        "train_steps": int(agent.train_step_counter.numpy()),
        "gin_config": gin.config_str(),
        # The environment never calls observe_validation_loss, so ControllerCallback should not either.
        "trained_with_validation_loss": False,
        **(_training_summary(pathlib.Path(root)) if root else {}),
    }


def save_policy(agent, target, name, record, description="", moves="mode", learning_rate_schedule="constant"):
    """Writes `agent`'s greedy policy to `target`: the controller with its metadata
    (`record`, see `training_record`, in its extra), and the PolicySaver export in
    `target/tf_agents_policy`. A policy meta-trained with a `learning_rate_schedule`
    other than "constant" follows it (`keras_lopt.controller.ScheduledLearningRate`)."""
    actor = DeployedActor(agent, moves)
    state_size = actor.state_size
    if learning_rate_schedule != "constant":
        actor, state_size = keras_lopt.controller.ScheduledLearningRate(actor, learning_rate_schedule), state_size + 1
    extra = {**record, "moves": moves, "learning_rate_schedule": learning_rate_schedule}
    keras_lopt.save_controller(
        target, actor, state_size=state_size, name=name,
        description=description or f"PPO policy meta-trained for {extra['iterations']} iterations",
        extra=extra,
    )
    policy_saver.PolicySaver(agent.policy, batch_size=None).save(str(pathlib.Path(target) / TF_AGENTS_POLICY_DIR))
    return pathlib.Path(target)
