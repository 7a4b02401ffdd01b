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
instead, renamed, e.g. to ship the one benchmarks/validate_policies.py chose.
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
from training import environment, train  # noqa: E402

SAVED_POLICIES = pathlib.Path(__file__).resolve().parents[1] / "saved_policies"
TF_AGENTS_POLICY_DIR = train.TF_AGENTS_POLICY_DIR


class GreedyActor(tf.Module):
    """The deployed controller: normalise the features, run the actor, take each head's mode.

    The recurrent state is the actor's (h, c) concatenated; zeros start an
    episode, as in LHOPT.
    """

    def __init__(self, agent):
        super().__init__(name="greedy_actor")
        self.actor = agent.actor_net
        self.normalizer = agent._observation_normalizer  # the agent's running statistics
        self.units = sum(int(s.shape[0]) for s in tf.nest.flatten(self.actor.state_spec))

    def __call__(self, observation, state):
        batch = tf.shape(observation)[0]
        inputs = {"observation": observation, "critic": tf.zeros([batch, environment.CRITIC_SIZE])}
        inputs = self.normalizer.normalize(inputs)
        h, c = tf.split(state, 2, axis=-1)
        step_type = tf.fill([batch], ts.StepType.MID)
        distributions, (h, c) = self.actor(inputs, step_type=step_type, network_state=[h, c], training=False)
        action = tf.stack([tf.cast(d.mode(), tf.int32) for d in tf.nest.flatten(distributions)], axis=-1)
        return action, tf.concat([h, c], axis=-1)


def _training_summary(root):
    progress = root / "progress.jsonl"
    rows = [json.loads(line) for line in progress.read_text().splitlines()] if progress.exists() else []
    recent = [r["mean_return"] for r in rows[-10:] if r.get("mean_return") is not None]
    return {"mean_return_last_10_iterations": sum(recent) / len(recent) if recent else None}


def save_policy(agent, target, name, iterations, episodes, root=None, description=""):
    """Writes `agent`'s greedy policy to `target`: the controller with its
    metadata, and the PolicySaver export in `target/tf_agents_policy`."""
    actor = GreedyActor(agent)
    extra = {
        "trained_with": "TF-Agents PPOClipAgent (training/train.py)",
        "iterations": int(iterations),
        "episodes": int(episodes),
        "train_steps": int(agent.train_step_counter.numpy()),
        "gin_config": gin.config_str(),
        # The environment never calls observe_validation_loss, so ControllerCallback should not either.
        "trained_with_validation_loss": False,
        **(_training_summary(pathlib.Path(root)) if root else {}),
    }
    keras_lopt.save_controller(
        target, actor, state_size=actor.units, name=name,
        description=description or f"PPO policy meta-trained for {extra['iterations']} iterations",
        extra=extra,
    )
    policy_saver.PolicySaver(agent.policy, batch_size=None).save(str(pathlib.Path(target) / TF_AGENTS_POLICY_DIR))
    return pathlib.Path(target)


def export(root_dir, name, output_dir=SAVED_POLICIES, description=""):
    """Writes the policy in `root_dir`'s latest checkpoint to `output_dir/name`; returns its path."""
    root = pathlib.Path(root_dir).resolve()
    if not (root / "train" / "checkpoint").exists():
        raise ValueError(f"No checkpoint in {root / 'train'}: run `python -m training.train --root_dir {root_dir}` first.")
    target = pathlib.Path(output_dir) / name
    _check_target(target)
    agent, _, iteration, episodes = train.create_agent_for_root(str(root))
    return save_policy(agent, target, name, iteration.numpy(), episodes.numpy(), root, description)


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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--root_dir", help="the meta-training run (python -m training.train): its latest checkpoint")
    source.add_argument("--snapshot", help="a policy the run exported (ROOT/policies/iteration_NNNNN)")
    parser.add_argument("--name", required=True, help="the policy's name and directory")
    parser.add_argument("--output_dir", default=str(SAVED_POLICIES), help="default: the package's saved_policies/")
    parser.add_argument("--description", default="")
    parser.add_argument("--gin_file", action="append", default=[], help="the gin files the run used (default ppo.gin)")
    parser.add_argument("--gin_param", action="append", default=[])
    args = parser.parse_args(argv)
    if args.snapshot:
        path = copy_snapshot(args.snapshot, args.name, args.output_dir, args.description)
    else:
        train.parse_gin(args.gin_file, args.gin_param)
        path = export(args.root_dir, args.name, args.output_dir, args.description)
    print(f"Exported to {path}; use it with keras_lopt.LHOPT(policy={str(path)!r})")


if __name__ == "__main__":
    sys.exit(main())
