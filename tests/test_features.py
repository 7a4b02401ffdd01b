"""The history-CDF transform against a brute-force NumPy computation."""

import math

import numpy as np
import pytest
import tensorflow as tf

from keras_lopt.features import HISTORY_DECAYS, empty_history, history_cdf


def _brute_force(series, t, decay):
    """Phi of series[t] against all earlier values weighted by decay**age."""
    if t == 0:
        return 0.5
    past = np.asarray(series[:t], np.float64)
    w = decay ** np.arange(t - 1, -1, -1)
    mean = np.sum(w * past) / np.sum(w)
    var = np.sum(w * (past - mean) ** 2) / np.sum(w)
    scale = math.sqrt(var + 1e-12 * mean**2 + 1e-30)
    return 0.5 * (1 + math.erf((series[t] - mean) / (scale * math.sqrt(2))))


def _run(sequences):
    """sequences: [n, T]. Returns cdfs [T, n, H]."""
    sequences = np.asarray(sequences, np.float32)
    history = empty_history(sequences.shape[0])
    out = []
    for t in range(sequences.shape[1]):
        cdf, history = history_cdf(tf.constant(sequences[:, t]), history)
        out.append(cdf.numpy())
    return np.stack(out)


def test_matches_brute_force():
    rng = np.random.default_rng(0)
    series = np.cumsum(rng.normal(size=(3, 30)), axis=1) + 10.0
    cdfs = _run(series)
    for t in range(series.shape[1]):
        for i in range(series.shape[0]):
            for h, decay in enumerate(HISTORY_DECAYS):
                expected = _brute_force(series[i].astype(np.float32), t, decay)
                assert cdfs[t, i, h] == pytest.approx(expected, abs=2e-4)


def test_half_without_history_and_for_an_unchanged_value():
    cdfs = _run([[3.0, 3.0, 3.0, 3.0]])
    np.testing.assert_allclose(cdfs, 0.5)


def test_extremes_and_range():
    cdfs = _run([[1.0, 1.1, 0.9, 1.0, 100.0, -100.0]])
    assert (cdfs >= 0).all() and (cdfs <= 1).all()
    assert (cdfs[4] > 0.99).all()  # far above its history
    assert (cdfs[5] < 0.01).all()  # far below


def test_scale_and_shift_invariance():
    rng = np.random.default_rng(1)
    series = rng.lognormal(size=(2, 25))
    base = _run(series)
    np.testing.assert_allclose(_run(1000.0 * series), base, atol=1e-4)
    np.testing.assert_allclose(_run(series - 7.0), base, atol=1e-4)


def test_short_horizons_forget():
    # A long run of ones, then a jump to 2 held for a few steps: the shortest
    # horizon has adapted (about 0.5) while the longest still sees 2 as high.
    cdfs = _run([[1.0] * 20 + [1.0 + 0.01 * i for i in range(5)] + [2.0] * 6])
    last = cdfs[-1, 0]
    assert last[0] < 0.8
    assert last[-1] > 0.9
    assert np.all(np.diff(last) >= -1e-6)


def test_compiles_under_xla():
    history = empty_history(4)
    step = tf.function(history_cdf, jit_compile=True)
    for value in (1.0, 2.0, 3.0):
        cdf, history = step(tf.fill([4], value), history)
    assert cdf.shape == (4, len(HISTORY_DECAYS))
    assert (cdf.numpy() > 0.5).all()
