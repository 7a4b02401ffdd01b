"""History-CDF transform of the controller's features (DESIGN.md section 2).

Each raw feature is compared with its own past values in this run: per time
horizon, an exponentially weighted mean and variance of the past values are
kept, and the feature is reported as

    Phi((x - mean) / sqrt(var + tiny))

where Phi is the standard normal CDF. The output lies in [0, 1], is 0.5 while
there is no history, and does not change when the feature's sequence is
scaled or shifted, which is what makes the controller's inputs independent of
the task's scale. `tiny` is relative to the mean (1e-12 mean^2 + 1e-30), so a
feature whose history is constant gives 0.5 for the same value and 0 or 1 for
any other.

Past values are weighted by decay**age, where age counts control steps and
decay = exp(-1 / horizon); the horizons span one to twenty control steps.
"""

import math

import tensorflow as tf

HISTORY_HORIZONS = (1.25, 2.5, 5.0, 10.0, 20.0)
HISTORY_DECAYS = tuple(math.exp(-1.0 / h) for h in HISTORY_HORIZONS)

_RELATIVE_TINY = 1e-12
_ABSOLUTE_TINY = 1e-30


def empty_history(num_features):
    """History state for `num_features` features: (weight, mean, var), each [n, H]."""
    shape = (num_features, len(HISTORY_DECAYS))
    return tuple(tf.zeros(shape, tf.float32) for _ in range(3))


def history_cdf(x, history):
    """Compares `x` with its history, then adds `x` to the history.

    Args:
        x: float tensor of shape `[n]`, the current value of each feature.
        history: (weight, mean, var), each of shape `[n, H]`, as returned by
            `empty_history` or a previous call.

    Returns:
        `(cdf, new_history)`: `cdf` has shape `[n, H]`, one value per horizon.
    """
    weight, mean, var = history
    x = tf.cast(x, tf.float32)[:, None]
    delta = x - mean
    scale = tf.sqrt(var + _RELATIVE_TINY * tf.square(mean) + _ABSOLUTE_TINY)
    cdf = 0.5 * (1.0 + tf.math.erf(delta / (scale * math.sqrt(2.0))))
    cdf = tf.where(weight > 0.0, cdf, 0.5)

    # West's weighted update after decaying every old weight by `decay`.
    decayed = weight * tf.constant(HISTORY_DECAYS, tf.float32)
    new_weight = decayed + 1.0
    new_mean = mean + delta / new_weight
    new_var = decayed / new_weight * (var + tf.square(delta) / new_weight)
    return cdf, (new_weight, new_mean, new_var)
