"""The in-graph control loop: every `control_every` updates, statistics ->
features -> controller -> moves, inside the compiled train step.

`LHOPT` owns one `ControlLoop` when its features are computed (a controller,
or `policy="external"`). All of the loop's state (feature histories, previous
values, the controller's recurrent state, the loss seen since the last control
step) lives in optimizer variables, so it compiles under XLA, is checkpointed
with the optimizer and resumes exactly.
"""

import math

import tensorflow as tf

from keras_lopt import actions, features
from keras_lopt.hyperparameters import TABLE

# With control_every=None the controller acts about AUTO_CONTROL_STEPS times in
# a run of known length, and every FALLBACK_CONTROL_EVERY steps while the run
# length is unknown. The packaged controller was meta-trained on runs of 2-128
# control steps, last at 32-80; acting far more often compounds its per-step
# moves (docs/design.md, "Decisions").
AUTO_CONTROL_STEPS = 50
FALLBACK_CONTROL_EVERY = 10


def control_every_for(total_steps, control_steps=AUTO_CONTROL_STEPS):
    """The interval at which a run of `total_steps` has about `control_steps` control steps (at least 1)."""
    return max(1, total_steps // control_steps)


class ControlLoop:
    """The control loop's variables and its step.

    Args:
        variable: `(name, value, shape=(), dtype="float32") -> variable`, the
            optimizer's way of adding one (so the loop's state is the optimizer's).
        hyperparameter_variables: the optimizer's hyperparameter variables by
            name, in stored form; a control step reads and rewrites them.
        start: the hyperparameters the "relative to start" features count from.
        controller: a `keras_lopt.controller.Controller`, or None when actions
            come from outside (`LHOPT.apply_action`).
        move: `(stored, amounts) -> stored`, how the optimizer moves its
            hyperparameters (bounds and caps).
        total_steps, control_every: the run's planned length and cadence (0 if unknown).
    """

    def __init__(self, variable, hyperparameter_variables, start, controller, move, total_steps, control_every):
        self.controller = controller
        self._move = move
        history_shape = (len(features.TRANSFORMED), len(features.HISTORY_HORIZONS))
        state_size = controller.state_size if controller else 0
        # The initial value of every variable a new run starts from (`restart`).
        self._initial = {}

        add_variable = variable

        def variable(name, value=0.0, shape=(), dtype="float32"):
            created = add_variable(name, value, shape, dtype)
            self._initial[name] = (created, value)
            return created

        # Everything a control step rewrites, by name.
        self.variables = {
            "update_count": variable("update_count", 0, dtype="int64"),
            "history_weight": variable("history_weight", 0.0, history_shape),
            "history_mean": variable("history_mean", 0.0, history_shape),
            "history_var": variable("history_var", 0.0, history_shape),
            "observation": variable("observation", 0.0, (features.NUM_FEATURES,)),
            "critic_observation": variable("critic_observation", 0.0, (features.NUM_CRITIC_FEATURES,)),
            "previous_action": variable(
                "previous_action", actions.NOOP_ACTION, (len(actions.ACTION_HEADS),), "int32"
            ),
            "controller_state": variable("controller_state", 0.0, (state_size,)),
            "previous_loss": variable("previous_loss", math.nan),
            "previous_step_norm": variable("previous_step_norm", 0.0),
            "previous_parameter_norm": variable("previous_parameter_norm", 0.0),
            # The loss seen by `record_loss` since the last control step.
            "loss_sum": variable("loss_sum", 0.0),
            "loss_count": variable("loss_count", 0.0),
            **hyperparameter_variables,
        }
        # Where the "relative to start" features count from: variables, so that a
        # compiled step need not be retraced when they change.
        self.start = {
            hp.name: variable(f"initial_{hp.stored_as}", hp.stored(start[hp.name])) for hp in TABLE
        }
        self.total_steps = variable("total_steps", float(total_steps))
        self.control_every = variable("control_every", control_every, dtype="int64")
        # Validation loss: written eagerly by observe_validation_loss.
        self.val_loss = variable("val_loss", math.nan)
        # (seen, is_nan, is_inf, history CDFs...).
        self.val_loss_features = variable(
            "val_loss_features",
            [0.0] * 3 + [0.5] * len(features.HISTORY_HORIZONS),
            (3 + len(features.HISTORY_HORIZONS),),
        )
        self.val_history = [
            variable(f"val_loss_history_{part}", 0.0, (1, len(features.HISTORY_HORIZONS)))
            for part in ("weight", "mean", "var")
        ]

    def restart(self):
        """Back to the state before a run's first step: update count, feature histories, previous values,
        the controller's state, losses seen and validation history (not the hyperparameters or the start)."""
        for name, (variable, value) in self._initial.items():
            if not name.startswith(("initial_", "total_steps", "control_every")):
                variable.assign(tf.cast(tf.broadcast_to(value, variable.shape), variable.dtype))

    def set_run_length(self, total_steps, control_every):
        self.total_steps.assign(float(total_steps or 0))
        self.control_every.assign(control_every)

    def record_loss(self, loss):
        """Banks a step's training loss (in-graph) for the next control step."""
        seen = tf.stop_gradient(tf.cast(loss, tf.float32))
        replica_context = tf.distribute.get_replica_context()
        if replica_context is not None:
            # Each replica sees its share of the mean loss: sum them.
            seen = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, seen)
        self.variables["loss_sum"].assign_add(seen)
        self.variables["loss_count"].assign_add(1.0)

    def observe_validation_loss(self, value):
        """Feeds a validation loss eagerly; see `LHOPT.observe_validation_loss`."""
        value = float(value)
        history = tuple(tf.convert_to_tensor(v) for v in self.val_history)
        cdf, history = features.history_cdf(tf.constant([value]), history)
        for variable, new in zip(self.val_history, history):
            variable.assign(new)
        flags = [1.0, float(math.isnan(value)), float(math.isinf(value))]
        self.val_loss_features.assign(tf.concat([flags, cdf[0]], 0))
        self.val_loss.assign(value)

    def step(self, step, tensor_statistics):
        """New values of the loop's variables after this update, by name.

        On every `control_every`-th update the features are computed and the
        controller acts; on other steps only the update counter moves.
        `tensor_statistics()` gives every tensor's statistics as they are after
        this update (`keras_lopt.features.statistics_from_sums`); it is called
        on control steps only.
        """
        current = {name: tf.convert_to_tensor(v) for name, v in self.variables.items()}
        count = current["update_count"] + 1
        new = tf.cond(
            tf.equal(count % tf.convert_to_tensor(self.control_every), 0),
            lambda: self._control(step, tensor_statistics, current, count),
            lambda: dict(current),
        )
        new["update_count"] = count
        return new

    def _control(self, step, tensor_statistics, current, count):
        """Features, observation and the controller's action (docs/design.md, "Features")."""
        finite = step["finite"]
        statistics, parameter_norms, step_norms = tensor_statistics()
        statistics = tf.reduce_mean(statistics, axis=0)
        parameter_norm = tf.norm(parameter_norms)
        step_norm = tf.norm(step_norms)

        loss_seen = current["loss_count"] > 0.0
        loss = tf.where(loss_seen, current["loss_sum"] / tf.maximum(current["loss_count"], 1.0), math.nan)
        previous_loss = current["previous_loss"]
        comparable = (loss > 0.0) & (previous_loss > 0.0) & tf.math.is_finite(loss * previous_loss)

        def log_ratio(now, before, usable):
            return tf.where(usable, features.safe_log(now) - features.safe_log(before), 0.0)

        def squashed_ratio(now, before):
            return tf.tanh(log_ratio(now, before, finite & (before > 0.0)))

        raw = dict(zip(features.STATISTICS, tf.unstack(tf.concat([[step["did_clip"]], statistics], 0))))
        raw["train_loss_log_ratio"] = log_ratio(loss, previous_loss, comparable)
        raw["step_norm_log_ratio"] = squashed_ratio(step_norm, current["previous_step_norm"])
        raw["parameter_norm_log_ratio"] = squashed_ratio(parameter_norm, current["previous_parameter_norm"])
        raw["train_loss"] = loss
        stored = {hp.name: current[hp.name] for hp in TABLE}
        start = {name: tf.convert_to_tensor(v) for name, v in self.start.items()}
        raw.update(features.relative_to_start(stored, start))

        total_steps = tf.convert_to_tensor(self.total_steps)
        steps = tf.cast(count, tf.float32)
        val_loss_features = tf.convert_to_tensor(self.val_loss_features)
        flags = features.flags(
            progress=tf.where(total_steps > 0.0, steps / tf.maximum(total_steps, 1.0), 0.0),
            total_steps_known=total_steps > 0.0,
            train_loss_seen=loss_seen,
            train_loss_is_nan=loss_seen & tf.math.is_nan(loss),
            train_loss_is_inf=loss_seen & tf.math.is_inf(loss),
            val_loss_seen=val_loss_features[0],
            val_loss_is_nan=val_loss_features[1],
            val_loss_is_inf=val_loss_features[2],
        )
        history = (current["history_weight"], current["history_mean"], current["history_var"])
        observation, history = features.observation(
            flags, raw, val_loss_features[3:], current["previous_action"], history
        )
        critic_observation = features.critic_observation(
            train_loss=loss,
            val_loss=tf.convert_to_tensor(self.val_loss),
            log_step=tf.math.log(steps),
            log_total_steps=features.safe_log(total_steps),
            log_gradient_norm=features.safe_log(step["gradient_norm"]),
            log_parameter_norm=features.safe_log(parameter_norm),
            log_step_norm=features.safe_log(step_norm),
            **{f"log_{name}_stored": features.safe_log(value) for name, value in stored.items()},
        )

        action, state = current["previous_action"], current["controller_state"]
        if self.controller is not None:
            action, amounts, state = self.controller.move(observation, state)
            stored = self._move(stored, amounts)

        new = dict(current)
        new.update(stored)
        new.update(
            history_weight=history[0],
            history_mean=history[1],
            history_var=history[2],
            observation=observation,
            critic_observation=critic_observation,
            previous_action=action,
            controller_state=state,
            previous_loss=tf.where(loss_seen, loss, previous_loss),
            previous_step_norm=tf.where(finite, step_norm, current["previous_step_norm"]),
            previous_parameter_norm=tf.where(finite, parameter_norm, current["previous_parameter_norm"]),
            loss_sum=tf.zeros_like(current["loss_sum"]),
            loss_count=tf.zeros_like(current["loss_count"]),
        )
        return new
