"""Step time, first-step (compile) time and optimizer memory of LHOPT against Keras' Adam, AdamW and Lamb.

For each model, identical copies are compiled with `jit_compile=True`: one per
optimizer. Their compiled train functions are timed in one process, in
interleaved blocks (the order alternates every round), so all see the same
machine load. Reported per optimizer: the median step time and its ratio to
Adam's; the first step's time (tracing and XLA compilation) and its excess
over Adam's; the optimizer's state in bytes per trainable parameter.

LHOPT is timed with its controller off (`policy=None`) and with the packaged
default controller: at its default cadence for a run of 2,500 steps (a control
step every 50 steps, as `ControllerCallback` plans about 50 per run), every 10
steps (its cadence while the run's length is unknown) and every step (its worst
case). Timed blocks are a multiple of 50 steps so every block holds the same
number of control steps. The ratio to Adam is the median of the per-round
ratios (each block against Adam's block of the same round), with their
quartiles. The device is the one TensorFlow picks (a GPU if there is one) and
is recorded with the results.

    python benchmarks/overhead.py    # writes benchmarks/results/overhead.json and .md
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_lopt  # noqa: E402
from keras_lopt.control import control_every_for  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "overhead.json"


def _mlp(widths):
    def build():
        layers = [keras.Input((784,))]
        layers += [keras.layers.Dense(w, activation="relu") for w in widths]
        layers += [keras.layers.Dense(10)]
        return keras.Sequential(layers)
    return build, (784,)


def _cnn():
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10),
    ])


def _transformer(blocks=3, width=512, heads=8, sequence=64, vocabulary=2048):
    """A small transformer classifier: embedding, `blocks` pre-norm causal blocks, a 10-way head; about 10M
    parameters with the defaults."""
    def build():
        tokens = keras.Input((sequence,), dtype="int32")
        x = keras.layers.Embedding(vocabulary, width)(tokens)
        for _ in range(blocks):
            h = keras.layers.LayerNormalization()(x)
            x = x + keras.layers.MultiHeadAttention(heads, width // heads)(h, h, use_causal_mask=True)
            h = keras.layers.LayerNormalization()(x)
            x = x + keras.layers.Dense(width)(keras.layers.Dense(4 * width, activation="gelu")(h))
        logits = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling1D()(keras.layers.LayerNormalization()(x)))
        return keras.Model(tokens, logits)
    return build, (sequence,)


MODELS = {
    "mlp_small": _mlp([128]),
    "cnn": (_cnn, (28, 28, 1)),
    "mlp_1m": _mlp([1024, 256]),
    "mlp_4m": _mlp([2048, 1024, 512]),
    "transformer_10m": _transformer(),
}
# Inputs drawn as integer tokens rather than Gaussian features.
TOKEN_MODELS = {"transformer_10m": 2048}


# The run length whose default cadence is timed: a control step every 50 steps.
DEFAULT_CADENCE_RUN_STEPS = 2_500


def _optimizers(control_every):
    """Name -> factory of the optimizers compared; the first is the baseline."""
    optimizers = {
        "adam": lambda: keras.optimizers.Adam(),
        "adamw": lambda: keras.optimizers.AdamW(),
        "lamb": lambda: keras.optimizers.Lamb(),
        "lhopt_controller_off": lambda: keras_lopt.LHOPT(policy=None),
        "lhopt_default": lambda: keras_lopt.LHOPT(total_steps=DEFAULT_CADENCE_RUN_STEPS),
    }
    for every in control_every:
        # total_steps so that the controller sees a run in progress, as under ControllerCallback.
        optimizers[f"lhopt_default_every_{every}"] = lambda every=every: keras_lopt.LHOPT(
            total_steps=1_000_000, control_every=every
        )
    return optimizers


def _train_function(model_name, optimizer, batch_size):
    """(model, first step's seconds, run(steps)) for a compiled model of `model_name` training with `optimizer`."""
    build, input_shape = MODELS[model_name]
    keras.utils.set_random_seed(0)
    model = build()
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    rng = np.random.default_rng(0)
    if model_name in TOKEN_MODELS:
        x = rng.integers(0, TOKEN_MODELS[model_name], size=(batch_size, *input_shape)).astype(np.int32)
    else:
        x = rng.normal(size=(batch_size, *input_shape)).astype(np.float32)
    y = rng.integers(0, 10, size=(batch_size,))
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)  # builds, traces, compiles, one step
    first_step_seconds = time.perf_counter() - start
    iterator = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
    model.make_train_function()

    def run(steps):
        for _ in range(steps):
            logs = model.train_function(iterator)
        float(logs["loss"])  # wait for the last step

    return model, first_step_seconds, run


def _state_bytes_per_parameter(model):
    parameters = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    state = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.optimizer.variables)
    return state / parameters, parameters


def benchmark(model_names, model_rounds, steps, warmup, batch_sizes, optimizers):
    results = []
    for model_name in model_names:
        batch_size = batch_sizes.get(model_name, batch_sizes["default"])
        rounds = model_rounds.get(model_name, model_rounds["default"])
        runs, memory, first_step = {}, {}, {}
        for opt_name, make in optimizers.items():
            model, first_step[opt_name], run = _train_function(model_name, make(), batch_size)
            run(warmup)
            runs[opt_name] = run
            memory[opt_name], parameters = _state_bytes_per_parameter(model)
        times = {name: [] for name in runs}
        for r in range(rounds):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))
            for name in order:
                start = time.perf_counter()
                runs[name](steps)
                times[name].append((time.perf_counter() - start) / steps)
        baseline = next(iter(runs))
        for name in runs:
            median = statistics.median(times[name])
            ratios = [t / b for t, b in zip(times[name], times[baseline])]
            ratio_quartiles = statistics.quantiles(ratios, n=4, method="inclusive")
            row = {
                "model": model_name,
                "parameters": parameters,
                "batch_size": batch_size,
                "steps_per_block": steps,
                "rounds": rounds,
                "optimizer": name,
                "median_step_ms": round(1e3 * median, 4),
                "ratio_to_adam": round(statistics.median(ratios), 4),
                "ratio_to_adam_quartiles": [round(ratio_quartiles[0], 4), round(ratio_quartiles[2], 4)],
                "first_step_seconds": round(first_step[name], 3),
                "extra_first_step_seconds": round(first_step[name] - first_step[baseline], 3),
                "state_bytes_per_parameter": round(memory[name], 4),
            }
            results.append(row)
            print(
                f"{model_name:16s} {parameters:>11,d} params  {name:24s} "
                f"{row['median_step_ms']:9.3f} ms/step  x{row['ratio_to_adam']:.3f} "
                f"[{row['ratio_to_adam_quartiles'][0]:.3f}-{row['ratio_to_adam_quartiles'][1]:.3f}]  "
                f"first step {row['first_step_seconds']:6.2f} s  state {row['state_bytes_per_parameter']:.3f} B/param",
                flush=True,
            )
    return results


def markdown_table(record):
    """The results as a markdown table, generated from the JSON record."""
    lines = [
        f"Generated by `python benchmarks/overhead.py` on {record['date']} on {record['device']} "
        f"({record['machine']['cpus']} CPUs, TensorFlow {record['versions']['tensorflow']}, "
        f"Keras {record['versions']['keras']}, jit_compile=True, median of {record['settings']['rounds']} "
        f"interleaved blocks of {record['settings']['steps']} steps ({record['settings']['transformer_rounds']} for "
        f"the transformer); ratio to Adam: median of the per-round ratios, with their quartiles).",
        "",
        "| model | parameters | batch | optimizer | ms/step (median) | ratio to Adam | quartiles | first step s "
        "| first step s over Adam | state bytes/param |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in record["results"]:
        lines.append(
            f"| {row['model']} | {row['parameters']:,} | {row['batch_size']} | {row['optimizer']} "
            f"| {row['median_step_ms']:.2f} | {row['ratio_to_adam']:.3f} "
            f"| {row['ratio_to_adam_quartiles'][0]:.3f}-{row['ratio_to_adam_quartiles'][1]:.3f} "
            f"| {row['first_step_seconds']:.2f} "
            f"| {row['extra_first_step_seconds']:+.2f} | {row['state_bytes_per_parameter']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _device():
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
        return f"GPU ({details.get('device_name', gpus[0].name)})"
    return f"CPU ({platform.processor() or platform.machine()})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--transformer-rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50, help="steps per timed block (a multiple of 50)")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--transformer-batch-size", type=int, default=16)
    parser.add_argument("--control-every", type=int, nargs="+", default=[10, 1])
    parser.add_argument("--output", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args()
    # Every block holds the same number of control steps: a cadence divides the block, or is longer than all
    # the steps a model takes (then no block holds one, which times what the controller costs on other steps).
    steps_taken = 1 + args.warmup + max(args.rounds, args.transformer_rounds) * args.steps
    cadences = [control_every_for(DEFAULT_CADENCE_RUN_STEPS), *args.control_every]
    if any(args.steps % every and every <= steps_taken for every in cadences):
        parser.error(f"--steps must be a multiple of every control cadence timed ({cadences}) shorter than the "
                     f"{steps_taken} steps a model takes, so that every block holds the same number of control "
                     f"steps; got {args.steps}.")
    batch_sizes = {"default": args.batch_size, "transformer_10m": args.transformer_batch_size}
    rounds = {"default": args.rounds, "transformer_10m": args.transformer_rounds}
    results = benchmark(args.models, rounds, args.steps, args.warmup, batch_sizes, _optimizers(args.control_every))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "overhead",
        "method": "median step time of compiled (jit_compile=True) train functions, "
                  "interleaved blocks in one process; first step timed alone",
        "device": _device(),
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                     "keras_lopt": keras_lopt.__version__},
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown_table(record))
    print(f"wrote {args.output} and {args.output.with_suffix('.md')}")


if __name__ == "__main__":
    main()
