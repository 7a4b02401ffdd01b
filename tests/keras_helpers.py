"""Small Keras models and data that several test files train LHOPT on."""

import keras
import numpy as np

from keras_lopt import LHOPT


def regression_data(n=128, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = (x @ rng.normal(size=(8, 1)) + 0.1 * rng.normal(size=(n, 1))).astype(np.float32)
    return x, y


def compiled_model(optimizer=None, jit_compile=True, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(1)]
    )
    model.compile(
        optimizer=optimizer if optimizer is not None else LHOPT(learning_rate=1e-2, policy=None),
        loss="mse",
        jit_compile=jit_compile,
    )
    return model


def fit(model, epochs, x, y, callbacks=None):
    return model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks)
