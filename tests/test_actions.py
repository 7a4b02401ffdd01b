"""Actions move hyperparameters as the paper specifies and respect bounds."""

import math

import numpy as np
import pytest
import tensorflow as tf

import keras_lopt
from keras_lopt import LHOPT, actions
from keras_lopt.actions import ACTION_HEADS, NOOP_ACTION


def _logit(p):
    return math.log(p / (1 - p))


def _stored(hp, name):
    return 1 - hp[name] if name in ("beta_1", "beta_2") else hp[name]


def test_noop_changes_nothing():
    opt = LHOPT()
    before = opt.hyperparameters
    opt.apply_action(NOOP_ACTION)
    assert opt.hyperparameters == pytest.approx(before, rel=1e-6)


@pytest.mark.parametrize("head_index", range(len(ACTION_HEADS)))
def test_every_choice_of_every_head(head_index):
    head = ACTION_HEADS[head_index]
    for choice, amount in enumerate(head.choices):
        opt = LHOPT()
        before = opt.hyperparameters
        action = list(NOOP_ACTION)
        action[head_index] = choice
        opt.apply_action(action)
        after = opt.hyperparameters
        name = head.hyperparameter
        if head.kind == "scale":
            expected = np.clip(_stored(before, name) * amount, *head.bounds)
            assert _stored(after, name) == pytest.approx(expected, rel=1e-5)
        else:
            assert _logit(after[name]) == pytest.approx(_logit(before[name]) + amount, abs=1e-4)
        others = {k: v for k, v in after.items() if k != name}
        assert others == pytest.approx({k: before[k] for k in others}, rel=1e-6)


def test_bounds_hold_under_repeated_actions():
    opt = LHOPT(learning_rate=0.3, beta_1=0.9, clip_threshold=0.8, max_learning_rate=None)
    up = [len(h.choices) - 1 for h in ACTION_HEADS]  # the largest choice of every head
    down = [0 for _ in ACTION_HEADS]
    for _ in range(40):
        opt.apply_action(up)
    hp = opt.hyperparameters
    assert hp["learning_rate"] == pytest.approx(1.0)
    assert hp["beta_1"] == pytest.approx(0.5)  # 1 - beta_1 capped at 0.5
    assert hp["clip_threshold"] == pytest.approx(1 / (1 + math.exp(-5.0)), rel=1e-5)
    for _ in range(60):
        opt.apply_action(down)
    hp = opt.hyperparameters
    assert hp["learning_rate"] == pytest.approx(1e-8)
    assert hp["beta_1"] == pytest.approx(1 - 1e-4)
    assert hp["clip_threshold"] == pytest.approx(1 / (1 + math.exp(5.0)), rel=1e-4)


def _doubling_learning_rate():
    action = list(NOOP_ACTION)
    action[0] = ACTION_HEADS[0].choices.index(2.0)
    return action


def test_actions_inside_a_compiled_function():
    opt = LHOPT(learning_rate=1e-3, max_learning_rate=None)
    double_lr = _doubling_learning_rate()

    @tf.function(jit_compile=True)
    def act(action):
        opt.apply_action(action)

    for _ in range(3):
        act(tf.constant(double_lr))
    assert opt.hyperparameters["learning_rate"] == pytest.approx(8e-3, rel=1e-5)


@pytest.mark.parametrize(
    "action, message",
    [
        ([0, 0], "An LHOPT action is 8 ints"),
        ([0.5] * 8, "An LHOPT action is 8 ints"),
        ([7, 1, 1, 1, 1, 1, 1, 2], "action for learning_rate must be in [0, 6]"),
        ([3, 1, 1, 1, 1, 1, 1, -1], "action for clip_threshold must be in [0, 4]"),
    ],
)
def test_invalid_actions(action, message):
    with pytest.raises(ValueError) as info:
        LHOPT().apply_action(action)
    assert message in str(info.value)


def test_max_learning_rate_caps_the_controllers_raises():
    opt = LHOPT(learning_rate=1e-3, max_learning_rate=4e-3)
    for _ in range(5):
        opt.apply_action(_doubling_learning_rate())
    assert opt.hyperparameters["learning_rate"] == pytest.approx(4e-3, rel=1e-6)
    halve = list(NOOP_ACTION)
    halve[0] = ACTION_HEADS[0].choices.index(0.5)
    opt.apply_action(halve)
    assert opt.hyperparameters["learning_rate"] == pytest.approx(2e-3, rel=1e-6)


def test_the_default_cap_lets_a_low_start_rise_to_it():
    opt = LHOPT(learning_rate=1e-3)  # Adam's habit: the controller may still raise it 40x
    for _ in range(7):
        opt.apply_action(_doubling_learning_rate())
    assert opt.hyperparameters["learning_rate"] == pytest.approx(keras_lopt.lhopt.DEFAULT_MAX_LEARNING_RATE)


def test_max_learning_rate_does_not_cut_a_rate_above_it():
    opt = LHOPT(learning_rate=0.1, max_learning_rate=0.04)  # started above: kept, not raised
    opt.apply_action(_doubling_learning_rate())
    assert opt.hyperparameters["learning_rate"] == pytest.approx(0.1, rel=1e-6)
    opt.set_hyperparameters(learning_rate=0.2)  # set by the user: the same
    opt.apply_action(_doubling_learning_rate())
    assert opt.hyperparameters["learning_rate"] == pytest.approx(0.2, rel=1e-6)


def test_amounts_between_the_choices_move_and_clamp():
    stored = {"learning_rate": tf.constant(0.01), "beta_1": tf.constant(0.1), "beta_2": tf.constant(0.001),
              "epsilon": tf.constant(1e-6), "weight_decay": tf.constant(0.05), "clip_ema": tf.constant(0.01),
              "update_norm_ema": tf.constant(0.05), "clip_threshold": tf.constant(0.8)}
    amounts = [1.3, 0.8, 1.0, 1.0, 3.0, 1.0, 1.0, 0.25]  # weight decay 0.15 is above its bound 0.1
    moved = {k: float(v) for k, v in keras_lopt.actions.apply_amounts(stored, amounts).items()}
    assert moved["learning_rate"] == pytest.approx(0.013)
    assert moved["beta_1"] == pytest.approx(0.08)
    assert moved["weight_decay"] == pytest.approx(0.1)
    assert _logit(moved["clip_threshold"]) == pytest.approx(_logit(0.8) + 0.25, abs=1e-5)
    assert moved["epsilon"] == pytest.approx(1e-6)
    # A chosen action is the amounts of its choices, bit for bit.
    action = [len(h.choices) - 1 for h in ACTION_HEADS]
    by_action = keras_lopt.actions.apply_amounts(stored, keras_lopt.actions.chosen_amounts(action))
    by_amounts = keras_lopt.actions.apply_amounts(stored, [h.choices[-1] for h in ACTION_HEADS])
    assert {k: float(v) for k, v in by_action.items()} == {k: float(v) for k, v in by_amounts.items()}


def test_scheduled_amounts_follow_the_cosine_and_multiply_the_learning_rate_heads_move():
    amounts = actions.chosen_amounts(actions.NOOP_ACTION)
    np.testing.assert_array_equal(actions.scheduled_amounts(amounts, 0.0, 0.5, "constant"), amounts)
    half = actions.scheduled_amounts(amounts, 0.0, 0.5).numpy()
    lr = actions.LEARNING_RATE_HEAD
    assert half[lr] == pytest.approx(0.5) and np.delete(half, lr).tolist() == np.delete(amounts, lr).tolist()
    doubled = list(actions.NOOP_ACTION)
    doubled[lr] = actions.ACTION_HEADS[lr].choices.index(2.0)
    moved = actions.scheduled_amounts(actions.chosen_amounts(doubled), 0.5, 0.75).numpy()
    assert moved[lr] == pytest.approx(2.0 * (1 + math.cos(0.75 * math.pi)) / (1 + math.cos(0.5 * math.pi)))
    # Batched; past the end (cosine 0 before) and with no progress known the rate stays put.
    batch = actions.scheduled_amounts(tf.stack([amounts] * 3), tf.constant([1.0, 0.0, 0.2]),
                                      tf.constant([1.0, 0.0, 0.2])).numpy()
    np.testing.assert_allclose(batch[:, lr], 1.0)
    with pytest.raises(ValueError, match="schedule must be one of"):
        actions.scheduled_amounts(amounts, 0.0, 0.5, "linear")
