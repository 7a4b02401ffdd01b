"""Exports a meta-trained policy as a controller LHOPT loads.

    python -m training.export --root_dir runs/ppo --name my_policy [--output_dir saved_policies]

Writes OUTPUT_DIR/NAME/: a keras_lopt controller SavedModel (the greedy actor
with its observation normaliser, `act(observation, state) -> (action, state)`,
loadable with TensorFlow alone) with its metadata record (feature and action
spec versions, training configuration, iterations, episodes, date), and in
OUTPUT_DIR/NAME/tf_agents_policy/ a TF-Agents `PolicySaver` export of the same
policy for TF-Agents users (loading that one needs tensorflow_probability).
Use it with `keras_lopt.LHOPT(policy="OUTPUT_DIR/NAME")`.

    python -m training.export --snapshot runs/ppo/policies/iteration_00400 --name default [--description ...]

copies a snapshot the run exported itself (train_eval's `export_interval`)
instead, renamed, e.g. to ship the one training/validate.py chose.

    python -m training.export --policy default --name default_expected --moves expected

writes an exported policy again from its PolicySaver copy, here moving by each
head's expected move instead of its mode (`--moves`, see GreedyActor);
`--logit_scale K` multiplies its logits by K (e.g. to see how a sharper
policy does with `--moves sampled`).
"""

import argparse
import json
import os
import pathlib
import shutil
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gin  # noqa: E402
import tensorflow as tf  # noqa: E402
from tf_agents.policies import policy_saver  # noqa: E402
from tf_agents.trajectories import time_step as ts  # noqa: E402

import keras_lopt  # noqa: E402
from keras_lopt import actions  # noqa: E402
from training import agent as agent_lib, environment, train  # noqa: E402

SAVED_POLICIES = pathlib.Path(__file__).resolve().parents[1] / "saved_policies"
TF_AGENTS_POLICY_DIR = train.TF_AGENTS_POLICY_DIR


MOVES = ("mode", "expected", "sampled")


class GreedyActor(tf.Module):
    """The deployed controller: normalise the features, run the actor, move by each head's mode.

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
        super().__init__(name="greedy_actor")
        if moves not in MOVES:
            raise ValueError(f"moves must be one of {MOVES}; got {moves!r}.")
        self.actor = agent.actor_net
        self.normalizer = agent._observation_normalizer  # the agent's running statistics
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
    actor = GreedyActor(agent, moves)
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


def export(root_dir, name, output_dir=SAVED_POLICIES, description="", moves="mode"):
    """Writes the policy in `root_dir`'s latest checkpoint to `output_dir/name`; returns its path."""
    root = pathlib.Path(root_dir).resolve()
    if not (root / "train" / "checkpoint").exists():
        raise ValueError(f"No checkpoint in {root / 'train'}: run `python -m training.train --root_dir {root_dir}` first.")
    target = pathlib.Path(output_dir) / name
    _check_target(target)
    agent, _, iteration, episodes = train.create_agent_for_root(str(root))
    record = training_record(agent, iteration.numpy(), episodes.numpy(), root)
    schedule = train.run_learning_rate_schedule(root) or "constant"
    return save_policy(agent, target, name, record, description, moves, schedule)


def _check_target(target):
    if target.exists() and any(target.iterdir()):
        raise ValueError(f"{target} already exists and is not empty; choose another --name or remove it.")


def copy_snapshot(snapshot, name, output_dir=SAVED_POLICIES, description=""):
    """Copies an exported policy to `output_dir/name`, with that name (and `description`) in its metadata."""
    snapshot = pathlib.Path(snapshot)
    if not (snapshot / keras_lopt.controller.METADATA_FILE).exists():
        raise ValueError(f"{snapshot} is not an exported policy (no {keras_lopt.controller.METADATA_FILE} in it).")
    target = pathlib.Path(output_dir) / name
    _check_target(target)
    shutil.copytree(snapshot, target, dirs_exist_ok=True)
    path = target / keras_lopt.controller.METADATA_FILE
    metadata = json.loads(path.read_text())
    metadata["extra"]["copied_from"] = metadata["name"]
    metadata["name"] = name
    if description:
        metadata["description"] = description
    path.write_text(json.dumps(metadata, indent=1))
    return target


def reexport(policy, name, output_dir=SAVED_POLICIES, description="", moves="mode", logit_scale=1.0):
    """Writes an exported policy ("default" or a directory) again as `output_dir/name`, from its
    PolicySaver copy, e.g. with other `moves` (GreedyActor) or its logits scaled by
    `logit_scale` (train.warm_start); its training record is kept."""
    metadata = keras_lopt.controller.read_metadata(policy)
    target = pathlib.Path(output_dir) / name
    _check_target(target)
    time_step_spec, action_spec = train.time_step_and_action_specs()
    agent = agent_lib.create_agent(time_step_spec, action_spec, train_step_counter=tf.Variable(0, dtype=tf.int64))
    train.warm_start(agent, policy, logit_scale)
    record = {**metadata["extra"], "reexported_from": metadata["name"], "logit_scale": logit_scale}
    schedule = keras_lopt.controller.learning_rate_schedule_of(metadata)
    return save_policy(agent, target, name, record, description or metadata["description"], moves, schedule)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--root_dir", help="the meta-training run (python -m training.train): its latest checkpoint")
    source.add_argument("--snapshot", help="a policy the run exported (ROOT/policies/iteration_NNNNN)")
    source.add_argument("--policy", help='an exported policy ("default" or a directory) to write again, '
                        "e.g. with other --moves")
    parser.add_argument("--name", required=True, help="the policy's name and directory")
    parser.add_argument("--output_dir", default=str(SAVED_POLICIES), help="default: the package's saved_policies/")
    parser.add_argument("--description", default="")
    parser.add_argument("--moves", choices=MOVES, default="mode",
                        help="how the policy's action distribution becomes a move (GreedyActor); default: its mode")
    parser.add_argument("--logit_scale", type=float, default=1.0,
                        help="with --policy: multiply each head's logits (sharpen above 1; the mode stays)")
    parser.add_argument("--gin_file", action="append", default=[], help="the gin files the run used (default ppo.gin)")
    parser.add_argument("--gin_param", action="append", default=[])
    args = parser.parse_args(argv)
    if args.snapshot and args.moves != "mode":
        parser.error("--moves needs --root_dir or --policy: --snapshot copies a policy as it was exported.")
    if args.logit_scale != 1 and not args.policy:
        parser.error("--logit_scale needs --policy (it rescales an exported policy's logits).")
    try:  # a usage error now, not a traceback once the agent is built
        train.check_logit_scale(args.logit_scale)
    except ValueError as error:
        parser.error(f"--logit_scale: {error}")
    if args.snapshot:
        path = copy_snapshot(args.snapshot, args.name, args.output_dir, args.description)
    else:  # builds the agent: its networks' sizes come from gin
        train.parse_gin(args.gin_file, args.gin_param)
        if args.policy:
            path = reexport(args.policy, args.name, args.output_dir, args.description, args.moves, args.logit_scale)
        else:
            path = export(args.root_dir, args.name, args.output_dir, args.description, args.moves)
    print(f"Exported to {path}; use it with keras_lopt.LHOPT(policy={str(path)!r})")


if __name__ == "__main__":
    sys.exit(main())
