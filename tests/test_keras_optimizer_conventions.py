"""The generic cases of Keras' own optimizer tests (keras/src/optimizers/optimizer_test.py), run against LHOPT
with its controller off and on. Where Keras checks SGD's exact numbers, these check the same property against
LHOPT itself (for example: accumulating three gradients equals one step on their mean)."""

import pickle
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_lopt
from keras_lopt import LHOPT

modes = pytest.mark.parametrize("policy", [None, "default"], ids=["controller_off", "controller_on"])


def _optimizer(policy, **kwargs):
    return LHOPT(policy=policy, total_steps=20, control_every=2, **kwargs)


def _apply(optimizer, pairs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the controller sees no loss here; that warning is tested elsewhere
        optimizer.apply_gradients(pairs)


def _ones():
    return tf.ones((2, 2))


@modes
def test_iterations_counter(policy):
    v = keras.Variable([[1.0, 2.0], [3.0, 4.0]])
    optimizer = _optimizer(policy)
    assert int(optimizer.iterations) == 0
    _apply(optimizer, [(_ones(), v)])
    _apply(optimizer, [(_ones(), v)])
    assert int(optimizer.iterations) == 2


@modes
def test_empty_gradients(policy):
    v, v2 = keras.Variable([[3.0, 4.0], [5.0, 6.0]]), keras.Variable([[3.0, 4.0], [5.0, 6.0]])
    with pytest.raises(ValueError, match="No gradients provided for any variable"):
        _optimizer(policy).apply_gradients([(None, v)])
    optimizer = _optimizer(policy)
    with pytest.warns(UserWarning, match="Gradients do not exist"):
        optimizer.apply_gradients([(None, v), (_ones(), v2)])
    np.testing.assert_array_equal(v.numpy(), [[3.0, 4.0], [5.0, 6.0]])
    assert np.all(v2.numpy() < [[3.0, 4.0], [5.0, 6.0]])


@modes
def test_clip_arguments(policy):
    assert _optimizer(policy, clipnorm=0.1).clipnorm == 0.1
    assert _optimizer(policy, clipvalue=0.1).clipvalue == 0.1
    assert _optimizer(policy, global_clipnorm=0.1).global_clipnorm == 0.1
    with pytest.raises(ValueError, match="Only one of `clipnorm`, `clipvalue` and `global_clipnorm`"):
        _optimizer(policy, clipnorm=0.1, clipvalue=0.1)


@modes
def test_gradient_clipping(policy):
    clipped = _optimizer(policy, clipnorm=1)._clip_gradients([tf.constant([100.0, 100.0])])
    np.testing.assert_allclose(clipped[0], [2**0.5 / 2, 2**0.5 / 2], rtol=1e-6)
    clipped = _optimizer(policy, clipvalue=1)._clip_gradients([tf.constant([100.0, 100.0])])
    np.testing.assert_allclose(clipped[0], [1.0, 1.0])
    grad = np.array([50.0, 100.0], "float32")
    clipped = _optimizer(policy, global_clipnorm=1)._clip_gradients([tf.constant(grad)])
    np.testing.assert_allclose(clipped[0], grad / np.linalg.norm(grad), rtol=1e-6)


@modes
def test_ema(policy):
    v = keras.Variable([[3.0, 4.0], [5.0, 6.0]])
    optimizer = _optimizer(policy, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3)
    _apply(optimizer, [(_ones(), v)])
    first = v.numpy()
    np.testing.assert_allclose(optimizer._model_variables_moving_average[0], first)  # initialised after step 1
    _apply(optimizer, [(_ones(), v)])
    average = 0.9 * first + 0.1 * v.numpy()
    np.testing.assert_allclose(optimizer._model_variables_moving_average[0], average, rtol=1e-6)
    _apply(optimizer, [(_ones(), v)])
    # At the third step Keras overwrites the variables with their (updated) moving average.
    third = optimizer._model_variables_moving_average[0].numpy()
    assert not np.allclose(third, average)
    np.testing.assert_allclose(v.numpy(), third, rtol=1e-6)


@modes
def test_ema_with_model_fit_leaves_the_average_in_the_model(policy):
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2, kernel_initializer="ones", use_bias=False)])
    optimizer = _optimizer(policy, use_ema=True, ema_momentum=0.9)
    model.compile(loss="mse", optimizer=optimizer, jit_compile=True)
    model.fit(np.ones((4, 1), "float32"), np.zeros((4, 2), "float32"), batch_size=1, epochs=2, verbose=0)
    np.testing.assert_allclose(model.trainable_variables[0].numpy(),
                               optimizer._model_variables_moving_average[0].numpy(), rtol=1e-6)
    assert np.all(model.trainable_variables[0].numpy() < 1.0)


@modes
def test_constraints_are_applied(policy):
    v = keras.Variable(np.random.default_rng(0).random((2, 2)) - 1.0)
    v.constraint = keras.constraints.NonNeg()  # as layers set it (Keras' optimizers read the attribute)
    _apply(_optimizer(policy), [(tf.zeros((2, 2)), v)])
    assert np.min(v.numpy()) == 0.0


@modes
def test_static_loss_scaling_divides_the_gradients_back(policy):
    scaled, plain = _optimizer(policy, loss_scale_factor=1024.0), _optimizer(policy)
    assert float(scaled.scale_loss(1.0)) == 1024.0
    grads = tf.constant([[1.0, 2.0], [3.0, 4.0]])
    a, b = keras.Variable([[1.0, 2.0], [3.0, 4.0]]), keras.Variable([[1.0, 2.0], [3.0, 4.0]])
    _apply(scaled, [(grads * 1024.0, a)])
    _apply(plain, [(grads, b)])
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


@modes
def test_set_weights(policy):
    x = keras.Variable([[1.0, 2.0], [3.0, 4.0]])
    first = _optimizer(policy)
    _apply(first, [(tf.constant([[1.0, 2.0], [3.0, 4.0]]), x)])
    second = _optimizer(policy)
    with pytest.raises(ValueError, match="You are calling"):
        second.set_weights(first.variables)
    second.build([x])
    second.set_weights(first.variables)
    for a, b in zip(first.variables, second.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@modes
def test_gradient_accumulation_equals_one_step_on_the_mean(policy):
    # Keras' test_gradient_accumulation and test_gradient_accumulation_with_weigth_decay, for LHOPT's update.
    once, accumulating = _optimizer(policy), _optimizer(policy, gradient_accumulation_steps=3)
    assert accumulating.gradient_accumulation_steps == 3
    v1, v3 = keras.Variable([[0.9], [0.5]]), keras.Variable([[0.9], [0.5]])
    rng = np.random.default_rng(0)
    for update in range(8):
        grads = rng.random([3, 2, 1]).astype("float32")
        _apply(once, [(tf.constant(grads.mean(axis=0)), v1)])
        for batch in range(3):
            before = v3.numpy()
            _apply(accumulating, [(tf.constant(grads[batch]), v3)])
            if batch < 2:
                np.testing.assert_array_equal(v3.numpy(), before)  # nothing moves until the third batch
        assert int(accumulating.iterations) == update + 1
    np.testing.assert_allclose(v1.numpy(), v3.numpy(), rtol=1e-5, atol=1e-6)
    assert once.hyperparameters == pytest.approx(accumulating.hyperparameters, rel=1e-5)


@modes
def test_tf_checkpointing(policy, tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    optimizer = _optimizer(policy)
    x, y = np.random.default_rng(0).random((2, 1, 2))
    model.compile(optimizer, "mse")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train_on_batch(x, y)
    reference = model.predict(x, verbose=0)
    checkpoint = tf.train.Checkpoint(model, optimizer=optimizer)
    path = checkpoint.save(str(tmp_path / "checkpoint"))
    saved = [v.numpy() for v in optimizer.variables]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train_on_batch(x, y)
    assert not np.allclose(model.predict(x, verbose=0), reference, atol=1e-4)
    checkpoint.restore(path)
    np.testing.assert_allclose(model.predict(x, verbose=0), reference, atol=1e-6)
    for variable, value in zip(optimizer.variables, saved):
        np.testing.assert_array_equal(variable.numpy(), value)


@modes
def test_a_callable_learning_rate_is_refused_with_the_way_to_schedule(policy):
    # Keras' optimizers take a callable or schedule; LHOPT's learning rate is steered, so it refuses one clearly.
    with pytest.raises(ValueError, match="learning_rate"):
        _optimizer(policy, learning_rate=lambda: 0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        _optimizer(policy, learning_rate=keras.optimizers.schedules.ExponentialDecay(0.01, 10, 0.5))


@modes
def test_overwrite_with_gradient(policy):
    v, v2 = keras.Variable([[1.0, 2.0], [3.0, 4.0]]), keras.Variable([[1.0, 2.0], [3.0, 4.0]])
    v.overwrite_with_gradient = True
    _apply(_optimizer(policy), [(_ones(), v), (_ones(), v2)])
    np.testing.assert_array_equal(v.numpy(), np.ones((2, 2)))  # overwritten by its gradient
    assert np.all(v2.numpy() < [[1.0, 2.0], [3.0, 4.0]])  # updated normally


@modes
def test_pickleable(policy):
    optimizer = _optimizer(policy)
    assert pickle.loads(pickle.dumps(optimizer)).get_config() == optimizer.get_config()


@modes
def test_mixed_with_tf_variables(policy):
    v, tf_v = keras.Variable([[1.0, 2.0], [3.0, 4.0]]), tf.Variable([[1.0, 2.0], [3.0, 4.0]])
    optimizer = _optimizer(policy)
    _apply(optimizer, [(_ones(), v), (_ones(), tf_v)])
    assert int(optimizer.iterations) == 1
    with pytest.warns(UserWarning, match="Gradients do not exist for variables"):
        optimizer.apply_gradients([(_ones(), v), (None, tf_v)])
    assert int(optimizer.iterations) == 2


@modes
def test_auto_naming_survives_serialization(policy):
    first, second = _optimizer(policy), _optimizer(policy)
    assert first.name != second.name
    assert keras.optimizers.deserialize(keras.optimizers.serialize(second)).name == second.name
    assert keras.optimizers.deserialize(keras.optimizers.serialize(_optimizer(policy, name="mine"))).name == "mine"


@modes
def test_sparse_embedding_gradients_train(policy):
    # Keras' sparse-gradient pattern: an embedding's IndexedSlices gradient, compiled with XLA.
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, size=(256, 6))
    labels = (tokens % 2).mean(axis=1, keepdims=True).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(50, 8),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
    model.compile(optimizer=LHOPT(learning_rate=1e-2, policy=policy), loss="mse", jit_compile=True)
    table = model.layers[0].embeddings.numpy().copy()
    history = model.fit(tokens, labels, batch_size=32, epochs=10, verbose=0,
                        callbacks=[keras_lopt.ControllerCallback()] if policy else None).history["loss"]
    assert history[-1] < 0.5 * history[0]
    assert not np.allclose(table, model.layers[0].embeddings.numpy())


@modes
def test_exclude_from_weight_decay(policy):
    # Keras' adam_test.test_weight_decay: with zero gradients only weight decay moves a variable.
    decayed, by_name, by_list = keras.Variable(2.0), keras.Variable(2.0, name="exclude"), keras.Variable(2.0)
    optimizer = _optimizer(policy, learning_rate=0.5, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_list=[by_list], var_names=["exclude"])
    _apply(optimizer, [(tf.zeros(()), decayed), (tf.zeros(()), by_name), (tf.zeros(()), by_list)])
    assert float(decayed.numpy()) == pytest.approx(2.0 - 0.5 * 0.1 * 2.0, rel=1e-6)
    assert float(by_name.numpy()) == 2.0 and float(by_list.numpy()) == 2.0
