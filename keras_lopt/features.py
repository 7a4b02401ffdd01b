"""History-CDF transform of the controller's features (docs/design.md).

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

from keras_lopt.actions import ACTION_HEADS, logit

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

    A feature whose value is not finite gives 0.5 and leaves its history as
    it was.

    Args:
        x: float tensor of shape `[n]`, the current value of each feature.
        history: (weight, mean, var), each of shape `[n, H]`, as returned by
            `empty_history` or a previous call.

    Returns:
        `(cdf, new_history)`: `cdf` has shape `[n, H]`, one value per horizon.
    """
    x = tf.cast(x, tf.float32)[:, None]
    finite = tf.math.is_finite(x)
    x = tf.where(finite, x, 0.0)
    cdf, new_history = _history_cdf(x, history)
    cdf = tf.where(finite, cdf, 0.5)
    new_history = tuple(tf.where(finite, new, old) for new, old in zip(new_history, history))
    return cdf, new_history


def _history_cdf(x, history):
    weight, mean, var = history
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


# ---------------------------------------------------------------------------
# The observation: which features the controller sees, in which order.
# Changing any of this changes what a trained controller expects, so bump
# FEATURE_SPEC_VERSION with it.

FEATURE_SPEC_VERSION = 1

# Statistics of each tensor, averaged over the tensors (did_clip is global).
# `m_hat` is the bias-corrected momentum, `g` the clipped gradient, `u` the
# update direction and `lr_p` the tensor's learning rate after its trust ratio.
STATISTICS = (
    "did_clip",
    "fraction_v_above_epsilon",
    "mean_log_abs_update",
    "log_momentum_over_gradient",  # log||m_hat|| - log||g||
    "log_step_over_parameter",  # log(lr_p ||u||) - log||p||
    "log_momentum_over_noise",  # log||m_hat|| - log||m_hat - g||
    "log_parameter_over_update",  # log||p|| - log||u||
    "cos_gradient_momentum",
    "cos_gradient_parameter",
    "cos_gradient_update",
    # Phi(sqrt(d) cos): the cosine as a z-score against a random direction
    # in d dimensions.
    "zcdf_gradient_momentum",
    "zcdf_gradient_parameter",
    "zcdf_gradient_update",
)
# Between this control step and the previous one: the log ratio of the mean
# training loss, and (squashed with tanh) of the global step norm
# sqrt(sum ||lr_p u||^2) and of the global parameter norm.
RATIOS = ("train_loss_log_ratio", "step_norm_log_ratio", "parameter_norm_log_ratio")
# log(current / initial) of each stored hyperparameter (1 - beta for the
# betas); logit(current) - logit(initial) for the clip threshold.
HYPERPARAMETER_RATIOS = tuple(f"{head.hyperparameter}_log_relative" for head in ACTION_HEADS)

# Features that depend on the task's scale are shown only through their
# history CDFs: the losses, and log||p|| - log||u|| (which shifts when the
# parameters are rescaled).
HIDDEN = ("log_parameter_over_update", "train_loss")
SHOWN = tuple(name for name in STATISTICS + RATIOS + HYPERPARAMETER_RATIOS if name not in HIDDEN)
# Every raw feature goes through the history CDFs, in this order.
TRANSFORMED = SHOWN + HIDDEN

FLAGS = (
    "progress",  # step / total_steps, 0 while total_steps is unknown
    "total_steps_known",
    "train_loss_seen",  # the loss reached the optimizer through scale_loss
    "train_loss_is_nan",
    "train_loss_is_inf",
    "val_loss_seen",
    "val_loss_is_nan",
    "val_loss_is_inf",
)


def horizon_names(name):
    return [f"{name}_cdf_h{h:g}" for h in HISTORY_HORIZONS]


FEATURE_NAMES = (
    FLAGS
    + SHOWN
    + tuple(n for name in TRANSFORMED for n in horizon_names(name))
    + tuple(horizon_names("val_loss"))
    + tuple(
        f"previous_{head.hyperparameter}_{choice:g}"
        for head in ACTION_HEADS
        for choice in head.choices
    )
)
NUM_FEATURES = len(FEATURE_NAMES)

# Extra inputs for a critic during meta-training; a deployed controller never
# sees them. Losses are raw (their mean since the previous control step).
CRITIC_FEATURE_NAMES = (
    "train_loss",
    "val_loss",
    "log_step",
    "log_total_steps",
    "log_gradient_norm",
    "log_parameter_norm",
    "log_step_norm",
) + tuple(f"log_{head.hyperparameter}_stored" for head in ACTION_HEADS)
NUM_CRITIC_FEATURES = len(CRITIC_FEATURE_NAMES)

_LOG_FLOOR = 1e-30
# Log ratios of norms are clipped: a zero tensor (a bias at initialisation)
# would otherwise give -69 and swamp the mean over tensors.
_LOG_RATIO_LIMIT = 20.0


def safe_log(x):
    return tf.math.log(tf.maximum(x, _LOG_FLOOR))


PROGRESS = FEATURE_NAMES.index("progress")


def relative_to_start(stored, start):
    """The `*_log_relative` inputs, by name: each head's stored hyperparameter
    relative to its start (log ratio; for the clip threshold, the difference
    of logits, the space its head moves in)."""
    relative = {}
    for head in ACTION_HEADS:
        now, then = stored[head.hyperparameter], start[head.hyperparameter]
        if head.kind == "logit_shift":
            relative[f"{head.hyperparameter}_log_relative"] = logit(now) - logit(then)
        else:
            relative[f"{head.hyperparameter}_log_relative"] = safe_log(now) - safe_log(then)
    return relative


def _log_ratio(numerator, denominator):
    return tf.clip_by_value(
        safe_log(numerator) - safe_log(denominator), -_LOG_RATIO_LIMIT, _LOG_RATIO_LIMIT
    )


def _normal_cdf(z):
    return 0.5 * (1.0 + tf.math.erf(z / math.sqrt(2.0)))


# The sums over a tensor's elements that its statistics are made of, in order (d = m_hat - g).
TENSOR_SUMS = ("g_g", "m_m", "u_u", "p_p", "g_m", "g_p", "g_u", "d_d", "v_above_epsilon", "log_abs_u")


def tensor_sums(g, m_hat, v, u, p, epsilon):
    """float32 `[len(TENSOR_SUMS)]`: one tensor's sums, in one reduction over its elements.

    One reduction compiles to one loop: these sums are computed on control
    steps only, where compile time matters more than speed.

    Args:
        g: the (clipped) gradient. m_hat: the bias-corrected momentum.
        v: the second moment. u: the update direction. p: the parameter.
        epsilon: the current epsilon.
    """
    g, m_hat, v, u, p = (tf.cast(tf.reshape(x, [-1]), tf.float32) for x in (g, m_hat, v, u, p))
    d = m_hat - g
    products = [g * g, m_hat * m_hat, u * u, p * p, g * m_hat, g * p, g * u, d * d,
                tf.cast(v > epsilon, tf.float32), safe_log(tf.abs(u))]
    return tf.reduce_sum(tf.stack(products), axis=1)


def statistics_from_sums(sums, sizes, step_sizes):
    """Every tensor's statistics for the controller, computed together from their sums.

    Args:
        sums: float32 `[T, len(TENSOR_SUMS)]`, each row a tensor's `tensor_sums`.
        sizes: float32 `[T]`, the tensors' element counts.
        step_sizes: float32 `[T]`, each tensor's learning rate after its trust ratio.

    Returns:
        `(statistics, parameter_norms, step_norms)`: `statistics` is float32
        `[T, len(STATISTICS) - 1]`, ordered as `STATISTICS[1:]`; the norms
        are each tensor's ||p|| and ||step_size * u||.
    """
    total = dict(zip(TENSOR_SUMS, tf.unstack(sums, axis=1)))
    g_norm, m_norm, u_norm, p_norm, d_norm = (tf.sqrt(total[f"{x}_{x}"]) for x in "gmupd")

    def cosine(dot, a_norm, b_norm):
        return dot / tf.maximum(a_norm * b_norm, _LOG_FLOOR)

    cosines = [
        cosine(total["g_m"], g_norm, m_norm),
        cosine(total["g_p"], g_norm, p_norm),
        cosine(total["g_u"], g_norm, u_norm),
    ]
    values = [
        total["v_above_epsilon"] / sizes,
        tf.clip_by_value(total["log_abs_u"] / sizes, -_LOG_RATIO_LIMIT, _LOG_RATIO_LIMIT),
        _log_ratio(m_norm, g_norm),
        _log_ratio(step_sizes * u_norm, p_norm),
        _log_ratio(m_norm, d_norm),
        _log_ratio(p_norm, u_norm),
        *cosines,
        *[_normal_cdf(tf.sqrt(sizes) * c) for c in cosines],
    ]
    return tf.stack(values, axis=1), p_norm, step_sizes * u_norm


def tensor_statistics(g, m_hat, v, u, p, epsilon, step_size):
    """One tensor's statistics: `statistics_from_sums` for a single tensor.

    Returns `(statistics [len(STATISTICS) - 1], ||p||, ||step_size * u||)`.
    """
    size = tf.cast(tf.size(g), tf.float32)
    statistics, p_norm, step_norm = statistics_from_sums(
        tensor_sums(g, m_hat, v, u, p, epsilon)[None], size[None], tf.reshape(step_size, [1]))
    return statistics[0], p_norm[0], step_norm[0]


def _by_name(names, values, what):
    if set(values) != set(names):
        missing, unknown = sorted(set(names) - set(values)), sorted(set(values) - set(names))
        raise ValueError(f"{what} needs exactly {names}; missing {missing}, unknown {unknown}.")
    return tf.stack([tf.cast(values[name], tf.float32) for name in names])


def flags(**values):
    """The `FLAGS` vector, float32 `[len(FLAGS)]`, from one value per flag name."""
    return _by_name(FLAGS, values, "flags")


def critic_observation(**values):
    """The critic's extra inputs, float32 `[NUM_CRITIC_FEATURES]`, from one value per `CRITIC_FEATURE_NAMES` name."""
    return _by_name(CRITIC_FEATURE_NAMES, values, "critic_observation")


def observation(flags, raw, val_loss_cdf, previous_action, history):
    """Assembles the controller's observation and updates the history.

    Args:
        flags: float32 `[len(FLAGS)]` (see `flags`).
        raw: dict name -> float32 scalar, one entry per name in `TRANSFORMED`.
        val_loss_cdf: float32 `[H]`, the validation loss's history CDFs.
        previous_action: int `[len(ACTION_HEADS)]`.
        history: the history state of the `TRANSFORMED` features.

    Returns:
        `(observation, new_history)`, `observation` of shape `[NUM_FEATURES]`;
        non-finite raw values are shown as 0.
    """
    values = tf.stack([tf.cast(raw[name], tf.float32) for name in TRANSFORMED])
    cdf, new_history = history_cdf(values, history)
    shown = values[: len(SHOWN)]
    one_hot = [
        tf.one_hot(previous_action[i], len(head.choices), dtype=tf.float32)
        for i, head in enumerate(ACTION_HEADS)
    ]
    parts = [
        tf.cast(flags, tf.float32),
        tf.where(tf.math.is_finite(shown), shown, 0.0),
        tf.reshape(cdf, [-1]),
        tf.cast(val_loss_cdf, tf.float32),
        *one_hot,
    ]
    return tf.concat(parts, axis=0), new_history
