"""The inner update, step by step, against the NumPy reference."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_lopt import LHOPT
from keras_lopt.hyperparameters import DEFAULTS
from reference import ReferenceLHOPT

SHAPES = [(5, 4), (4,), (2, 3, 3), ()]


def _setup(seed=0, **hyperparameters):
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
    variables = [keras.Variable(p) for p in params]
    hyperparameters = DEFAULTS | hyperparameters  # the reference's own defaults are the paper's
    return rng, variables, LHOPT(**hyperparameters, policy=None), ReferenceLHOPT(params, **hyperparameters)


def _grads(rng, scale=1.0):
    return [(scale * rng.normal(size=s)).astype(np.float32) for s in SHAPES]


def _assert_close(variables, ref):
    for variable, expected in zip(variables, ref.params):
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_matches_reference_while_hyperparameters_change():
    rng, variables, opt, ref = _setup(learning_rate=3e-2)
    schedule = {
        3: dict(learning_rate=1e-2, beta_1=0.5, epsilon=1e-3),
        6: dict(beta_2=0.9, weight_decay=0.1, clip_threshold=0.3),
        9: dict(clip_ema=0.5, update_norm_ema=0.5, learning_rate=5e-2, beta_1=0.99),
    }
    clipped = []
    for step in range(12):
        if step in schedule:
            opt.set_hyperparameters(**schedule[step])
            ref.hp.update(schedule[step])
        # Occasional large gradients make the clipping both fire and not fire.
        grads = _grads(rng, scale=20.0 if step in (2, 7) else 1.0)
        opt.apply([tf.constant(g) for g in grads], variables)
        ref.step(grads)
        _assert_close(variables, ref)
        assert float(opt._did_clip.numpy()) == ref.did_clip
        clipped.append(ref.did_clip)
        np.testing.assert_allclose(opt._bias_correction_1.numpy(), ref.bc1, rtol=1e-6)
        np.testing.assert_allclose(opt._gradient_norm_max.numpy(), ref.R, rtol=1e-6)
    assert 0 < sum(clipped) < len(clipped)


def test_first_step_by_hand():
    # Step 1: R = G, so gradients are clipped to 0.8 G; bc1 = 1 - beta_1, so
    # u = g' / (|g'| + eps) + wd * p, close to sign(g) + wd * p.
    p0 = np.array([1.0, -2.0, 0.5], np.float32)
    g = np.array([0.3, -0.4, 0.0], np.float32)
    variable = keras.Variable(p0)
    opt = LHOPT(learning_rate=0.1, epsilon=1e-6, weight_decay=0.01, policy=None)
    opt.apply([tf.constant(g)], [variable])
    clipped = g * 0.8 * 0.5 / (0.5 + 1e-6)
    u = clipped / (np.abs(clipped) + 1e-6) + 0.01 * p0
    np.testing.assert_allclose(variable.numpy(), p0 - 0.1 * u, rtol=1e-6)
    np.testing.assert_allclose(variable.numpy(), [0.899, -1.898, 0.4995], atol=1e-5)


def test_trust_ratio_scales_matrices_only():
    matrix = keras.Variable(np.full((2, 2), 3.0, np.float32))
    vector = keras.Variable(np.full((4,), 3.0, np.float32))
    opt = LHOPT(learning_rate=0.1, weight_decay=0.0, policy=None)
    grad = tf.ones((2, 2)), tf.ones((4,))
    opt.apply(list(grad), [matrix, vector])
    # u is ~1 everywhere: ||u|| = 2 for both, ||p|| = 6. The matrix steps by
    # lr * 6 / 2 * u, the vector by lr * u.
    np.testing.assert_allclose(matrix.numpy(), 3.0 - 0.1 * 3.0, rtol=1e-5)
    np.testing.assert_allclose(vector.numpy(), 3.0 - 0.1, rtol=1e-5)


def test_sparse_gradients_match_dense():
    rng = np.random.default_rng(1)
    table = rng.normal(size=(6, 3)).astype(np.float32)
    sparse_var, dense_var = keras.Variable(table), keras.Variable(table)
    sparse_opt, dense_opt = LHOPT(policy=None), LHOPT(policy=None)
    for _ in range(3):
        rows = rng.normal(size=(3, 3)).astype(np.float32)
        indices = tf.constant([0, 4, 0])  # a repeated row is summed
        sparse = tf.IndexedSlices(tf.constant(rows), indices, tf.constant([6, 3]))
        sparse_opt.apply([sparse], [sparse_var])
        dense_opt.apply([tf.convert_to_tensor(sparse)], [dense_var])
    np.testing.assert_allclose(sparse_var.numpy(), dense_var.numpy(), rtol=1e-6)
    assert not np.allclose(sparse_var.numpy(), table)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_step_touches_nothing(bad):
    rng, variables, opt, _ = _setup()
    opt.apply([tf.constant(g) for g in _grads(rng)], variables)
    before = [v.numpy().copy() for v in opt.variables if v is not opt.iterations]
    weights = [v.numpy().copy() for v in variables]
    grads = _grads(rng)
    grads[1][2] = bad

    @tf.function(jit_compile=True)
    def step(gs):
        opt.apply(gs, variables)

    step([tf.constant(g) for g in grads])
    after = [v.numpy() for v in opt.variables if v is not opt.iterations]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    for w, v in zip(weights, variables):
        np.testing.assert_array_equal(w, v.numpy())
    # A later finite step trains again.
    opt.apply([tf.constant(g) for g in _grads(rng)], variables)
    assert not np.array_equal(weights[0], variables[0].numpy())


def test_excluded_variables_get_no_weight_decay():
    bias = keras.Variable(np.ones(3, np.float32), name="bias")
    opt = LHOPT(learning_rate=0.1, weight_decay=0.5, policy=None)
    opt.exclude_from_weight_decay(var_names=["bias"])
    opt.apply([tf.zeros(3)], [bias])
    np.testing.assert_array_equal(bias.numpy(), np.ones(3))


def test_hyperparameters_report_current_values():
    opt = LHOPT(learning_rate=0.01, beta_1=0.8, policy=None)
    hp = opt.hyperparameters
    assert set(hp) == {"learning_rate", "beta_1", "beta_2", "epsilon", "weight_decay",
                       "clip_threshold", "clip_ema", "update_norm_ema"}
    assert all(isinstance(v, float) for v in hp.values())
    assert hp["learning_rate"] == pytest.approx(0.01)
    assert hp["beta_1"] == pytest.approx(0.8)
    assert hp["beta_2"] == pytest.approx(0.99)
    opt.set_hyperparameters(beta_2=0.5, learning_rate=0.2)
    assert opt.hyperparameters["beta_2"] == pytest.approx(0.5)
    assert opt.hyperparameters["learning_rate"] == pytest.approx(0.2)
    # Keras' own learning-rate setter (used by callbacks) drives the same variable.
    opt.learning_rate = 0.3
    assert opt.hyperparameters["learning_rate"] == pytest.approx(0.3)
    assert opt.initial_hyperparameters["learning_rate"] == 0.01
