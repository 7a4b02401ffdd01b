"""The controller inside LHOPT: features, SavedModel controllers, external
control, and saving/loading with a controller."""

import json
import math
import shutil
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_lopt
from keras_lopt import LHOPT, actions, features, save_controller
from keras_lopt.controller import METADATA_FILE
from keras_helpers import regression_data as _data, fit as _fit, compiled_model as _model

LR_DOUBLE = actions.ACTION_HEADS[0].choices.index(2.0)


def _doubling_act(observation, state):
    """Always doubles the learning rate; the state counts control steps."""
    action = list(actions.NOOP_ACTION)
    action[0] = LR_DOUBLE
    batch = tf.shape(observation)[0]
    return tf.tile(tf.constant([action], tf.int32), [batch, 1]), state + 1.0


@pytest.fixture
def doubling_controller(tmp_path):
    path = tmp_path / "doubling"
    save_controller(path, _doubling_act, state_size=2, description="test: doubles lr")
    return path


def _growing_act(observation, state):
    """Mode: no-op; expected move: the learning rate x1.5 (a controller with an "amount" output)."""
    batch = tf.shape(observation)[0]
    action = tf.tile(tf.constant([actions.NOOP_ACTION], tf.int32), [batch, 1])
    amount = tf.tile(tf.constant([[1.5] + [h.choices[h.noop] for h in actions.ACTION_HEADS[1:]]]), [batch, 1])
    return action, state + 1.0, amount


@pytest.mark.parametrize("jit_compile", [True, False])
def test_a_controller_with_amounts_moves_by_them(tmp_path, jit_compile):
    save_controller(tmp_path / "growing", _growing_act, state_size=1)
    controller = keras_lopt.Controller.load(str(tmp_path / "growing"))
    action, state = controller.act(tf.zeros([features.NUM_FEATURES]), tf.zeros([1]))
    assert list(action.numpy()) == list(actions.NOOP_ACTION) and float(state[0]) == 1.0
    x, y = _data()  # 8 steps per epoch
    opt = LHOPT(learning_rate=1e-4, policy=str(tmp_path / "growing"), control_every=4)
    _fit(_model(opt, jit_compile), 2, x, y)
    assert opt.hyperparameters["learning_rate"] == pytest.approx(1e-4 * 1.5**4, rel=1e-5)
    assert opt.hyperparameters["beta_1"] == pytest.approx(opt.initial_hyperparameters["beta_1"], rel=1e-6)


def _feature(observation, name):
    return observation[features.FEATURE_NAMES.index(name)]


def test_feature_names_are_unique_and_sized():
    assert len(set(features.FEATURE_NAMES)) == features.NUM_FEATURES
    assert len(set(features.CRITIC_FEATURE_NAMES)) == features.NUM_CRITIC_FEATURES
    # Raw losses never reach the controller, only their CDFs.
    assert "train_loss" not in features.FEATURE_NAMES
    assert "train_loss_cdf_h5" in features.FEATURE_NAMES


@pytest.mark.parametrize("jit_compile", [True, False])
def test_doubling_controller_inside_fit(doubling_controller, jit_compile):
    x, y = _data()  # 8 steps per epoch
    opt = LHOPT(learning_rate=1e-5, max_learning_rate=None, policy=str(doubling_controller), control_every=3)
    _fit(_model(opt, jit_compile), 3, x, y)
    control_steps = 24 // 3
    assert opt.hyperparameters["learning_rate"] == pytest.approx(1e-5 * 2**control_steps, rel=1e-5)
    others = {k: v for k, v in opt.hyperparameters.items() if k != "learning_rate"}
    assert others == pytest.approx({k: v for k, v in opt.initial_hyperparameters.items() if k in others})
    np.testing.assert_array_equal(opt.controller_state, [control_steps] * 2)
    previous = [_feature(opt.observation, f"previous_learning_rate_{c:g}") for c in actions.ACTION_HEADS[0].choices]
    assert previous[LR_DOUBLE] == 1.0 and sum(previous) == 1.0
    assert _feature(opt.observation, "learning_rate_log_relative") == pytest.approx(
        math.log(2) * (control_steps - 1), rel=1e-4
    )


def test_default_cadence_follows_total_steps_in_the_compiled_step(doubling_controller):
    x, y = _data()  # 8 steps per epoch
    opt = LHOPT(learning_rate=1e-5, max_learning_rate=None, policy=str(doubling_controller))
    assert opt.control_every == keras_lopt.control.FALLBACK_CONTROL_EVERY == 10
    model = _model(opt)
    _fit(model, 2, x, y)  # steps 1-16: the controller acts at step 10
    assert opt.hyperparameters["learning_rate"] == pytest.approx(1e-5 * 2, rel=1e-5)
    train_function = model.train_function
    opt.total_steps = 4 * keras_lopt.control.AUTO_CONTROL_STEPS  # every 4
    assert opt.control_every == 4
    _fit(model, 3, x, y)  # steps 17-40: at 20, 24, ..., 40
    assert model.train_function is train_function  # not retraced: the cadence is a variable
    assert opt.hyperparameters["learning_rate"] == pytest.approx(1e-5 * 2**7, rel=1e-5)
    assert opt.get_config()["control_every"] is None  # a reloaded optimizer keeps following total_steps
    assert LHOPT(total_steps=keras_lopt.control.AUTO_CONTROL_STEPS - 1).control_every == 1
    assert LHOPT(total_steps=20000).control_every == 20000 // keras_lopt.control.AUTO_CONTROL_STEPS
    assert LHOPT(total_steps=20000, control_every=7).control_every == 7


def test_learning_rate_stays_within_bounds(doubling_controller):
    x, y = _data()
    opt = LHOPT(learning_rate=0.3, max_learning_rate=None, policy=str(doubling_controller), control_every=1)
    _fit(_model(opt), 1, x, y)
    assert opt.hyperparameters["learning_rate"] == pytest.approx(actions.ACTION_HEADS[0].bounds[1])


def test_max_learning_rate_caps_an_in_graph_controller_under_xla(doubling_controller):
    x, y = _data()  # 8 steps per epoch: 8 doublings, 2**8 > 3
    opt = LHOPT(learning_rate=1e-3, max_learning_rate=3e-3, policy=str(doubling_controller), control_every=1)
    _fit(_model(opt, jit_compile=True), 1, x, y)
    assert opt.hyperparameters["learning_rate"] == pytest.approx(3e-3, rel=1e-6)


def test_spec_mismatch_is_one_clear_error(doubling_controller):
    metadata_path = doubling_controller / METADATA_FILE
    metadata = json.loads(metadata_path.read_text())
    metadata["feature_spec_version"] = 0
    metadata["feature_names"][3] = "something_else"
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="different feature/action spec") as info:
        LHOPT(policy=str(doubling_controller))
    message = str(info.value)
    assert "feature_spec_version 0" in message and "'something_else'" in message
    assert "\n" not in message


def test_directory_without_metadata_is_rejected(doubling_controller):
    (doubling_controller / METADATA_FILE).unlink()
    with pytest.raises(ValueError, match=f"no {METADATA_FILE}"):
        LHOPT(policy=str(doubling_controller))


def test_controller_needs_no_tfp_or_tf_agents(doubling_controller):
    import subprocess
    import sys

    code = (
        "import sys, keras_lopt\n"
        f"opt = keras_lopt.LHOPT(policy={str(doubling_controller)!r})\n"
        "assert not any(m.split('.')[0] in ('tensorflow_probability', 'tf_agents') for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _all_state(model):
    opt = model.optimizer
    return [keras.ops.convert_to_numpy(v) for v in model.weights + opt.variables]


@pytest.mark.parametrize("jit_compile", [True, False])
def test_save_and_load_with_controller(tmp_path, doubling_controller, jit_compile):
    x, y = _data()
    # The cap, 16x the start, is reached after the resume (8x at the save): the reloaded optimizer keeps
    # acting and keeps its own cap, not the default.
    make = lambda: LHOPT(learning_rate=1e-4, max_learning_rate=1.6e-3, policy=str(doubling_controller),
                         control_every=5)
    straight = _model(make(), jit_compile)
    _fit(straight, 2, x, y)
    straight.optimizer.observe_validation_loss(0.5)
    _fit(straight, 2, x, y)

    first = _model(make(), jit_compile)
    _fit(first, 2, x, y)
    first.optimizer.observe_validation_loss(0.5)
    straight_opt = straight.optimizer
    path = tmp_path / "model.keras"
    first.save(path)
    shutil.rmtree(doubling_controller)  # the .keras file must carry the controller

    resumed = keras.models.load_model(path)
    assert resumed.optimizer.policy.name == "doubling"
    _fit(resumed, 2, x, y)
    for a, b, v in zip(_all_state(straight), _all_state(resumed), straight.weights + straight_opt.variables):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=v.path)
    assert first.optimizer.hyperparameters["learning_rate"] == pytest.approx(1e-4 * 2 ** (16 // 5), rel=1e-5)
    assert resumed.optimizer.hyperparameters["learning_rate"] == pytest.approx(1e-4 * 16, rel=1e-5)


def test_external_control(tmp_path):
    x, y = _data()
    opt = LHOPT(policy="external", control_every=4, total_steps=16)
    model = _model(opt)
    np.testing.assert_array_equal(opt.observation, np.zeros(features.NUM_FEATURES))
    _fit(model, 1, x, y)  # 8 steps: control steps 4 and 8
    observation = opt.observation
    assert observation.shape == (features.NUM_FEATURES,)
    assert _feature(observation, "progress") == pytest.approx(0.5)
    assert _feature(observation, "total_steps_known") == 1.0
    assert _feature(observation, "train_loss_seen") == 1.0
    assert opt.critic_observation.shape == (features.NUM_CRITIC_FEATURES,)
    critic = dict(zip(features.CRITIC_FEATURE_NAMES, opt.critic_observation))
    assert critic["log_step"] == pytest.approx(math.log(8))
    assert critic["train_loss"] > 0

    action = list(actions.NOOP_ACTION)
    action[1] = 2  # 1 - beta_1 doubled
    opt.apply_action(np.array(action))
    assert opt.hyperparameters["beta_1"] == pytest.approx(0.8)
    _fit(model, 1, x, y)
    assert _feature(opt.observation, "previous_beta_1_2") == 1.0
    assert _feature(opt.observation, "beta_1_log_relative") == pytest.approx(math.log(2), rel=1e-5)
    assert _feature(opt.observation, "progress") == pytest.approx(1.0)


def test_reset_hyperparameters_moves_the_features_reference():
    x, y = _data()
    opt = LHOPT(policy="external", control_every=4, total_steps=16)
    model = _model(opt, jit_compile=True)
    _fit(model, 1, x, y)  # compiles the step with the constructor's values
    opt.reset_hyperparameters(learning_rate=0.05, beta_1=0.8)
    assert opt.hyperparameters["learning_rate"] == pytest.approx(0.05)
    assert opt.get_config()["learning_rate"] == pytest.approx(0.05)
    _fit(model, 1, x, y)
    # Measured from the new values, in the already compiled step.
    assert _feature(opt.observation, "learning_rate_log_relative") == pytest.approx(0.0, abs=1e-6)
    assert _feature(opt.observation, "beta_1_log_relative") == pytest.approx(0.0, abs=1e-6)
    opt.set_hyperparameters(learning_rate=0.1)  # a move, not a new start
    _fit(model, 1, x, y)
    assert _feature(opt.observation, "learning_rate_log_relative") == pytest.approx(math.log(2), rel=1e-5)
    with pytest.raises(ValueError, match="learning_rate must be a positive float"):
        opt.reset_hyperparameters(learning_rate=-1.0)


def _double_once_validation_loss_is_seen(observation, state):
    seen = observation[:, features.FEATURE_NAMES.index("val_loss_seen")] > 0.5
    double = list(actions.NOOP_ACTION)
    double[0] = LR_DOUBLE
    action = tf.where(seen[:, None], tf.constant([double], tf.int32), tf.constant([actions.NOOP_ACTION], tf.int32))
    return action, state


@pytest.mark.parametrize("trained_with_validation_loss", [True, False])
def test_controller_callback_passes_validation_loss_only_to_controllers_trained_with_it(
        tmp_path, trained_with_validation_loss):
    path = tmp_path / "validation"
    save_controller(path, _double_once_validation_loss_is_seen, state_size=1,
                    extra={} if trained_with_validation_loss else {"trained_with_validation_loss": False})
    opt = LHOPT(learning_rate=1e-5, max_learning_rate=None, policy=str(path), control_every=1)
    x, y = _data()  # 96 training rows after the split: 6 steps per epoch
    _model(opt).fit(x, y, batch_size=16, epochs=3, validation_split=0.25, shuffle=False, verbose=0,
                    callbacks=[keras_lopt.ControllerCallback()])
    assert opt.total_steps == 18
    # Epochs 2 and 3 see the validation loss of the epoch before, if it was passed on.
    expected = 1e-5 * 2**12 if trained_with_validation_loss else 1e-5
    assert opt.hyperparameters["learning_rate"] == pytest.approx(expected, rel=1e-5)


def _cosine_only_controller(path):
    """A controller that holds every head while its learning rate follows the cosine."""
    def hold(observation, state):
        return tf.tile(tf.constant([actions.NOOP_ACTION], tf.int32), [tf.shape(observation)[0], 1]), state

    save_controller(path, keras_lopt.controller.ScheduledLearningRate(hold, "cosine"), state_size=1,
                    extra={"learning_rate_schedule": "cosine"})
    return str(path)


def _warnings_of(fit):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit()
    return [str(w.message) for w in caught if "LHOPT" in str(w.message)]


def test_a_fit_past_the_end_of_the_run_warns_that_the_schedule_is_over(tmp_path):
    opt = LHOPT(policy=_cosine_only_controller(tmp_path / "cosine"), control_every=1)
    assert opt.policy.learning_rate_schedule == "cosine"
    x, y = _data()  # 8 steps per epoch
    model = _model(opt)
    callbacks = [keras_lopt.ControllerCallback()]
    assert _warnings_of(lambda: _fit(model, 2, x, y, callbacks=callbacks)) == []
    assert opt.total_steps == 16
    assert opt.hyperparameters["learning_rate"] == pytest.approx(1e-8)  # the cosine's end, at its bound
    (message,) = _warnings_of(lambda: _fit(model, 1, x, y, callbacks=callbacks))
    assert "starts at update 16" in message and "total_steps=16" in message
    assert "schedule has ended" in message and "1e-08" in message and "start_new_run()" in message


def test_a_fit_without_total_steps_warns_how_to_set_it(tmp_path):
    x, y = _data()
    opt = LHOPT(policy=_cosine_only_controller(tmp_path / "cosine"), control_every=1)
    (message,) = set(_warnings_of(lambda: _fit(_model(opt), 1, x, y)))  # once per trace
    assert "total_steps is not set" in message and "learning rate stays where it starts" in message
    assert "ControllerCallback()" in message
    assert opt.hyperparameters["learning_rate"] == pytest.approx(keras_lopt.lhopt.DEFAULTS["learning_rate"])


def test_controller_off_computes_nothing():
    opt = LHOPT(policy=None)
    with pytest.raises(ValueError, match='policy="external"'):
        opt.observation
    with pytest.raises(ValueError, match='policy="external"'):
        opt.observe_validation_loss(1.0)


def _numpy_statistics(g, m_hat, v, u, p, eps, step_size):
    def norm(a):
        return np.linalg.norm(a)

    def cos(a, b):
        return float(np.sum(a * b) / (norm(a) * norm(b)))

    def normal_cdf(z):
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    def log_ratio(a, b):  # clipped to +-20, as a zero norm would give -69
        return np.clip(math.log(max(a, 1e-30)) - math.log(max(b, 1e-30)), -20, 20)

    d = g.size
    cosines = [cos(g, m_hat), cos(g, p), cos(g, u)]
    return np.array(
        [
            np.mean(v > eps),
            np.mean(np.log(np.abs(u))),
            log_ratio(norm(m_hat), norm(g)),
            log_ratio(step_size * norm(u), norm(p)),
            log_ratio(norm(m_hat), norm(m_hat - g)),
            log_ratio(norm(p), norm(u)),
            *cosines,
            *[normal_cdf(math.sqrt(d) * c) for c in cosines],
        ]
    )


def test_features_on_a_hand_computable_case():
    """One 3x2 matrix, two eager steps with known gradients and losses."""
    p0 = np.array([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.25]])
    g1 = np.array([[0.1, 0.2], [-0.3, 0.05], [0.2, -0.1]])
    g2 = np.array([[-0.05, 0.3], [0.1, 0.1], [0.4, 0.2]])
    hp = dict(learning_rate=0.01, beta_1=0.5, beta_2=0.9, epsilon=0.12, weight_decay=0.1,
              clip_threshold=0.99, clip_ema=1.0)
    variable = keras.Variable(p0.astype(np.float32))
    opt = LHOPT(policy="external", control_every=1, total_steps=4, **hp)
    opt.build([variable])

    # By hand. clip_ema 1 makes the rolling max the current norm, so every
    # step clips by 0.99 G / (G + 1e-6).
    b1, b2, eps, wd = 0.5, 0.9, 0.12, 0.1
    g1_raw, g2_raw = g1, g2
    g1, g2 = (g * 0.99 * np.linalg.norm(g) / (np.linalg.norm(g) + 1e-6) for g in (g1, g2))
    # The statistics are read right after each update: new moments, new
    # parameters, and the direction and step size they give.
    m = (1 - b1) * g1
    v = np.abs(g1)
    bc1 = 1 - b1
    u1 = m / (v + eps) / bc1 + wd * p0
    mean_u = np.linalg.norm(u1)  # n / bn after the first step
    p1 = p0 - 0.01 * np.linalg.norm(p0) / mean_u * u1
    seen_u1 = m / bc1 / (v + eps) + wd * p1
    step_1 = 0.01 * np.linalg.norm(p1) / mean_u
    expected_1 = _numpy_statistics(g1, m / bc1, v, seen_u1, p1, eps, step_1)
    m = b1 * m + (1 - b1) * g2
    v = np.maximum(b2 * v, np.abs(g2))
    bc1 = bc1 * b1 + (1 - b1)
    u2 = m / (v + eps) / bc1 + wd * p1
    mean_u = 0.05 * (0.95 * np.linalg.norm(u1) + np.linalg.norm(u2)) / (0.05 * 1.95)
    p2 = p1 - 0.01 * np.linalg.norm(p1) / mean_u * u2
    seen_u2 = m / bc1 / (v + eps) + wd * p2
    step_2 = 0.01 * np.linalg.norm(p2) / mean_u
    expected_2 = _numpy_statistics(g2, m / bc1, v, seen_u2, p2, eps, step_2)

    observations = []
    for loss, g in ((4.0, g1_raw), (2.0, g2_raw)):
        opt.scale_loss(tf.constant(loss))
        opt.apply_gradients([(tf.constant(g, tf.float32), variable)])
        observations.append(opt.observation)
    for observation, expected in zip(observations, (expected_1, expected_2)):
        got = [_feature(observation, name) for name in features.STATISTICS[1:] if name in features.SHOWN]
        want = [e for name, e in zip(features.STATISTICS[1:], expected) if name in features.SHOWN]
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5)
        assert _feature(observation, "did_clip") == 1.0
    first, second = observations
    # log||p|| - log||u|| is shown only through its CDFs: 0.5 without history,
    # then 0 or 1 against a one-point history.
    assert _feature(first, "log_parameter_over_update_cdf_h5") == 0.5
    assert _feature(second, "log_parameter_over_update_cdf_h5") == float(expected_2[5] > expected_1[5])
    assert _feature(first, "progress") == 0.25 and _feature(second, "progress") == 0.5
    assert _feature(first, "train_loss_log_ratio") == 0.0  # no previous loss yet
    assert _feature(second, "train_loss_log_ratio") == pytest.approx(math.log(0.5))
    # The loss fell against a one-point history: its CDF is 0 at every horizon.
    assert [_feature(second, f"train_loss_cdf_h{h:g}") for h in features.HISTORY_HORIZONS] == [0.0] * 5
    param_ratio = math.tanh(math.log(np.linalg.norm(p2) / np.linalg.norm(p1)))
    assert _feature(second, "parameter_norm_log_ratio") == pytest.approx(param_ratio, abs=1e-5)
    step_ratio = math.tanh(math.log(step_2 * np.linalg.norm(seen_u2) / (step_1 * np.linalg.norm(seen_u1))))
    assert _feature(second, "step_norm_log_ratio") == pytest.approx(step_ratio, abs=1e-5)
    for name in ("val_loss_seen", "train_loss_is_nan", "train_loss_is_inf"):
        assert _feature(second, name) == 0.0


def test_validation_loss_features():
    opt = LHOPT(policy="external", control_every=1)
    variable = keras.Variable(np.ones((2, 2), np.float32))
    opt.build([variable])
    for value in (3.0, 2.0, float("nan")):
        opt.observe_validation_loss(value)
        opt.apply_gradients([(tf.ones((2, 2)), variable)])
    observation = opt.observation
    assert _feature(observation, "val_loss_seen") == 1.0
    assert _feature(observation, "val_loss_is_nan") == 1.0
    assert _feature(observation, "val_loss_cdf_h5") == 0.5  # NaN: no comparison
    opt.observe_validation_loss(1.0)
    opt.apply_gradients([(tf.ones((2, 2)), variable)])
    assert _feature(opt.observation, "val_loss_is_nan") == 0.0
    assert _feature(opt.observation, "val_loss_cdf_h5") < 0.01  # below 3 and 2


def _observations(loss_scale=1.0, parameter_scale=1.0, steps_per_epoch=8, epochs=4):
    """Observations of a bias-free two-layer model whose weights are stored
    `parameter_scale` times larger than they act, trained on a loss scaled by
    `loss_scale`."""

    class ScaledDense(keras.layers.Layer):
        def __init__(self, units, scale, **kwargs):
            super().__init__(**kwargs)
            self.units, self.scale = units, scale

        def build(self, shape):
            init = keras.initializers.GlorotUniform(seed=1)
            self.kernel = self.add_weight(
                shape=(shape[-1], self.units),
                initializer=lambda s, dtype: init(s, dtype) * self.scale,
            )

        def call(self, x):
            return x @ (self.kernel / self.scale)

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8,)), ScaledDense(16, parameter_scale), keras.layers.Activation("tanh"),
         ScaledDense(1, parameter_scale)]
    )
    opt = LHOPT(policy="external", control_every=4, total_steps=64, epsilon=1e-10, weight_decay=0.0)
    model.compile(opt, loss=lambda y, p: loss_scale * keras.ops.mean(keras.ops.square(y - p)), jit_compile=True)
    x, y = _data(16 * steps_per_epoch)
    observations = []
    for _ in range(epochs):
        _fit(model, 1, x, y)
        observations.append(opt.observation)
    return np.array(observations)


@pytest.mark.parametrize("scales", [dict(loss_scale=1000.0), dict(parameter_scale=1000.0)])
def test_observation_is_scale_invariant(scales):
    base = _observations()
    scaled = _observations(**scales)
    difference = np.abs(base - scaled)
    worst = np.unravel_index(np.argmax(difference), difference.shape)
    assert difference.max() < 0.01, (
        f"{features.FEATURE_NAMES[worst[1]]} at epoch {worst[0]}: {base[worst]} vs {scaled[worst]}"
    )


def test_mirrored_strategy_with_controller(doubling_controller, mirrored_strategy):
    x, y = _data()

    def optimizer():
        return LHOPT(learning_rate=1e-4, policy=str(doubling_controller), control_every=3, total_steps=16)

    single = _model(optimizer(), jit_compile=False)
    _fit(single, 2, x, y)
    strategy = mirrored_strategy
    with strategy.scope():
        mirrored = _model(optimizer(), jit_compile=False)
    _fit(mirrored, 2, x, y)
    # Loss features use the mean loss over both replicas, so every feature
    # matches the single-device run.
    a, b = single.optimizer.observation, mirrored.optimizer.observation
    np.testing.assert_allclose(a, b, atol=2e-3)
    assert _feature(mirrored.optimizer.observation, "train_loss_seen") == 1.0
    assert mirrored.optimizer.hyperparameters == pytest.approx(single.optimizer.hyperparameters)
    for variable in mirrored.optimizer.variables:
        copies = [c.numpy() for c in variable.value.values]
        np.testing.assert_array_equal(copies[0], copies[1], err_msg=variable.path)


def test_mixed_precision_with_controller(doubling_controller):
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        x, y = _data()
        opt = LHOPT(learning_rate=1e-5, max_learning_rate=None, policy=str(doubling_controller),
                    control_every=4)
        model = _model(opt)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        _fit(model, 2, x, y)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    # The loss scale's first steps overflow; LossScaleOptimizer skips them.
    updates = int(opt.iterations.numpy())
    assert 8 <= updates <= 16
    assert opt.hyperparameters["learning_rate"] == pytest.approx(1e-5 * 2 ** (updates // 4), rel=1e-4)
    assert np.isfinite(opt.observation).all()
