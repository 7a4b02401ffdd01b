"""Trains a task in XLA-compiled chunks (docs/design.md).

One chunk is `control_every` optimizer steps inside one
`tf.function(jit_compile=True)` loop: batches are drawn by index from tensors
held in memory, so no Python or `tf.data` runs between steps.

Convolutions are the exception. On XLA:CPU a convolution inside a compiled
while loop ran about 5x slower than the same step compiled without a loop
(digits CNN: 7.5 ms against 1.5 ms per step), so for `UNROLLED_FAMILIES` a
chunk is a few calls of a compiled block of `unroll` steps written out
without a loop (1.4 ms per step with 4-step blocks). For other models the
while loop is the faster choice (a 1.5k-parameter MLP: 0.03 ms per step
against 0.2 ms with blocks called from Python). The same code runs on a
CPU here and on a GPU unchanged. With LHOPT in external-control mode a chunk
ends right after a control step's features are computed; the caller reads
`optimizer.observation`, picks an action and calls `optimizer.apply_action`.
"""

import time

import keras
import numpy as np
import tensorflow as tf

import keras_lopt


def make_optimizer(spec, kind="lhopt", policy=keras_lopt.lhopt.EXTERNAL):
    """The optimizer a task trains with.

    kind: "lhopt" (the task's randomised initial hyperparameters, controller
    `policy`, its total steps and control interval) or "adam" (Keras' Adam at
    its defaults, the baseline).
    """
    if kind == "adam":
        return keras.optimizers.Adam()
    if kind == "lhopt":
        return keras_lopt.LHOPT(
            **spec.initial_hyperparameters,
            # Meta-training's random starts go down to 1e-2x the reference rate:
            # the controller must be free to repair them (and was trained so).
            max_learning_rate=None,
            policy=policy,
            total_steps=spec.total_steps,
            control_every=spec.control_every,
        )
    raise ValueError(f"Unknown optimizer kind '{kind}'; use 'lhopt' or 'adam'.")


class _at_schedule_free_average:
    """Within it, each variable holds schedule-free AdamW's averaged point x = (y - (1 - beta_1) z) / beta_1
    (Keras' implementation keeps y in the variable and z in its "momentum" slot); restored to y after."""

    def __init__(self, optimizer, variables):
        self.optimizer, self.variables = optimizer, list(variables)

    def __enter__(self):
        self.saved = [v.numpy() for v in self.variables]
        if not self.optimizer.built:
            return
        beta_1 = float(self.optimizer.beta_1)
        for variable, y in zip(self.variables, self.saved):
            z = self.optimizer._momentums[self.optimizer._get_variable_index(variable)].numpy()
            variable.assign((y - (1.0 - beta_1) * z) / beta_1)

    def __exit__(self, *exc):
        for variable, y in zip(self.variables, self.saved):
            variable.assign(y)


UNROLLED_FAMILIES = ("image_cnn",)
MAX_UNROLL = 4


def _largest_divisor(n, limit):
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


class TaskRun:
    """One training run of a task with one optimizer.

    Args:
        task: a `training.tasks.Task`.
        optimizer: a Keras optimizer (see `make_optimizer`).
        chunk_steps: steps per compiled chunk; defaults to the task's
            `control_every`, so one chunk is one control step.
        jit_compile: compile chunks with XLA (the default, as in meta-training).
        unroll: 0 runs a chunk as one compiled while loop; n > 0 as calls of a
            compiled block of n steps without a loop (n must divide
            `chunk_steps`). Defaults to the largest divisor of `chunk_steps`
            up to `MAX_UNROLL` for `UNROLLED_FAMILIES`, else 0.
    """

    def __init__(self, task, optimizer, chunk_steps=None, jit_compile=True, unroll=None):
        self.task = task
        self.optimizer = optimizer
        self.chunk_steps = int(chunk_steps or task.spec.control_every)
        if unroll is None:
            unroll = _largest_divisor(self.chunk_steps, MAX_UNROLL) if task.spec.family in UNROLLED_FAMILIES else 0
        if unroll and self.chunk_steps % unroll:
            raise ValueError(f"unroll={unroll} must divide chunk_steps={self.chunk_steps}.")
        self.unroll = int(unroll)
        self.model = task.make_model()
        self.optimizer.build(self.model.trainable_variables)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="task_step")
        self.chunk_seconds = []  # wall time of each train chunk (the first includes compiling)
        # Closures rather than bound methods: one tf.function per run, so
        # TensorFlow does not count new runs as retracing of one function.
        self._train_chunk = tf.function(lambda: self._train_chunk_fn(), jit_compile=jit_compile)
        self._eval_loss = tf.function(lambda: self._eval_loss_fn(), jit_compile=jit_compile)

    def _train_step(self):
        x, y = self.task.train_batch(self.step)
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            loss = self.task.loss(y, self.model(x, training=True))
            # LHOPT records the loss here for its features, as in model.fit.
            scaled = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self.step.assign_add(1)
        return loss

    def _train_chunk_fn(self):
        total = tf.constant(0.0)
        if self.unroll:
            for _ in range(self.unroll):  # Python loop: written out, no while loop
                total += tf.cast(self._train_step(), tf.float32)
            return total / self.unroll
        for _ in tf.range(self.chunk_steps):
            total += tf.cast(self._train_step(), tf.float32)
        return total / self.chunk_steps

    def _eval_loss_fn(self):
        x, y = self.task.eval_batch()
        return tf.cast(self.task.loss(y, self.model(x, training=False)), tf.float32)

    def train_chunk(self):
        """Runs `chunk_steps` steps; returns their mean training loss."""
        start = time.perf_counter()
        if self.unroll:
            blocks = [self._train_chunk() for _ in range(self.chunk_steps // self.unroll)]
            loss = float(tf.reduce_mean(blocks))
        else:
            loss = float(self._train_chunk())
        self.chunk_seconds.append(time.perf_counter() - start)
        return loss

    def step_seconds(self):
        """Median wall time of one compiled step (the compiling first chunk left out)."""
        timed = self.chunk_seconds[1:] or self.chunk_seconds
        return float(np.median(timed)) / self.chunk_steps if timed else float("nan")

    def compile_seconds(self):
        """The first chunk's wall time beyond a compiled chunk's (tracing and compiling)."""
        if not self.chunk_seconds:
            return float("nan")
        return max(0.0, self.chunk_seconds[0] - self.step_seconds() * self.chunk_steps)

    def eval_loss(self):
        """The loss on the task's eval set (a float, possibly nan or inf).

        Schedule-free AdamW is evaluated where its authors prescribe: at the
        averaged point x, not at the interpolation y the model trains at.
        """
        if isinstance(self.optimizer, keras.optimizers.ScheduleFreeAdamW):
            with _at_schedule_free_average(self.optimizer, self.model.trainable_variables):
                return float(self._eval_loss())
        return float(self._eval_loss())

    @property
    def steps_done(self):
        return int(self.step.numpy())

    def run(self, chunks=None, on_chunk=None):
        """Trains for `chunks` chunks (default: the whole budget).

        Returns the eval-loss curve as (steps, losses) arrays, with the loss
        at initialisation (step 0) first. `on_chunk(run)` is called after each
        chunk, before its eval loss is read.
        """
        if chunks is None:
            chunks = self.task.spec.total_steps // self.chunk_steps
        steps, losses = [self.steps_done], [self.eval_loss()]
        for _ in range(chunks):
            self.train_chunk()
            if on_chunk is not None:
                on_chunk(self)
            steps.append(self.steps_done)
            losses.append(self.eval_loss())
        return np.asarray(steps), np.asarray(losses)
