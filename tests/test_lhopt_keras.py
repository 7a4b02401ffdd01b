"""LHOPT inside Keras: fit, serialization, resume, distribution, mixed precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_lopt import LHOPT
from keras_helpers import compiled_model as _model, fit as _fit, regression_data as _data


@pytest.mark.parametrize("jit_compile", [True, False])
def test_fit_reduces_loss(jit_compile):
    x, y = _data()
    model = _model(jit_compile=jit_compile)
    history = _fit(model, 8, x, y).history["loss"]
    assert history[-1] < 0.2 * history[0]
    assert int(model.optimizer.iterations.numpy()) == 8 * 8


def test_jit_and_eager_graph_agree():
    x, y = _data()
    jit, plain = _model(jit_compile=True), _model(jit_compile=False)
    _fit(jit, 2, x, y)
    _fit(plain, 2, x, y)
    for a, b in zip(jit.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_config_round_trip():
    opt = LHOPT(learning_rate=3e-3, beta_1=0.8, weight_decay=0.0, clip_threshold=0.5,
                max_learning_rate=0.1, total_steps=1000, control_every=5, global_clipnorm=2.0,
                name="mine")
    opt.set_hyperparameters(learning_rate=0.5)  # current values are state, not config
    config = opt.get_config()
    assert config["learning_rate"] == 3e-3
    assert config["beta_1"] == 0.8 and config["weight_decay"] == 0.0
    assert config["total_steps"] == 1000 and config["control_every"] == 5
    assert config["max_learning_rate"] == 0.1
    clone = LHOPT.from_config(config)
    assert clone.get_config() == config
    assert clone.hyperparameters["learning_rate"] == pytest.approx(3e-3)
    revived = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(revived, LHOPT) and revived.get_config() == config


@pytest.mark.parametrize("jit_compile", [True, False])
def test_saved_model_resumes_exactly(tmp_path, jit_compile):
    x, y = _data()
    uninterrupted = _model(jit_compile=jit_compile)
    _fit(uninterrupted, 4, x, y)

    first_half = _model(jit_compile=jit_compile)
    _fit(first_half, 2, x, y)
    first_half.optimizer.set_hyperparameters(beta_1=0.9)  # a no-op write, state must survive
    path = str(tmp_path / "m.keras")
    first_half.save(path)
    resumed = keras.models.load_model(path)
    assert isinstance(resumed.optimizer, LHOPT)
    for a, b in zip(first_half.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    _fit(resumed, 2, x, y)

    for a, b in zip(uninterrupted.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(uninterrupted.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_changed_hyperparameters_survive_save(tmp_path):
    x, y = _data()
    model = _model()
    _fit(model, 1, x, y)
    model.optimizer.set_hyperparameters(learning_rate=0.25, beta_2=0.5)
    path = str(tmp_path / "m.keras")
    model.save(path)
    revived = keras.models.load_model(path).optimizer
    assert revived.hyperparameters == pytest.approx(model.optimizer.hyperparameters)
    assert revived.initial_hyperparameters == model.optimizer.initial_hyperparameters


def test_mirrored_strategy_matches_single_device(mirrored_strategy):
    # jit_compile=False: XLA cannot compile one step across two logical CPU
    # devices (keras.optimizers.Adam fails there the same way).
    x, y = _data()
    single = _model(jit_compile=False)
    _fit(single, 2, x, y)

    strategy = mirrored_strategy
    with strategy.scope():
        mirrored = _model(optimizer=LHOPT(learning_rate=1e-2, policy=None), jit_compile=False)
    _fit(mirrored, 2, x, y)
    for a, b in zip(single.get_weights(), mirrored.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(single.optimizer.variables, mirrored.optimizer.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    # Every replica holds the same weights and optimizer state.
    for variable in mirrored.trainable_variables + mirrored.optimizer.variables:
        copies = [c.numpy() for c in variable.value.values]
        assert len(copies) == 2
        np.testing.assert_array_equal(copies[0], copies[1])


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    yield
    keras.mixed_precision.set_dtype_policy("float32")


@pytest.mark.parametrize("jit_compile", [True, False])
def test_mixed_precision(mixed_float16, jit_compile):
    x, y = _data()
    model = _model(jit_compile=jit_compile)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, LHOPT)
    history = _fit(model, 8, x, y).history["loss"]
    assert history[-1] < 0.3 * history[0]
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_loss_scale_overflow_skips_inner_step(mixed_float16):
    x, y = _data()
    inner = LHOPT(learning_rate=1e-2, policy=None)
    # A loss scale of 2**30 overflows float16 gradients, so the first steps are skipped.
    model = _model(optimizer=keras.optimizers.LossScaleOptimizer(inner, initial_scale=2.0**30))
    before = [w.copy() for w in model.get_weights()]
    model.fit(x[:16], y[:16], batch_size=16, epochs=1, verbose=0)
    assert int(inner.iterations.numpy()) == 0
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    _fit(model, 4, x, y)
    assert int(inner.iterations.numpy()) > 0


@pytest.mark.parametrize("jit_compile", [True, False])
def test_embedding_sparse_gradients(jit_compile):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, size=(256, 6))
    labels = (tokens % 2).mean(axis=1, keepdims=True).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((6,), dtype="int32"),
        keras.layers.Embedding(50, 8),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer=LHOPT(learning_rate=1e-2, policy=None), loss="mse", jit_compile=jit_compile)
    table = model.layers[0].embeddings.numpy().copy()
    history = model.fit(tokens, labels, batch_size=32, epochs=10, verbose=0).history["loss"]
    assert history[-1] < 0.5 * history[0]
    assert not np.allclose(table, model.layers[0].embeddings.numpy())



@pytest.mark.parametrize("keras_kwargs", [dict(use_ema=True), dict(global_clipnorm=0.5)])
def test_keras_optimizer_options_train(keras_kwargs):
    x, y = _data()
    model = _model(optimizer=LHOPT(learning_rate=1e-2, policy=None, **keras_kwargs))
    history = _fit(model, 6, x, y).history["loss"]
    assert history[-1] < 0.5 * history[0]


def test_gradient_accumulation_applies_the_mean_gradient():
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 2)).astype(np.float32)
    accumulated, direct = keras.Variable(start), keras.Variable(start)
    accumulating_opt, direct_opt = LHOPT(gradient_accumulation_steps=2, policy=None), LHOPT(policy=None)

    @tf.function(jit_compile=True)
    def accumulate(g):
        accumulating_opt.apply([g], [accumulated])

    for _ in range(3):
        g1, g2 = (tf.constant(rng.normal(size=(3, 2)).astype(np.float32)) for _ in range(2))
        accumulate(g1)
        accumulate(g2)
        direct_opt.apply([(g1 + g2) / 2], [direct])
    np.testing.assert_allclose(accumulated.numpy(), direct.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(direct.numpy(), start)
