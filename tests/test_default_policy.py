"""The packaged default controller: what `keras_lopt.LHOPT()` runs with."""

import importlib.resources
import pathlib

import keras
import numpy as np
import pytest

import keras_lopt
from keras_lopt import LHOPT, features
from keras_lopt.controller import Controller
from keras_helpers import regression_data as _data

DEFAULT = pathlib.Path(str(importlib.resources.files("keras_lopt.saved_policies"))) / "default"


def test_no_arguments_means_the_packaged_default_controller():
    opt = LHOPT()
    assert isinstance(opt.policy, Controller)
    metadata = opt.policy.metadata
    assert metadata["feature_spec_version"] == features.FEATURE_SPEC_VERSION
    assert metadata["feature_names"] == list(features.FEATURE_NAMES)
    # Meta-trained with PPO, and the training summary travels with it.
    extra = metadata["extra"]
    assert extra["iterations"] > 0 and extra["episodes"] > 0
    assert extra["trained_with_validation_loss"] is False
    assert (DEFAULT / "tf_agents_policy" / "saved_model.pb").is_file()


def test_default_controller_steers_a_compiled_fit_and_survives_save_and_load(tmp_path):
    x, y = _data(256)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1)])
    opt = LHOPT()
    model.compile(optimizer=opt, loss="mse", jit_compile=True)
    history = model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[keras_lopt.ControllerCallback()])
    losses = history.history["loss"]
    assert opt.total_steps == 64
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    # The controller acted: some hyperparameter left its initial value.
    moved = {name: value for name, value in opt.hyperparameters.items()
             if value != pytest.approx(opt.initial_hyperparameters[name], rel=1e-6)}
    assert moved, opt.hyperparameters

    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert restored.optimizer.hyperparameters == pytest.approx(opt.hyperparameters)
    for fitted in (model, restored):
        fitted.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), restored.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
