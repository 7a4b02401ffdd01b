"""Bad input gets one clear line naming the problem and the fix."""

import keras
import pytest

from keras_lopt import LHOPT


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(learning_rate=0.0), "learning_rate must be a positive float"),
        (dict(learning_rate=-1e-3), "learning_rate must be a positive float"),
        (dict(learning_rate=float("nan")), "learning_rate must be a positive float"),
        (dict(learning_rate="fast"), "learning_rate must be a positive float"),
        (dict(beta_1=1.0), "beta_1 must be a float strictly between 0 and 1"),
        (dict(beta_1=0.0), "beta_1 must be a float strictly between 0 and 1"),
        (dict(beta_2=1.5), "beta_2 must be a float strictly between 0 and 1"),
        (dict(epsilon=0.0), "epsilon must be a positive float"),
        (dict(weight_decay=-0.1), "weight_decay must be a float >= 0"),
        (dict(clip_threshold=1.0), "clip_threshold must be a float strictly between 0 and 1"),
        (dict(clip_ema=0.0), "clip_ema must be a float in (0, 1]"),
        (dict(update_norm_ema=2.0), "update_norm_ema must be a float in (0, 1]"),
        (dict(max_learning_rate=0.0), "max_learning_rate must be a positive float"),
        (dict(max_learning_rate="high"), "max_learning_rate must be a positive float"),
        (dict(max_learning_rate=float("inf")), "max_learning_rate must be a positive float"),
        (dict(total_steps=0), "total_steps must be a positive int or None"),
        (dict(total_steps=10.5), "total_steps must be a positive int or None"),
        (dict(control_every=0), "control_every must be a positive int"),
            (dict(policy="/no/such/dir"), "no such directory"),
            (dict(policy=3), "LHOPT policy must be"),
    ],
)
def test_invalid_arguments(kwargs, expected):
    with pytest.raises(ValueError) as info:
        LHOPT(**kwargs)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_learning_rate_schedule_is_rejected_with_a_fix():
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 100, 0.9)
    with pytest.raises(ValueError, match="schedules and callables are not supported"):
        LHOPT(learning_rate=schedule)


def test_edge_values_are_accepted():
    LHOPT(weight_decay=0.0, clip_ema=1.0, update_norm_ema=1.0, learning_rate=2.0)


def test_numpy_integers_are_plain_ints_in_the_config():
    import numpy as np

    config = LHOPT(total_steps=np.int64(500), control_every=np.int32(5)).get_config()
    assert type(config["total_steps"]) is int and config["total_steps"] == 500
    assert type(config["control_every"]) is int and config["control_every"] == 5


def test_unknown_keyword_suggests_the_right_one():
    with pytest.raises(TypeError) as info:
        LHOPT(beta1=0.9)
    message = str(info.value)
    assert "unexpected keyword argument 'beta1'" in message
    assert "Did you mean 'beta_1'?" in message
    assert "\n" not in message


def test_keras_keyword_arguments_pass_through():
    opt = LHOPT(global_clipnorm=1.0, use_ema=True, gradient_accumulation_steps=2)
    assert opt.global_clipnorm == 1.0 and opt.use_ema and opt.gradient_accumulation_steps == 2


def test_set_hyperparameters_validates():
    opt = LHOPT()
    with pytest.raises(ValueError, match="Did you mean 'learning_rate'"):
        opt.set_hyperparameters(learnig_rate=0.1)
    with pytest.raises(ValueError, match="beta_2 must be"):
        opt.set_hyperparameters(beta_2=1.0)
    assert opt.hyperparameters["beta_2"] == pytest.approx(0.99)


def test_other_backend_gets_one_clear_line(monkeypatch):
    # Keras' other backends need jax or torch, which this environment does not
    # install; the check only reads keras.backend.backend().
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(RuntimeError) as info:
        LHOPT()
    assert str(info.value) == (
        "keras_lopt.LHOPT needs the TensorFlow backend but Keras is using 'jax'; "
        "set the environment variable KERAS_BACKEND=tensorflow before importing keras."
    )


def test_missing_default_controller_is_one_clear_error(tmp_path, monkeypatch):
    # An installation whose saved_policies/ lacks default/ (a broken or stripped install).
    from keras_lopt import controller

    monkeypatch.setattr(controller.importlib.resources, "files", lambda package: tmp_path)
    with pytest.raises(ValueError, match="ships none yet") as info:
        LHOPT()
    assert "policy=None" in str(info.value)
