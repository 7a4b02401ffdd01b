"""LHOPT: the Adam-family inner optimizer of "A Generalizable Approach to
Learning Optimizers" (Almeida et al., 2021), as a Keras 3 optimizer."""

import math
import numbers
import os

import keras
import tensorflow as tf
from keras.src.saving import serialization_lib

from keras_lopt import actions, features, user_warnings
from keras_lopt.control import FALLBACK_CONTROL_EVERY, ControlLoop, control_every_for
from keras_lopt.controller import Controller
from keras_lopt.hyperparameters import DEFAULTS, HYPERPARAMETERS, TABLE, did_you_mean, stored_value
from keras_lopt.hyperparameters import validate as validate_hyperparameter

EXTERNAL = "external"

# By default the controller raises the learning rate to at most 0.04, 4x the
# default start: controllers raised it early in runs where a constant rate did
# better (docs/design.md, "Decisions"). The cap is absolute, not relative to the
# start, so that a user who starts low (say Adam's 1e-3) can still be raised to
# where the default starts; with the trust ratio the rate is a step relative to
# each weight tensor's norm, so one value suits models of any scale.
DEFAULT_MAX_LEARNING_RATE = 4e-2

# Thresholds of the update (docs/design.md, "The update").
_CLIP_DENOMINATOR_EPS = 1e-6
_TRUST_RATIO_MIN_NORM = 1e-8
_TRUST_RATIO_FLOOR = 1e-3

_OWN_ARGUMENTS = tuple(HYPERPARAMETERS) + (
    "max_learning_rate", "policy", "total_steps", "control_every", "safe_mode", "name"
)
# Keyword arguments every Keras optimizer accepts, passed on to the base class.
_BASE_ARGUMENTS = (
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
    "loss_scale_factor",
    "gradient_accumulation_steps",
)


def _check_backend():
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"keras_lopt.LHOPT needs the TensorFlow backend but Keras is using "
            f"'{backend}'; set the environment variable KERAS_BACKEND=tensorflow "
            f"before importing keras."
        )


def _check_keyword_arguments(kwargs):
    known = _OWN_ARGUMENTS + _BASE_ARGUMENTS
    for name in kwargs:
        if name not in _BASE_ARGUMENTS:
            raise TypeError(
                f"LHOPT got an unexpected keyword argument '{name}'."
                f"{did_you_mean(name, known)} Valid arguments: {', '.join(known)}."
            )


def _make_controller(policy, safe_mode):
    """The in-graph controller for a `policy` argument (None if there is none)."""
    if policy is None or policy == EXTERNAL:
        return None
    if isinstance(policy, Controller):
        return policy
    if isinstance(policy, dict):  # from get_config
        return Controller.from_config(policy, safe_mode)
    if isinstance(policy, (str, os.PathLike)):
        return Controller.load(policy, safe_mode)
    raise ValueError(
        f"LHOPT policy must be None, \"default\", \"external\", the path of a controller "
        f"SavedModel or a keras_lopt.controller.Controller; got {policy!r}."
    )


def _assign_value(variable, value):
    return variable.assign(value)


def _sum_of_squares(x):
    """The sum of `x`'s squared elements, in float32.

    For tensors of rank 2 or more it is a product with a vector of ones: XLA on
    CPU compiles a reduction to a single-threaded loop but a matrix-vector
    product to a multithreaded, vectorized one, about 5x faster on large
    tensors (on GPU both are fast).
    """
    squares = tf.square(tf.cast(x, tf.float32))
    columns = squares.shape[-1] if squares.shape.rank is not None and squares.shape.rank >= 2 else None
    if columns is None:
        return tf.reduce_sum(squares)
    rows = tf.reshape(squares, [-1, columns])
    return tf.reduce_sum(tf.matmul(rows, tf.ones([columns, 1])))


def _norm(x):
    return tf.sqrt(_sum_of_squares(x))


def _trust_ratio(parameter_norm, mean_update_norm):
    """LAMB trust ratio max(||p|| / mean ||u||, 1e-3); 1 when either norm is ~0."""
    usable = (parameter_norm >= _TRUST_RATIO_MIN_NORM) & (mean_update_norm >= _TRUST_RATIO_MIN_NORM)
    ratio = parameter_norm / tf.maximum(mean_update_norm, _TRUST_RATIO_MIN_NORM)
    return tf.where(usable, tf.maximum(ratio, _TRUST_RATIO_FLOOR), 1.0)


def validate_max_learning_rate(value):
    """Returns `value` as a float (or None), or raises a one-line `ValueError`."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0.0) or isinstance(value, bool):
        raise ValueError(
            f"LHOPT max_learning_rate must be a positive float like 0.04 (the controller never "
            f"raises the learning rate above it), or None for no cap; got {value!r}."
        )
    return number


def _validate_all(values):
    return {name: validate_hyperparameter(name, value) for name, value in values.items()}


def _is_positive_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


@keras.saving.register_keras_serializable(package="keras_lopt")
class LHOPT(keras.optimizers.Optimizer):
    """Optimizer implementing the inner update of LHOPT (Almeida et al., 2021).

    An AdaMax-style Adam variant whose hyperparameters live in optimizer
    variables, so that a learned controller can change them inside a compiled
    train step. By default the controller is the meta-trained policy that
    ships with keras_lopt (`policy="default"`); with `policy=None` it is off
    and LHOPT is a plain optimizer with fixed hyperparameters. One step, with
    `G` the global norm of the gradients and every tensor in one group:

    ```
    R   = max(G, R * (1 - clip_ema))                 # rolling max, R0 = 0
    c   = clip_threshold * R / (G + 1e-6)
    g   = g * min(c, 1)                              # global clipping
    bc1 = bc1 * beta_1 + (1 - beta_1)                # running bias correction
    m   = beta_1 * m + (1 - beta_1) * g
    v   = max(beta_2 * v, |g|)
    u   = m / (v + epsilon) / bc1 + weight_decay * p
    # tensors of rank >= 2 scale their step by a LAMB trust ratio:
    n   = n * (1 - update_norm_ema) + update_norm_ema * ||u||
    bn  = bn * (1 - update_norm_ema) + update_norm_ema
    lr_p = lr * max(||p|| / (n / bn), 1e-3)          # if ||p||, n/bn >= 1e-8
    p   = p - lr_p * u
    ```

    Running bias corrections stay correct when a beta changes mid-run. A step
    whose gradients are not finite (or whose global norm overflows float32)
    leaves the weights and every optimizer state untouched; the iteration
    counter still advances.

    Args:
        learning_rate: A positive float: the step relative to each weight
            tensor's norm (trust ratio), for vectors and scalars the plain
            step size. Defaults to `1e-2`.
        beta_1: Decay rate of the first moment, in (0, 1). Defaults to `0.9`.
        beta_2: Decay rate of the AdaMax second moment (an exponentially
            decaying maximum of `|g|`), in (0, 1). Defaults to `0.99`.
        epsilon: Positive constant added to the second moment. Defaults to
            `1e-6`.
        weight_decay: Non-negative weight decay coefficient, applied inside
            the update (so it is scaled by the trust ratio too). Variables
            excluded with `exclude_from_weight_decay()` get none. Defaults to
            `1e-2`.
        clip_threshold: Gradients are clipped to this fraction of the rolling
            maximum of their global norm, in (0, 1). Defaults to `0.8`.
        clip_ema: Decay rate of that rolling maximum, in (0, 1]. Defaults
            to `1e-2`.
        update_norm_ema: Rate of the running mean of each tensor's update
            norm used by the trust ratio, in (0, 1]. Defaults to `0.05`.
        max_learning_rate: A positive float or `None`: the controller never
            raises the learning rate above it (a higher `learning_rate`, or
            one you set with `set_hyperparameters`, is kept, not raised).
            Defaults to `0.04`. `None` lets it go up to the action bound,
            1.0.
        policy: The controller: the path of a controller SavedModel (see
            `keras_lopt.save_controller`), `"default"` (the default) for the
            packaged one, `"external"` to compute the features but take
            actions from `apply_action` (for meta-training), or `None` to
            switch the controller off and compute no features.
        total_steps: Optional positive int, the planned number of training
            steps; the controller uses it to measure progress (the packaged
            controller was meta-trained with it always known: set it, or
            pass `keras_lopt.ControllerCallback()` to `fit`, which does).
        control_every: Optional positive int, the number of steps between
            two calls of the controller. Defaults to `None`: about
            `total_steps // 50` (at least 1), so a run has about 50 control
            steps whatever its length, and 10 while `total_steps` is
            unknown.
        safe_mode: Boolean. With `True` (the default) a controller is
            checked before it is loaded and refused if it contains any op
            outside `keras_lopt.trust.ALLOWED_OPS` (pure tensor math: no
            file or system I/O, printing or Python calls). Pass `False` only
            for a controller you trust. Not saved in the config: a model
            loaded with `keras.models.load_model` follows that function's
            own `safe_mode`.
        {{base_optimizer_keyword_args}}
    """

    def __init__(
        self,
        learning_rate=DEFAULTS["learning_rate"],
        beta_1=DEFAULTS["beta_1"],
        beta_2=DEFAULTS["beta_2"],
        epsilon=DEFAULTS["epsilon"],
        weight_decay=DEFAULTS["weight_decay"],
        clip_threshold=DEFAULTS["clip_threshold"],
        clip_ema=DEFAULTS["clip_ema"],
        update_norm_ema=DEFAULTS["update_norm_ema"],
        max_learning_rate=DEFAULT_MAX_LEARNING_RATE,
        policy="default",
        total_steps=None,
        control_every=None,
        safe_mode=True,
        name=None,
        **kwargs,
    ):
        _check_backend()
        _check_keyword_arguments(kwargs)
        given = dict(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            weight_decay=weight_decay,
            clip_threshold=clip_threshold,
            clip_ema=clip_ema,
            update_norm_ema=update_norm_ema,
        )
        initial = _validate_all(given)
        max_learning_rate = validate_max_learning_rate(max_learning_rate)
        controller = _make_controller(policy, safe_mode)
        if total_steps is not None and not _is_positive_int(total_steps):
            raise ValueError(
                f"LHOPT total_steps must be a positive int or None; got {total_steps!r}."
            )
        if control_every is not None and not _is_positive_int(control_every):
            raise ValueError(
                f"LHOPT control_every must be a positive int like 10, or None to follow "
                f"total_steps; got {control_every!r}."
            )

        # The base class's own weight decay would act outside the update.
        super().__init__(
            learning_rate=initial["learning_rate"], weight_decay=None, name=name, **kwargs
        )
        self.initial_hyperparameters = initial
        self.max_learning_rate = max_learning_rate
        self._control_every = None if control_every is None else int(control_every)
        # `_controller` is the in-graph controller; with policy="external" the
        # features are computed but actions come from `apply_action`.
        self._controller = controller
        self._external_control = policy == EXTERNAL
        self._total_steps = None if total_steps is None else int(total_steps)

        # Global state, read and written once per step for all tensors.
        self._hyperparameter_variables = {"learning_rate": self._learning_rate}
        for hp in TABLE[1:]:  # the learning rate is the base class's variable
            self._hyperparameter_variables[hp.name] = self._scalar_variable(
                hp.stored_as, hp.stored(initial[hp.name])
            )
        self._gradient_norm_max = self._scalar_variable("gradient_norm_max")
        self._bias_correction_1 = self._scalar_variable("bias_correction_1")
        self._did_clip = self._scalar_variable("did_clip")
        # Whether a training loss has reached the controller (checked when the step is traced).
        self._loss_observed = False
        # The in-graph control loop, when features are computed.
        self._control = None
        if self.controller_on:
            self._control = ControlLoop(
                self._scalar_variable, self._hyperparameter_variables, initial, controller,
                self.moved_hyperparameters, self._total_steps or 0, self.control_every,
            )

    def _scalar_variable(self, name, value=0.0, shape=(), dtype="float32", aggregation="only_first_replica"):
        def initializer(shape, dtype):
            return tf.cast(tf.broadcast_to(tf.constant(value), shape), dtype)

        return self.add_variable(
            shape=shape,
            initializer=initializer,
            dtype=dtype,
            aggregation=aggregation,
            name=name,
        )

    @property
    def controller_on(self):
        """Whether features are computed (an in-graph or external controller)."""
        return self._controller is not None or self._external_control

    @property
    def policy(self):
        """The controller: None, "external", or a `keras_lopt.controller.Controller`."""
        return EXTERNAL if self._external_control else self._controller

    @property
    def total_steps(self):
        return self._total_steps

    @total_steps.setter
    def total_steps(self, value):
        if value is not None and not _is_positive_int(value):
            raise ValueError(f"LHOPT total_steps must be a positive int or None; got {value!r}.")
        self._total_steps = None if value is None else int(value)
        if self.controller_on:
            self._control.set_run_length(self._total_steps, self.control_every)

    @property
    def control_every(self):
        """Steps between two controller calls: the constructor's, or with
        `control_every=None` about `total_steps // AUTO_CONTROL_STEPS`."""
        if self._control_every is not None:
            return self._control_every
        if self._total_steps is None:
            return FALLBACK_CONTROL_EVERY
        return control_every_for(self._total_steps)

    def _require_controller(self, what):
        if not self.controller_on:
            raise ValueError(
                f"LHOPT.{what} needs the controller's features, which are not computed "
                f'with policy=None. Pass policy="external" (to drive LHOPT from outside) '
                f"or a controller."
            )

    @property
    def learning_rate(self):
        return self._get_current_learning_rate()

    @learning_rate.setter
    def learning_rate(self, value):
        # Keras' callbacks (ReduceLROnPlateau, LearningRateScheduler) and users assign here: a float sets the
        # current rate, checked as the constructor checks it; a schedule is refused (the rate is LHOPT's to move).
        self.set_hyperparameters(learning_rate=value)

    @property
    def observation(self):
        """The controller's inputs at the last control step, a NumPy vector
        laid out as `keras_lopt.features.FEATURE_NAMES` (zeros before the
        first control step)."""
        self._require_controller("observation")
        return keras.ops.convert_to_numpy(self._control.variables["observation"])

    @property
    def critic_observation(self):
        """Extra inputs for a critic at the last control step, laid out as
        `keras_lopt.features.CRITIC_FEATURE_NAMES`; never shown to the controller."""
        self._require_controller("critic_observation")
        return keras.ops.convert_to_numpy(self._control.variables["critic_observation"])

    @property
    def controller_state(self):
        """The controller's recurrent state after the last control step, a NumPy vector."""
        self._require_controller("controller_state")
        return keras.ops.convert_to_numpy(self._control.variables["controller_state"])

    @property
    def control_start(self):
        """The stored hyperparameters (variables, 1 - beta for the betas) that the
        controller's "relative to start" features count from."""
        self._require_controller("control_start")
        return self._control.start

    def observe_validation_loss(self, value):
        """Feeds a validation loss (eagerly, for example from a callback).

        The controller sees it from the next control step on, as is-nan and
        is-inf flags and as history CDFs against the earlier validation
        losses of this run; never raw.
        """
        self._require_controller("observe_validation_loss")
        self._control.observe_validation_loss(value)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(
            var_list, ["momentum", "velocity"]
        )
        # Per-tensor running mean of the update norm and its bias correction,
        # only for tensors that use the trust ratio.
        self._update_norms = []
        self._update_norm_corrections = []
        for variable in var_list:
            if len(variable.shape) >= 2:
                # Raw tf.Variables have no Keras path.
                prefix = str(getattr(variable, "path", variable.name)).replace("/", "_").replace(":", "_")
                self._update_norms.append(self._scalar_variable(f"{prefix}_update_norm"))
                self._update_norm_corrections.append(
                    self._scalar_variable(f"{prefix}_update_norm_correction")
                )
            else:
                self._update_norms.append(None)
                self._update_norm_corrections.append(None)

    @property
    def hyperparameters(self):
        """The current hyperparameters, as a dict of name -> Python float."""
        values = {}
        for name, variable in self._hyperparameter_variables.items():
            stored = float(keras.ops.convert_to_numpy(variable))
            values[name] = stored_value(name, stored)
        return values

    def set_hyperparameters(self, **values):
        """Sets hyperparameters by name, e.g. `set_hyperparameters(beta_1=0.95)`."""
        self._assign_hyperparameters(self._hyperparameter_variables, _validate_all(values))

    def reset_hyperparameters(self, **values):
        """Sets hyperparameters as if LHOPT had been constructed with them.

        Unlike `set_hyperparameters`, the new values also become the initial
        ones the controller's features measure hyperparameters against (and
        what `get_config` reports). Meta-training starts each episode from new
        random hyperparameters this way without recompiling the task; do it
        before training starts, not in the middle of a run.
        """
        checked = _validate_all(values)
        self._assign_hyperparameters(self._hyperparameter_variables, checked)
        self.initial_hyperparameters.update(checked)
        if self.controller_on:
            self._assign_hyperparameters(self._control.start, checked)

    @staticmethod
    def _assign_hyperparameters(variables, values):
        for name, value in values.items():
            variables[name].assign(stored_value(name, value))

    def apply_action(self, action, amounts=None):
        """Moves the hyperparameters by one controller action.

        Args:
            action: ints of shape `[len(keras_lopt.actions.ACTION_HEADS)]`,
                one choice per head (see `keras_lopt.actions`). Works eagerly
                and inside a compiled function.
            amounts: optional float32 `[len(ACTION_HEADS)]` to move by instead
                of the action's choices (as a controller with an "amount"
                output does, e.g. `keras_lopt.actions.scheduled_amounts`);
                the action is then only recorded for the next observation.
        """
        if not tf.is_tensor(action):
            actions.check_action(action)
        action = tf.cast(action, tf.int32)
        if amounts is None:
            amounts = actions.chosen_amounts(action)
        stored = {name: tf.convert_to_tensor(v) for name, v in self._hyperparameter_variables.items()}
        moved = self.moved_hyperparameters(stored, amounts)
        for name, value in moved.items():
            self._hyperparameter_variables[name].assign(value)
        if self.controller_on:
            self._control.variables["previous_action"].assign(action)

    def moved_hyperparameters(self, stored, amounts):
        """The stored hyperparameters moved by `amounts`, the learning rate kept at
        or below `max_learning_rate` (or where it was, if higher)."""
        moved = actions.apply_amounts(stored, amounts)
        if self.max_learning_rate is not None:
            current = tf.cast(stored["learning_rate"], tf.float32)
            ceiling = tf.maximum(tf.constant(self.max_learning_rate, tf.float32), current)
            moved["learning_rate"] = tf.minimum(moved["learning_rate"], ceiling)
        return moved

    def scale_loss(self, loss):
        # Keras' TensorFlow train_step passes every step's loss through here:
        # the controller's loss features come from it.
        self.observe_training_loss(loss)
        return super().scale_loss(loss)

    def observe_training_loss(self, loss):
        """Banks a training step's loss for the controller's loss features.

        `scale_loss`, which Keras' `fit` calls every step, does it; call it (or
        `scale_loss`) yourself in a custom training loop.
        """
        if self.controller_on:
            self._control.record_loss(loss)
        self._loss_observed = True

    @property
    def run_steps(self):
        """Updates since the current run began (`start_new_run`); without a
        controller, `iterations`."""
        if not self.controller_on:
            return int(keras.ops.convert_to_numpy(self.iterations))
        return int(keras.ops.convert_to_numpy(self._control.variables["update_count"]))

    def start_new_run(self, total_steps=None, **hyperparameters):
        """Plans a new run from the current weights and optimizer moments.

        For training on after a run has ended (its learning-rate schedule is
        over) or fine-tuning a loaded model: the hyperparameters start again
        from `hyperparameters` (default: the constructor's), and the controller
        starts afresh (progress 0, its memory of the last run cleared). The new
        run lasts `total_steps` updates; with `None`, `ControllerCallback` plans
        it from the next `fit`.

        ```python
        model.optimizer.start_new_run()
        model.fit(x, y, epochs=3, callbacks=[keras_lopt.ControllerCallback()])
        ```
        """
        self.reset_hyperparameters(**{**self.initial_hyperparameters, **hyperparameters})
        if self.controller_on:
            self._control.restart()
        self.total_steps = total_steps
        user_warnings.forget(self, "run_over")

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # Overrides the TensorFlow backend's step: LHOPT needs the global
        # gradient norm before any tensor is updated. Gradients are summed
        # over replicas first, so every replica computes the same scalars.
        variables = [v.value if isinstance(v, keras.Variable) else v for v in trainable_variables]
        reduced = self._all_reduce_sum_gradients(list(zip(grads, variables)))
        # Sparse (IndexedSlices) gradients are densified: the moments decay
        # everywhere, so every row is updated.
        grads = [tf.convert_to_tensor(g) for g, _ in reduced]
        step = self._global_step(grads)
        # Every tensor's new state, computed once: the update writes it and the control branch reads it.
        # Reading the variables inside the branch instead would make XLA copy them on every step.
        updates = self._new_states(grads, variables, step)
        if self.controller_on:
            control = self._control.step(step, lambda: self._tensor_statistics(grads, variables, updates, step))
        merge_call = tf.__internal__.distribute.interim.maybe_merge_call
        merge_call(self._distributed_step, self._distribution_strategy, variables, updates, step)
        self._warn_when_traced()
        if self.controller_on:
            merge_call(self._assign_control, self._distribution_strategy, control)

    def _warn_when_traced(self):
        """What can be seen when the train step is traced (or runs eagerly), warned once each."""
        if not self.controller_on:
            return
        # Not reset after the check: under tf.distribute replicas trace the step in threads of their own.
        if not self._loss_observed:
            user_warnings.warn(self, "no_loss", NO_LOSS_MESSAGE)
        if self._controller is None:
            return
        if self._total_steps is None:
            user_warnings.warn(self, "unknown_run_length", _unknown_run_length_message(self._controller))
            return
        with tf.init_scope():  # the values now, outside the step being traced
            done = self.run_steps
            if done >= self._total_steps:
                user_warnings.warn(self, "run_over", run_over_message(self, done))

    def _global_step(self, grads):
        """Scalars shared by every tensor in this step, as a dict of tensors."""
        hp = {
            HYPERPARAMETERS[name].stored_as: tf.convert_to_tensor(variable)
            for name, variable in self._hyperparameter_variables.items()
        }
        squared = [_sum_of_squares(g) for g in grads]
        norm = tf.sqrt(tf.add_n(squared))
        finite = tf.math.is_finite(norm)
        old_max = tf.convert_to_tensor(self._gradient_norm_max)
        norm_max = tf.maximum(norm, old_max * (1.0 - hp["clip_ema"]))
        clip_ratio = hp["clip_threshold"] * norm_max / (norm + _CLIP_DENOMINATOR_EPS)
        old_bc1 = tf.convert_to_tensor(self._bias_correction_1)
        bias_correction_1 = old_bc1 * (1.0 - hp["one_minus_beta_1"]) + hp["one_minus_beta_1"]
        return {
            "finite": finite,
            "gradient_norm": norm,
            "clip_scale": tf.minimum(clip_ratio, 1.0),
            "gradient_norm_max": tf.where(finite, norm_max, old_max),
            "bias_correction_1": tf.where(finite, bias_correction_1, old_bc1),
            "did_clip": tf.where(
                finite, tf.cast(clip_ratio < 1.0, tf.float32), tf.convert_to_tensor(self._did_clip)
            ),
            **hp,
        }

    def _distributed_step(self, distribution, variables, updates, step):
        for name in ("gradient_norm_max", "bias_correction_1", "did_clip"):
            variable = getattr(self, f"_{name}").value
            distribution.extended.update(variable, _assign_value, args=(step[name],), group=False)
        for variable, new in zip(variables, updates):
            distribution.extended.update(variable, self._update_tensor, args=(new,), group=False)

    def _assign_control(self, distribution, control):
        for name, value in control.items():
            variable = self._control.variables[name].value
            distribution.extended.update(variable, _assign_value, args=(value,), group=False)

    def _update_tensor(self, variable, new):
        index = self._get_variable_index(variable)
        self._momentums[index].value.assign(new["m"])
        self._velocities[index].value.assign(new["v"])
        if self._update_norms[index] is not None:
            self._update_norms[index].value.assign(new["update_norm"])
            self._update_norm_corrections[index].value.assign(new["update_norm_correction"])
        variable.assign(new["p"])

    def _new_states(self, grads, variables, step):
        """Every tensor's state after this step's update, computed from its state before it: the moments
        "m" and "v", the parameter "p" and, for tensors with a trust ratio, the update norm's EMA and its
        bias correction.

        The passes over each tensor's elements are per tensor; the trust ratios' scalar arithmetic is done
        once for all tensors, as vectors, so that a model with many tensors compiles to few small ops.
        """
        finite = step["finite"]
        states = [self._new_moments(variable, grad, step) for grad, variable in zip(grads, variables)]
        learning_rates = [tf.where(finite, step["learning_rate"], 0.0)] * len(states)
        indices = [self._get_variable_index(variable) for variable in variables]
        trusted = [i for i, index in enumerate(indices) if self._update_norms[index] is not None]
        if trusted:
            old_norm = tf.stack([tf.convert_to_tensor(self._update_norms[indices[i]]) for i in trusted])
            old_correction = tf.stack(
                [tf.convert_to_tensor(self._update_norm_corrections[indices[i]]) for i in trusted])
            update_norms = tf.stack([_norm(states[i]["u"]) for i in trusted])
            parameter_norms = tf.stack([_norm(variables[i]) for i in trusted])
            rate = step["update_norm_ema"]
            norm = old_norm * (1.0 - rate) + rate * update_norms
            correction = old_correction * (1.0 - rate) + rate
            ratios = _trust_ratio(parameter_norms, norm / correction)
            norm = tf.unstack(tf.where(finite, norm, old_norm))
            correction = tf.unstack(tf.where(finite, correction, old_correction))
            ratios = tf.unstack(ratios)
            for k, i in enumerate(trusted):
                states[i]["update_norm"] = norm[k]
                states[i]["update_norm_correction"] = correction[k]
                learning_rates[i] = learning_rates[i] * ratios[k]
        for state, variable, learning_rate in zip(states, variables, learning_rates):
            state["p"] = tf.convert_to_tensor(variable) - tf.cast(learning_rate, variable.dtype) * state.pop("u")
        return states

    def _new_moments(self, variable, grad, step):
        """One tensor's new moments "m" and "v" and its update direction "u"."""
        index = self._get_variable_index(variable)
        dtype = variable.dtype

        def cast(x):
            return tf.cast(x, dtype)

        finite = step["finite"]
        m_old = tf.convert_to_tensor(self._momentums[index])
        v_old = tf.convert_to_tensor(self._velocities[index])
        p = tf.convert_to_tensor(variable)
        # A non-finite step leaves m, v and p as they are by zeroing the gradient and setting the scalars
        # that move them to their identities: one select on g, instead of three on the state.
        one_minus_beta_1 = cast(tf.where(finite, step["one_minus_beta_1"], 0.0))
        beta_2 = 1.0 - cast(tf.where(finite, step["one_minus_beta_2"], 0.0))
        weight_decay = cast(step["weight_decay"]) if self._use_weight_decay(variable) else 0.0

        g = tf.where(finite, cast(grad) * cast(step["clip_scale"]), tf.zeros_like(p))
        m = m_old + one_minus_beta_1 * (g - m_old)
        v = tf.maximum(beta_2 * v_old, tf.abs(g))
        u = m / (v + cast(step["epsilon"])) / cast(step["bias_correction_1"]) + weight_decay * p
        return {"m": m, "v": v, "u": u}

    def _tensor_statistics(self, grads, variables, updates, step):
        """The controller's statistics of every tensor after its update (`updates`, from `_new_states`).

        They describe the state the next steps start from: the new moments
        and parameters, this step's (clipped) gradient, and the direction and
        learning rate the new moments give. Each tensor contributes one
        reduction; the rest is computed for all tensors at once, which keeps
        the compiled program small for models with many tensors.
        """
        sums, sizes, mean_update_norms = [], [], []
        for grad, variable, new in zip(grads, variables, updates):
            index = self._get_variable_index(variable)
            p = tf.cast(new["p"], tf.float32)
            g = tf.cast(grad, tf.float32) * step["clip_scale"]
            m_hat = tf.cast(new["m"], tf.float32) / step["bias_correction_1"]
            v = tf.cast(new["v"], tf.float32)
            weight_decay = step["weight_decay"] if self._use_weight_decay(variable) else 0.0
            u = m_hat / (v + step["epsilon"]) + weight_decay * p
            sums.append(features.tensor_sums(g, m_hat, v, u, p, step["epsilon"]))
            sizes.append(float(tf.TensorShape(variable.shape).num_elements()))
            if self._update_norms[index] is None:
                mean_update_norms.append(tf.constant(math.nan))  # no trust ratio
            else:
                mean_update_norms.append(
                    new["update_norm"] / tf.maximum(new["update_norm_correction"], _TRUST_RATIO_MIN_NORM))
        sums, mean_update_norms = tf.stack(sums), tf.stack(mean_update_norms)
        parameter_norms = tf.sqrt(sums[:, features.TENSOR_SUMS.index("p_p")])
        trust_ratios = tf.where(tf.math.is_nan(mean_update_norms), 1.0,
                                _trust_ratio(parameter_norms, mean_update_norms))
        return features.statistics_from_sums(sums, tf.constant(sizes), step["learning_rate"] * trust_ratios)

    def get_config(self):
        """The constructor arguments; hyperparameters are the initial values.

        The current values live in optimizer variables and are saved with the
        model's weights.
        """
        config = super().get_config()
        config.update(self.initial_hyperparameters)
        config["max_learning_rate"] = self.max_learning_rate
        policy = self.policy
        config.update(
            policy=policy.get_config() if isinstance(policy, Controller) else policy,
            total_steps=self.total_steps,
            control_every=self._control_every,
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Trust follows the caller, never the config: keras.models.load_model's
        # safe_mode (True unless the user says otherwise), else safe.
        safe_mode = serialization_lib.in_safe_mode() is not False
        return super().from_config({**config, "safe_mode": safe_mode}, custom_objects)

    # `model.save` calls these: the controller is embedded in the .keras file,
    # so `keras.models.load_model` works after its directory is gone.
    def save_assets(self, dir_path):
        if self._controller is not None:
            self._controller.write(dir_path)

    def load_assets(self, dir_path):
        if self._controller is not None:
            self._controller.read(dir_path)


LHOPT.__doc__ = LHOPT.__doc__.replace(
    "{{base_optimizer_keyword_args}}",
    keras.src.optimizers.optimizer.base_optimizer_keyword_args,
)


NO_LOSS_MESSAGE = (
    "LHOPT's controller sees no training loss: the loss reaches it through optimizer.scale_loss(loss), which "
    "Keras' fit calls every step and this training step did not, so the controller acts without its loss "
    "features. In a custom training loop, write loss = optimizer.scale_loss(loss) before taking gradients (or "
    "call optimizer.observe_training_loss(loss)). Under mixed precision Keras wraps LHOPT in a "
    "LossScaleOptimizer: pass keras_lopt.ControllerCallback() to fit, or call "
    "keras_lopt.connect_loss_scale_optimizer(optimizer) once in a custom loop."
)


def run_over_message(optimizer, done):
    message = (
        f"This training starts at update {done} of LHOPT's run, at or past its planned end (total_steps="
        f"{optimizer.total_steps}): its controller never saw progress past 1"
    )
    policy = optimizer.policy
    if isinstance(policy, Controller) and policy.learning_rate_schedule != "constant":
        rate = optimizer.hyperparameters["learning_rate"]
        message += (
            f", and its {policy.learning_rate_schedule} learning-rate schedule has ended: "
            f"the learning rate stays at its end value, {rate:.3g}"
        )
    return message + (
        ". To train on, call model.optimizer.start_new_run() before fit (with keras_lopt.ControllerCallback() "
        "it plans the new run's length); to plan a longer run, set total_steps before the first fit."
    )


def _unknown_run_length_message(controller):
    consequence = "it sees no progress through training"
    if controller.learning_rate_schedule != "constant":
        consequence = (f"its {controller.learning_rate_schedule} learning-rate schedule cannot run "
                       f"and the learning rate stays where it starts")
    return (
        f"LHOPT's controller {controller.name!r} was meta-trained knowing how long training runs, "
        f"but total_steps is not set, so {consequence}. Pass keras_lopt.ControllerCallback() to "
        f"fit (it sets total_steps from epochs and steps), or LHOPT(total_steps=...)."
    )
