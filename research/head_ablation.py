"""Which of a controller's action heads help: copies of it with some heads held at their no-op.

For a policy, writes one controller per action head in which that head always
chooses its no-op (the hyperparameter stays where it started) while every other
head acts as the policy decides, plus one that steers the learning rate alone.
Compare them with the tools that judge any controller:

    python research/head_ablation.py --policy default --output_dir /work/runs/ablation
    python research/head_ablation.py --output_dir /work/runs/ablation --hold update_norm_ema clip_ema  # one copy
    python -m training.validate --policies /work/runs/ablation/* --processes 2   # choose on these
    python -m training.evaluate --policy /work/runs/ablation/hold_weight_decay --output_dir ...  # check held-out

The policy's recurrent state is passed through unchanged, so it sees the
features its held heads produce (a held head's hyperparameter features stay
constant), not the ones it would have produced.
"""

import argparse
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import tensorflow as tf  # noqa: E402

import keras_lopt  # noqa: E402
from keras_lopt import actions, controller  # noqa: E402

HYPERPARAMETERS = tuple(head.hyperparameter for head in actions.ACTION_HEADS)
LEARNING_RATE_ONLY = "learning_rate_only"


class HeldHeads(tf.Module):
    """A controller whose `held` heads always choose their no-op."""

    def __init__(self, policy, held):
        super().__init__()
        unknown = sorted(set(held) - set(HYPERPARAMETERS))
        if unknown:
            raise ValueError(f"Unknown action heads {unknown}. Known: {', '.join(HYPERPARAMETERS)}.")
        directory = controller.resolve(policy)
        # The metadata alone (spec checked, SavedModel not loaded): the copy loads it once, below.
        self.source = controller.Controller(controller.read_metadata(directory), str(policy))
        self.policy = tf.saved_model.load(str(directory))
        self.held = tf.constant([head.hyperparameter in held for head in actions.ACTION_HEADS])
        self.noop = tf.constant(actions.NOOP_ACTION, tf.int32)

    def __call__(self, observation, state):
        out = self.policy.act(observation, state)
        action = tf.where(self.held, self.noop, tf.cast(out["action"], tf.int32))
        if "amount" not in out:
            return action, out["state"]
        # A controller that moves by amounts (expected moves, a schedule): a held head does not move.
        amount = tf.where(self.held, actions.chosen_amounts(self.noop), out["amount"])
        return action, out["state"], amount


def variants():
    """Name -> held hyperparameters: each head alone, then all but the learning rate."""
    named = {f"hold_{name}": (name,) for name in HYPERPARAMETERS}
    named[LEARNING_RATE_ONLY] = tuple(n for n in HYPERPARAMETERS if n != "learning_rate")
    return named


def save_with_heads_held(policy, held, path):
    copy = HeldHeads(policy, held)
    source = copy.source
    return keras_lopt.save_controller(
        path,
        copy,
        state_size=source.state_size,
        name=pathlib.Path(path).name,
        description=f"{source.name} with {', '.join(held)} held at the no-op (research/head_ablation.py)",
        # The source's training record stays readable where tools look for it.
        extra={**source.metadata.get("extra", {}), "held_from": str(policy), "held": list(held)},
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="default", help='"default" or the path of a controller')
    parser.add_argument("--output_dir", required=True, help="one controller directory per variant goes here")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--variants", nargs="+", choices=sorted(variants()), default=sorted(variants()),
                       help="which copies to write (default: all)")
    which.add_argument("--hold", nargs="+", choices=HYPERPARAMETERS, metavar="HEAD",
                       help="instead, write one copy with these heads held (named hold_HEAD_and_HEAD...)")
    args = parser.parse_args(argv)
    if args.hold:
        chosen = {"hold_" + "_and_".join(args.hold): tuple(args.hold)}
    else:
        chosen = {name: variants()[name] for name in args.variants}
    for name, held in chosen.items():
        path = pathlib.Path(args.output_dir) / name
        try:
            save_with_heads_held(args.policy, held, path)
        except ValueError as error:  # not a controller, or the target is taken: say so, without a traceback
            sys.exit(str(error))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
