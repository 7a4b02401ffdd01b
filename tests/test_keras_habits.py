"""Everyday Keras workflows with LHOPT, with its controller off and on: each does the right thing or says why."""

import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_lopt
from keras_lopt import LHOPT
from keras_helpers import compiled_model as _model, fit as _fit, regression_data as _data

# 128 rows, batch 16: 8 steps an epoch.
STEPS_PER_EPOCH = 8


def _lhopt_warnings(run):
    """(message, filename) of the LHOPT warnings `run()` gives."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    return [(str(w.message), w.filename) for w in caught if "LHOPT" in str(w.message)]


def _controller_on(**kwargs):
    return LHOPT(**kwargs)  # the packaged default controller


def _modes():
    return pytest.mark.parametrize("policy", [None, "default"], ids=["controller_off", "controller_on"])


def test_optimizers_are_numbered_as_keras_numbers_them():
    names = [LHOPT(policy=None).name for _ in range(3)]
    assert len(set(names)) == 3 and all(name.startswith("lhopt") for name in names)
    assert LHOPT(policy=None, name="mine").name == "mine"


@pytest.mark.parametrize("route", ["from_config", "serialize", "get"])
def test_a_controller_on_lhopt_rebuilt_from_its_config_trains(route):
    original = _controller_on(total_steps=2 * STEPS_PER_EPOCH)
    config = original.get_config()
    rebuilt = {
        "from_config": lambda: LHOPT.from_config(config),
        "serialize": lambda: keras.optimizers.deserialize(keras.optimizers.serialize(original)),
        "get": lambda: keras.optimizers.get(keras.optimizers.serialize(original)),
    }[route]()
    assert isinstance(rebuilt, LHOPT) and rebuilt.get_config() == config
    x, y = _data()
    # The controller is loaded lazily, at the first step, inside the compiled step.
    _fit(_model(rebuilt, jit_compile=True), 2, x, y)
    _fit(_model(original, jit_compile=True), 2, x, y)
    assert rebuilt.hyperparameters == pytest.approx(original.hyperparameters, rel=1e-5)
    assert rebuilt.hyperparameters["learning_rate"] < 0.1 * rebuilt.initial_hyperparameters["learning_rate"]


def test_mirrored_strategy_with_the_default_controller(mirrored_strategy, tmp_path):
    # jit_compile=False: XLA cannot compile one step across two logical CPU devices (nor can it for Adam).
    x, y = _data()
    single = _model(_controller_on(total_steps=2 * STEPS_PER_EPOCH), jit_compile=False)
    _fit(single, 2, x, y)
    with mirrored_strategy.scope():
        mirrored = _model(_controller_on(total_steps=2 * STEPS_PER_EPOCH), jit_compile=False)
    _fit(mirrored, 2, x, y)
    for a, b in zip(single.get_weights(), mirrored.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert mirrored.optimizer.hyperparameters == pytest.approx(single.optimizer.hyperparameters, rel=1e-3)
    # A model saved with its controller loads inside the scope too, and trains on.
    path = str(tmp_path / "m.keras")
    mirrored.save(path)
    with mirrored_strategy.scope():
        loaded = keras.models.load_model(path)
    loaded.optimizer.start_new_run(total_steps=STEPS_PER_EPOCH)
    _fit(loaded, 1, x, y)
    assert all(np.isfinite(w).all() for w in loaded.get_weights())


@_modes()
def test_raw_tensorflow_variables_of_any_rank_train_like_keras_variables(policy):
    values = [np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), np.arange(4, dtype=np.float32)]
    gradients = [tf.constant(np.cos(v) + 0.5) for v in values]
    raw = [tf.Variable(v) for v in values]
    wrapped = [keras.Variable(v) for v in values]
    for variables in (raw, wrapped):
        optimizer = LHOPT(policy=policy, total_steps=10, control_every=1)
        for _ in range(3):
            optimizer.observe_training_loss(1.0)
            optimizer.apply_gradients(zip(gradients, variables))
    for a, b in zip(raw, wrapped):
        np.testing.assert_allclose(a.numpy(), keras.ops.convert_to_numpy(b), rtol=1e-6)
        assert not np.allclose(a.numpy(), values[0] if a.shape == (3, 4) else values[1])


@_modes()
def test_assigning_the_learning_rate_sets_the_current_rate(policy, tmp_path):
    x, y = _data()
    model = _model(LHOPT(policy=policy, total_steps=2 * STEPS_PER_EPOCH))
    _fit(model, 1, x, y)
    optimizer = model.optimizer
    count = len(optimizer.variables)
    optimizer.learning_rate = 0.005
    assert optimizer.hyperparameters["learning_rate"] == pytest.approx(0.005)
    assert float(optimizer.learning_rate) == pytest.approx(0.005)
    assert len(optimizer.variables) == count  # still one of the optimizer's variables: saved and restored
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert keras.models.load_model(path).optimizer.hyperparameters["learning_rate"] == pytest.approx(0.005)
    with pytest.raises(ValueError, match="learning_rate must be a positive float"):
        optimizer.learning_rate = -1.0
    with pytest.raises(ValueError, match="schedules and callables are not supported"):
        optimizer.learning_rate = keras.optimizers.schedules.ExponentialDecay(0.01, 10, 0.9)
    assert optimizer.hyperparameters["learning_rate"] == pytest.approx(0.005)


def test_reduce_lr_on_plateau_cuts_the_rate_the_controller_moves_on_from():
    x, y = _data()
    # min_delta so large that every epoch after the first (which improves on nothing) is a plateau: halved once.
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=1e9, min_lr=0)
    halved = LHOPT(max_learning_rate=None, control_every=1000)  # the controller never acts in these 16 steps
    _fit(_model(halved), 2, x, y, callbacks=[plateau, keras_lopt.ControllerCallback()])
    assert halved.hyperparameters["learning_rate"] == pytest.approx(0.5 * halved.initial_hyperparameters[
        "learning_rate"], rel=1e-5)


def test_learning_rate_scheduler_drives_lhopt_without_a_controller():
    x, y = _data()
    rates = []
    optimizer = LHOPT(policy=None)

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            rates.append(optimizer.hyperparameters["learning_rate"])

    schedule = keras.callbacks.LearningRateScheduler(lambda epoch, rate: 0.01 / (epoch + 1))
    _fit(_model(optimizer), 3, x, y, callbacks=[schedule, Record()])
    assert rates == pytest.approx([0.01, 0.005, 0.01 / 3], rel=1e-5)


def test_gradient_accumulation_plans_the_run_in_updates():
    x, y = _data()
    optimizer = _controller_on(gradient_accumulation_steps=2)
    _fit(_model(optimizer), 2, x, y, callbacks=[keras_lopt.ControllerCallback()])
    assert optimizer.total_steps == 2 * STEPS_PER_EPOCH // 2
    assert optimizer.run_steps == optimizer.total_steps  # the schedule ran to its end
    assert optimizer.observation[keras_lopt.features.PROGRESS] == pytest.approx(1.0)


def _custom_loop(optimizer, steps, scale_loss):
    x, y = _data()
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    for step in range(steps):
        with tf.GradientTape() as tape:
            loss = keras.losses.mean_squared_error(y[16 * step:16 * (step + 1)], model(x[16 * step:16 * (step + 1)]))
            loss = tf.reduce_mean(loss)
            if scale_loss:
                loss = optimizer.scale_loss(loss)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))


def test_a_custom_loop_that_hides_the_loss_is_told_once_at_its_own_line():
    optimizer = _controller_on(total_steps=4, control_every=1)
    (only,) = _lhopt_warnings(lambda: _custom_loop(optimizer, 4, scale_loss=False))
    message, filename = only
    assert "sees no training loss" in message and "optimizer.scale_loss(loss)" in message
    assert filename == __file__  # the user's line, not Keras'
    assert optimizer.observation[keras_lopt.features.FEATURE_NAMES.index("train_loss_seen")] == 0.0

    seen = _controller_on(total_steps=4, control_every=1)
    assert _lhopt_warnings(lambda: _custom_loop(seen, 4, scale_loss=True)) == []
    assert seen.observation[keras_lopt.features.FEATURE_NAMES.index("train_loss_seen")] == 1.0


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    yield
    keras.mixed_precision.set_dtype_policy("float32")


def test_under_mixed_precision_the_callback_passes_the_loss_on(mixed_float16):
    x, y = _data()
    seen = _controller_on(control_every=1)
    model = _model(seen)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert _lhopt_warnings(lambda: _fit(model, 1, x, y, callbacks=[keras_lopt.ControllerCallback()])) == []
    assert seen.observation[keras_lopt.features.FEATURE_NAMES.index("train_loss_seen")] == 1.0

    unseen = _controller_on(control_every=1, total_steps=STEPS_PER_EPOCH)
    messages = [m for m, _ in _lhopt_warnings(lambda: _fit(_model(unseen), 1, x, y))]
    assert len(messages) == 1 and "LossScaleOptimizer" in messages[0]


def test_data_of_unknown_length_is_told_what_to_pass():
    x, y = _data()

    def batches():
        for i in range(0, len(x), 16):
            yield x[i:i + 16], y[i:i + 16]

    dataset = tf.data.Dataset.from_generator(
        batches, output_signature=(tf.TensorSpec((None, 8), tf.float32), tf.TensorSpec((None, 1), tf.float32)))
    optimizer = _controller_on()
    model = _model(optimizer)
    found = _lhopt_warnings(lambda: model.fit(dataset, epochs=1, verbose=0, shuffle=False,
                                              callbacks=[keras_lopt.ControllerCallback()]))
    (message,) = [m for m, _ in found]  # the callback's, not also LHOPT's "pass the callback"
    assert "cannot plan" in message and "steps_per_epoch" in message
    assert optimizer.total_steps is None
    model.fit(dataset.repeat(), epochs=1, steps_per_epoch=8, verbose=0, shuffle=False, callbacks=[keras_lopt.ControllerCallback()])
    assert optimizer.total_steps == 8 + 8  # planned from the 8 updates the run had made


def test_training_past_the_planned_run_warns_and_start_new_run_trains_on(tmp_path):
    x, y = _data()
    model = _model(_controller_on())
    _fit(model, 2, x, y, callbacks=[keras_lopt.ControllerCallback()])
    optimizer = model.optimizer
    assert optimizer.total_steps == optimizer.run_steps == 2 * STEPS_PER_EPOCH
    ended = optimizer.hyperparameters["learning_rate"]
    assert ended < 1e-6  # the cosine frame ran to its end

    # Fine-tuning the saved model without the callback: told at the first step.
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    (message,) = [m for m, _ in _lhopt_warnings(lambda: _fit(loaded, 1, x, y))]
    assert "at or past its planned end" in message and "start_new_run()" in message
    assert loaded.optimizer.hyperparameters["learning_rate"] == pytest.approx(ended, rel=1e-3)

    # One line to train on: a new run, planned by the callback from the next fit.
    loaded.optimizer.start_new_run()
    assert loaded.optimizer.run_steps == 0 and loaded.optimizer.total_steps is None
    assert loaded.optimizer.hyperparameters["learning_rate"] == pytest.approx(1e-2)
    before = loaded.evaluate(x, y, verbose=0)
    assert _lhopt_warnings(lambda: _fit(loaded, 1, x, y, callbacks=[keras_lopt.ControllerCallback()])) == []
    assert loaded.optimizer.total_steps == STEPS_PER_EPOCH and loaded.optimizer.run_steps == STEPS_PER_EPOCH
    assert loaded.evaluate(x, y, verbose=0) < before
    assert loaded.optimizer.hyperparameters["learning_rate"] < 1e-6  # annealed again


def test_early_stopping_is_told_the_schedule_did_not_finish():
    x, y = _data()
    optimizer = _controller_on()
    # The first epoch improves on nothing; the second, by less than min_delta, stops the fit.
    stop = keras.callbacks.EarlyStopping(monitor="loss", min_delta=1e9, patience=0)
    found = _lhopt_warnings(lambda: _fit(_model(optimizer), 5, x, y,
                                         callbacks=[stop, keras_lopt.ControllerCallback()]))
    (message,) = [m for m, _ in found]
    assert optimizer.run_steps == 2 * STEPS_PER_EPOCH
    assert f"stopped at update {2 * STEPS_PER_EPOCH} of the {5 * STEPS_PER_EPOCH}" in message
    assert "EarlyStopping" in message


def test_load_model_without_the_import_names_the_package_in_a_short_message(tmp_path):
    # Keras imports only its own packages while loading, so a fresh process that skipped `import keras_lopt`
    # gets Keras' "Could not locate class" error: its config dump must stay short enough to read.
    model = _model(_controller_on())
    _fit(model, 1, *_data(), callbacks=[keras_lopt.ControllerCallback()])
    model.save(tmp_path / "m.keras")
    script = (f"import keras\ntry:\n    keras.models.load_model({str(tmp_path / 'm.keras')!r})\n"
              f"except TypeError as error:\n    print(error)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    message = run.stdout.strip()
    assert "Could not locate class 'LHOPT'" in message and "'registered_name': 'keras_lopt>LHOPT'" in message
    assert len(message) < 1500, len(message)


def test_a_config_holding_the_whole_controller_record_still_loads():
    original = _controller_on()
    config = original.get_config()
    config["policy"] = {"source": "default", "metadata": original.policy.metadata}  # as older saves hold it
    rebuilt = LHOPT.from_config(config)
    assert rebuilt.policy.metadata == original.policy.metadata
    assert rebuilt.policy.learning_rate_schedule == "cosine"


def test_a_config_for_another_feature_spec_is_refused_at_once():
    config = _controller_on().get_config()
    config["policy"]["feature_spec_version"] = 99
    with pytest.raises(ValueError, match="feature_spec_version 99 .expected 1.*Install the keras_lopt version"):
        LHOPT.from_config(config)
