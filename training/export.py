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
head's expected move instead of its mode (`--moves`, see policy_io.DeployedActor);
`--logit_scale K` multiplies its logits by K (e.g. to see how a sharper
policy does with `--moves sampled`).
"""

import argparse
import json
import pathlib
import shutil
import sys

import tensorflow as tf

import keras_lopt
from training import agent as agent_lib
from training import policy_io, train  # train: for parse_gin, which needs train_eval registered

SAVED_POLICIES = pathlib.Path(__file__).resolve().parents[1] / "saved_policies"


def export(root_dir, name, output_dir=SAVED_POLICIES, description="", moves="mode"):
    """Writes the policy in `root_dir`'s latest checkpoint to `output_dir/name`; returns its path."""
    root = pathlib.Path(root_dir).resolve()
    if not (root / "train" / "checkpoint").exists():
        raise ValueError(f"No checkpoint in {root / 'train'}: run `python -m training.train --root_dir {root_dir}` first.")
    target = pathlib.Path(output_dir) / name
    _check_target(target)
    agent, _, iteration, episodes = policy_io.create_agent_for_root(str(root))
    record = policy_io.training_record(agent, iteration.numpy(), episodes.numpy(), root)
    schedule = policy_io.run_learning_rate_schedule(root) or "constant"
    return policy_io.save_policy(agent, target, name, record, description, moves, schedule)


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
    PolicySaver copy, e.g. with other `moves` (policy_io.DeployedActor) or its logits scaled by
    `logit_scale` (policy_io.warm_start); its training record is kept."""
    metadata = keras_lopt.controller.read_metadata(policy)
    target = pathlib.Path(output_dir) / name
    _check_target(target)
    time_step_spec, action_spec = policy_io.time_step_and_action_specs()
    agent = agent_lib.create_agent(time_step_spec, action_spec, train_step_counter=tf.Variable(0, dtype=tf.int64))
    policy_io.warm_start(agent, policy, logit_scale)
    record = {**metadata["extra"], "reexported_from": metadata["name"], "logit_scale": logit_scale}
    schedule = keras_lopt.controller.learning_rate_schedule_of(metadata)
    return policy_io.save_policy(agent, target, name, record, description or metadata["description"], moves, schedule)


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
    parser.add_argument("--moves", choices=policy_io.MOVES, default="mode",
                        help="how the policy's action distribution becomes a move (policy_io.DeployedActor); default: its mode")
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
        policy_io.check_logit_scale(args.logit_scale)
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
