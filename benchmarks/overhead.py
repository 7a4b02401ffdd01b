"""Step-time and memory overhead of LHOPT against keras.optimizers.Adam.

For each model, identical copies are compiled with `jit_compile=True`: one
with Adam, one with LHOPT with its controller off, and one with LHOPT driven
by a controller every 1, 10 (the default) and 50 steps. Their compiled train
functions are timed in one process, in interleaved blocks (the order
alternates every round), so all see the same machine load. The result is the
ratio of median step times, and the optimizer's state in bytes per trainable
parameter.

The controller has the size of the meta-trained policy (dense 256,
LSTM 256, dense 256, one head per hyperparameter) with random weights and a
random but deterministic choice of actions; its cost does not depend on its
weights. Timed blocks are a multiple of 50 steps so that every block holds
the same number of control steps.

    python benchmarks/overhead.py    # writes benchmarks/results/overhead.json and .md
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_lopt  # noqa: E402
from keras_lopt import actions, features  # noqa: E402

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


MODELS = {
    "mlp_small": _mlp([128]),
    "cnn": (_cnn, (28, 28, 1)),
    "mlp_1m": _mlp([1024, 256]),
    "mlp_4m": _mlp([2048, 1024, 512]),
}


class PolicySizedController(tf.Module):
    """Dense 256 -> LSTM 256 -> dense 256 -> one linear head per
    hyperparameter, greedy; random weights (only the cost matters here)."""

    def __init__(self, width=256, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)

        def weight(*shape):
            return tf.Variable(rng.normal(scale=shape[0] ** -0.5, size=shape).astype(np.float32))

        self.width = width
        self.w_in = weight(features.NUM_FEATURES, width)
        self.w_lstm = weight(2 * width, 4 * width)
        self.w_out = weight(width, width)
        self.heads = [weight(width, len(head.choices)) for head in actions.ACTION_HEADS]

    def __call__(self, observation, state):
        h, c = tf.split(state, 2, axis=1)
        x = tf.nn.relu(observation @ self.w_in)
        i, f, g, o = tf.split(tf.concat([x, h], 1) @ self.w_lstm, 4, axis=1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(c)
        y = tf.nn.relu(h @ self.w_out)
        action = tf.stack([tf.argmax(y @ w, axis=1, output_type=tf.int32) for w in self.heads], axis=1)
        return action, tf.concat([h, c], 1)


def _save_benchmark_controller(directory):
    path = pathlib.Path(directory) / "policy_sized"
    if not path.exists():
        keras_lopt.save_controller(
            path, PolicySizedController(), state_size=512,
            description="random weights, for timing only",
        )
    return str(path)


def _optimizers(controller_path, control_every):
    """Name -> factory of the optimizers compared; the first is the baseline."""
    optimizers = {
        "adam": lambda: keras.optimizers.Adam(),
        "lhopt": lambda: keras_lopt.LHOPT(policy=None),  # controller off
    }
    for every in control_every:
        optimizers[f"lhopt_controller_every_{every}"] = lambda every=every: keras_lopt.LHOPT(
            policy=controller_path, control_every=every
        )
    return optimizers


def _train_function(build, input_shape, optimizer, batch_size):
    keras.utils.set_random_seed(0)
    model = build()
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch_size, *input_shape)).astype(np.float32)
    y = rng.integers(0, 10, size=(batch_size,))
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)  # builds and traces
    iterator = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
    model.make_train_function()

    def run(steps):
        for _ in range(steps):
            logs = model.train_function(iterator)
        float(logs["loss"])  # wait for the last step

    return model, run


def _state_bytes_per_parameter(model):
    parameters = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    state = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.optimizer.variables)
    return state / parameters, parameters


def benchmark(model_names, rounds, steps, warmup, batch_size, optimizers):
    results = []
    for model_name in model_names:
        build, input_shape = MODELS[model_name]
        runs, memory = {}, {}
        for opt_name, make in optimizers.items():
            model, run = _train_function(build, input_shape, make(), batch_size)
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
        base_median = statistics.median(times[baseline])
        for name in runs:
            median = statistics.median(times[name])
            row = {
                "model": model_name,
                "parameters": parameters,
                "batch_size": batch_size,
                "optimizer": name,
                "median_step_ms": round(1e3 * median, 4),
                "ratio_to_adam": round(median / base_median, 4),
                "state_bytes_per_parameter": round(memory[name], 4),
                "extra_state_bytes_per_parameter": round(memory[name] - memory[baseline], 4),
            }
            results.append(row)
            print(
                f"{model_name:10s} {parameters:>9,d} params  {name:28s} "
                f"{row['median_step_ms']:8.3f} ms/step  x{row['ratio_to_adam']:.3f}  "
                f"state {row['state_bytes_per_parameter']:.3f} B/param",
                flush=True,
            )
    return results


def markdown_table(record):
    """The results as a markdown table, generated from the JSON record."""
    lines = [
        f"Generated by `python benchmarks/overhead.py` on {record['date']} "
        f"({record['machine']['cpus']} CPUs, TensorFlow {record['versions']['tensorflow']}, "
        f"batch {record['settings']['batch_size']}, jit_compile=True).",
        "",
        "| model | parameters | optimizer | ms/step (median) | ratio to Adam | extra state bytes/param |",
        "|---|---|---|---|---|---|",
    ]
    for row in record["results"]:
        lines.append(
            f"| {row['model']} | {row['parameters']:,} | {row['optimizer']} | {row['median_step_ms']:.2f} | "
            f"{row['ratio_to_adam']:.3f} | {row['extra_state_bytes_per_parameter']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50, help="steps per timed block")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--control-every", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--output", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        optimizers = _optimizers(_save_benchmark_controller(scratch), args.control_every)
        results = benchmark(args.models, args.rounds, args.steps, args.warmup, args.batch_size, optimizers)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "overhead",
        "method": "median step time of compiled (jit_compile=True) train functions, "
                  "interleaved blocks in one process",
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
