"""The controller's action space (docs/design.md, "Actions").

One categorical head per hyperparameter; every head has a no-op. A "scale"
head multiplies the hyperparameter's stored value (for betas, 1 - beta) by the
chosen factor; the "logit_shift" head adds the chosen amount to the logit of
the clip threshold. Results are clamped to the head's bounds, which apply to
the stored value.

A controller may also follow a learning-rate schedule: with "cosine" the
learning rate is moved along start * (1 + cos(pi * progress)) / 2 at every
control step and the learning-rate head's choice multiplies that, so its no-op
means "follow the cosine" (`scheduled_amounts`).
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from keras_lopt.hyperparameters import HYPERPARAMETERS

ACTION_SPEC_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ActionHead:
    hyperparameter: str  # constructor name, e.g. "beta_1"
    kind: str  # "scale" or "logit_shift"
    choices: tuple

    @property
    def bounds(self):
        """(low, high) on the stored value (`keras_lopt.hyperparameters`)."""
        return HYPERPARAMETERS[self.hyperparameter].bounds

    @property
    def noop(self):
        """Index of the choice that leaves the hyperparameter unchanged."""
        return self.choices.index(1.0 if self.kind == "scale" else 0.0)


_HALVE_KEEP_DOUBLE = (0.5, 1.0, 2.0)

ACTION_HEADS = (
    ActionHead("learning_rate", "scale", (0.5, 0.707, 0.9, 1.0, 1.1, 1.414, 2.0)),
    ActionHead("beta_1", "scale", _HALVE_KEEP_DOUBLE),
    ActionHead("beta_2", "scale", _HALVE_KEEP_DOUBLE),
    ActionHead("epsilon", "scale", _HALVE_KEEP_DOUBLE),
    ActionHead("weight_decay", "scale", _HALVE_KEEP_DOUBLE),
    ActionHead("clip_ema", "scale", _HALVE_KEEP_DOUBLE),
    ActionHead("update_norm_ema", "scale", (1 / 1.5, 1.0, 1.5)),
    ActionHead("clip_threshold", "logit_shift", (-1.0, -0.3, 0.0, 0.3, 1.0)),
)
NOOP_ACTION = tuple(head.noop for head in ACTION_HEADS)
NOOP_AMOUNTS = tuple(head.choices[head.noop] for head in ACTION_HEADS)
LEARNING_RATE_HEAD = [head.hyperparameter for head in ACTION_HEADS].index("learning_rate")
# "constant": the learning rate moves by the head's choices only; "cosine": see the module docstring.
LEARNING_RATE_SCHEDULES = ("constant", "cosine")


def chosen_amounts(action):
    """Each head's chosen amount (see `apply_amounts`), float32 `[..., len(ACTION_HEADS)]`."""
    action = tf.convert_to_tensor(action)
    return tf.stack([tf.gather(tf.constant(head.choices, tf.float32), action[..., i])
                     for i, head in enumerate(ACTION_HEADS)], axis=-1)


def apply_amounts(stored, amounts):
    """Returns the stored hyperparameters moved by `amounts`.

    Args:
        stored: dict of constructor name -> float32 scalar tensor holding the
            stored value (1 - beta for the betas).
        amounts: float32 `[len(ACTION_HEADS)]`: a factor per scale head, a
            logit shift for the clip threshold. A chosen action's are
            `chosen_amounts(action)`; amounts need not be among the choices
            (e.g. a policy's expected move, see `keras_lopt.controller`).

    Returns:
        A dict like `stored` with the new values, each within its head's bounds;
        a hyperparameter whose amount is not finite stays where it is.
    """
    amounts = tf.convert_to_tensor(amounts, tf.float32)
    amounts = tf.where(tf.math.is_finite(amounts), amounts, NOOP_AMOUNTS)
    moved = dict(stored)
    for i, head in enumerate(ACTION_HEADS):
        value = tf.convert_to_tensor(stored[head.hyperparameter], tf.float32)
        if head.kind == "scale":
            value = value * amounts[i]
        else:
            value = tf.sigmoid(logit(value) + amounts[i])
        moved[head.hyperparameter] = tf.clip_by_value(value, *head.bounds)
    return moved


def cosine(progress):
    """(1 + cos(pi * progress)) / 2, with progress clipped to [0, 1]."""
    return 0.5 * (1.0 + tf.cos(math.pi * tf.clip_by_value(progress, 0.0, 1.0)))


def scheduled_amounts(amounts, previous_progress, progress, schedule="cosine"):
    """`amounts` with the learning-rate factor that follows `schedule` from
    `previous_progress` to `progress` multiplied in.

    Progress is the observation's (0 while the run's length is unknown, so the
    rate then stays put). Past the end of the cosine (0 at `previous_progress`)
    the rate stays where it is. Works on one control step (`[heads]`) or a batch
    (`[batch, heads]`, progress `[batch]`).
    """
    check_learning_rate_schedule(schedule)
    amounts = tf.convert_to_tensor(amounts, tf.float32)
    if schedule == "constant":
        return amounts
    before, now = cosine(previous_progress), cosine(progress)
    factor = tf.where(before > 1e-12, now / tf.maximum(before, 1e-12), 1.0)
    is_learning_rate = tf.equal(tf.range(len(ACTION_HEADS)), LEARNING_RATE_HEAD)
    return tf.where(is_learning_rate, amounts * factor[..., None], amounts)


def check_learning_rate_schedule(schedule):
    if schedule not in LEARNING_RATE_SCHEDULES:
        raise ValueError(f"The learning-rate schedule must be one of {LEARNING_RATE_SCHEDULES}; got {schedule!r}.")


def check_action(action):
    """Raises a one-line `ValueError` unless `action` is one valid choice per head."""
    values = np.asarray(action)
    sizes = [len(head.choices) for head in ACTION_HEADS]
    if values.shape != (len(sizes),) or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(
            f"An LHOPT action is {len(sizes)} ints, one per head "
            f"({', '.join(h.hyperparameter for h in ACTION_HEADS)}); got {action!r}."
        )
    for head, size, value in zip(ACTION_HEADS, sizes, values):
        if not 0 <= value < size:
            raise ValueError(
                f"LHOPT action for {head.hyperparameter} must be in [0, {size - 1}] "
                f"(choices {head.choices}); got {value}."
            )


def clip_action(action):
    """Clamps each head's choice into its range (for actions made in-graph)."""
    sizes = tf.constant([len(head.choices) for head in ACTION_HEADS], tf.int32)
    return tf.clip_by_value(tf.cast(action, tf.int32), 0, sizes - 1)


def logit(p):
    return tf.math.log(p) - tf.math.log1p(-p)
