"""research/head_ablation.py: a controller's copy with chosen action heads held at their no-op."""

import head_ablation
import pytest
import tensorflow as tf

import keras_lopt
from keras_lopt import actions, controller, features


class CountingController(tf.Module):
    """Chooses every head's first choice (never the no-op); its state counts its calls."""

    def __call__(self, observation, state):
        batch = tf.shape(observation)[0]
        return tf.zeros([batch, len(actions.ACTION_HEADS)], tf.int32), state + 1.0


def test_held_heads_choose_the_noop_and_the_others_and_state_pass_through(tmp_path):
    keras_lopt.save_controller(tmp_path / "policy", CountingController(), state_size=2, extra={"iterations": 7})
    held = ("weight_decay", "beta_2")
    metadata = head_ablation.save_with_heads_held(str(tmp_path / "policy"), held, tmp_path / "held")
    assert metadata["extra"] == {"iterations": 7, "held_from": str(tmp_path / "policy"), "held": list(held)}

    copy = controller.Controller.load(str(tmp_path / "held"))
    action, state = copy.act(tf.zeros([features.NUM_FEATURES]), tf.constant([1.0, 5.0]))
    expected = [head.noop if head.hyperparameter in held else 0 for head in actions.ACTION_HEADS]
    assert action.numpy().tolist() == expected
    assert state.numpy().tolist() == [2.0, 6.0]
    assert expected != list(actions.NOOP_ACTION) and expected != [0] * len(expected)


class AmountController(tf.Module):
    """Moves every head by an amount of its own (as an expected-move controller does)."""

    def __call__(self, observation, state):
        batch = tf.shape(observation)[0]
        amounts = tf.tile(tf.constant([[1.25] * 7 + [0.5]]), [batch, 1])
        return tf.zeros([batch, len(actions.ACTION_HEADS)], tf.int32), state, amounts


def test_held_heads_of_a_controller_that_moves_by_amounts_do_not_move(tmp_path):
    keras_lopt.save_controller(tmp_path / "policy", AmountController(), state_size=1)
    held = ("learning_rate", "clip_threshold")
    head_ablation.save_with_heads_held(str(tmp_path / "policy"), held, tmp_path / "held")
    copy = controller.Controller.load(str(tmp_path / "held"))
    _, amounts, _ = copy.move(tf.zeros([features.NUM_FEATURES]), tf.zeros([1]))
    noop = actions.chosen_amounts(actions.NOOP_ACTION).numpy()
    expected = [noop[i] if head.hyperparameter in held else (0.5 if head.kind == "logit_shift" else 1.25)
                for i, head in enumerate(actions.ACTION_HEADS)]
    assert amounts.numpy().tolist() == pytest.approx(expected)


def test_learning_rate_only_holds_every_other_head():
    held = head_ablation.variants()[head_ablation.LEARNING_RATE_ONLY]
    assert "learning_rate" not in held and len(held) == len(actions.ACTION_HEADS) - 1


def test_unknown_head_is_named(tmp_path):
    keras_lopt.save_controller(tmp_path / "policy", CountingController(), state_size=2)
    with pytest.raises(ValueError, match=r"Unknown action heads \['momentum'\]"):
        head_ablation.save_with_heads_held(str(tmp_path / "policy"), ("momentum",), tmp_path / "held")
    assert not (tmp_path / "held").exists()


def test_the_command_line_names_a_bad_policy_without_a_traceback(tmp_path):
    with pytest.raises(SystemExit, match="no such directory"):
        head_ablation.main(["--policy", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "out"),
                            "--hold", "epsilon"])
