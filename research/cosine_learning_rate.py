"""A copy of a controller whose learning rate follows a cosine decay over the run.

    python research/cosine_learning_rate.py --policy previous_default --output_dir /work/runs/cosine
    python -m training.validate --policies /work/runs/cosine/* --processes 2   # choose on these
    python -m training.evaluate --policy /work/runs/cosine/cosine_learning_rate --output_dir ...  # check held-out

Writes two controllers:
- cosine_learning_rate: every head acts as the policy decides except the learning rate, which
  moves so that it is start * (1 + cos(pi * progress)) / 2 after each control step;
- cosine_only: every other head held at its no-op too, i.e. LHOPT with a fixed cosine schedule
  and nothing learned (the yardstick; research/schedule_headroom.py measures it held-out).

The policy must not follow a schedule of its own (the packaged default since 2026-12-03 does:
it was meta-trained in this frame); previous_default above is saved_policies/default at a76a127.

Why: on the held-out tasks LHOPT's update under a cosine decay from its default 1e-2 is faster
than with the default controller steering the rate (research/results/schedule_headroom.md),
and the controller's own schedule barely depends on the task (feature_attribution_README.md).
Progress comes from the observation (0 while LHOPT does not know its total steps: the rate
then stays where it started). The previous control step's progress is kept as one extra slot
of the recurrent state; the learning-rate head reports its no-op as its action, as a held head
does (research/head_ablation.py).
"""

import argparse
import pathlib
import sys

import head_ablation

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras_lopt  # noqa: E402


VARIANTS = {
    "cosine_learning_rate": ("learning_rate",),
    "cosine_only": head_ablation.HYPERPARAMETERS,
}


def save(policy, variant, path):
    # The held learning-rate head reports its no-op: the rate follows the cosine alone.
    base = head_ablation.HeldHeads(policy, VARIANTS[variant])
    source = base.source
    if source.learning_rate_schedule != "constant":
        raise ValueError(f"The controller {policy!r} already follows a {source.learning_rate_schedule} learning-rate "
                         f"schedule; give one meta-trained without a schedule.")
    return keras_lopt.save_controller(
        path,
        keras_lopt.controller.ScheduledLearningRate(base, "cosine"),
        state_size=source.state_size + 1,
        name=pathlib.Path(path).name,
        description=f"{source.name}, {variant}: the learning rate follows a cosine decay over the run "
                    f"(research/cosine_learning_rate.py)",
        extra={**source.metadata.get("extra", {}), "cosine_from": str(policy), "variant": variant,
               "learning_rate_schedule": "cosine"},
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True,
                        help="a controller meta-trained without a learning-rate schedule (e.g. the default before "
                             "2026-12-03: saved_policies/default at commit a76a127)")
    parser.add_argument("--output_dir", required=True, help="one controller directory per variant goes here")
    args = parser.parse_args(argv)
    for variant in VARIANTS:
        path = pathlib.Path(args.output_dir) / variant
        try:
            save(args.policy, variant, path)
        except ValueError as error:  # not a controller, or the target is taken: say so, without a traceback
            sys.exit(str(error))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
