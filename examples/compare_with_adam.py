"""Train the same model with keras-lopt and with Adam, side by side.

The data is scikit-learn's bundled handwritten digits (1,797 8x8 images; no
download). Adam at its defaults, LHOPT with its packaged default controller, and
LHOPT with the controller off start from the same initial weights and see the
batches in the same order. Digits MLPs are one of the meta-training task
families, so this is a demo, not a held-out evaluation (training/evaluate.py is).
The script prints a comparison table and writes a plot and a JSON record to
--output-dir.

    python examples/compare_with_adam.py --output-dir demo_output
"""

import argparse
import json
import os
import pathlib
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_lopt  # noqa: E402


def load_data(seed):
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    return train_test_split(x, digits.target, test_size=0.25, random_state=seed, stratify=digits.target)


def build_model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ])


class StepLoss(keras.callbacks.Callback):
    """Records the training loss of every batch."""

    def on_train_begin(self, logs=None):
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


def train(name, optimizer, data, args):
    x_train, x_val, y_train, y_val = data
    model = build_model(args.seed)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,
    )
    keras.utils.set_random_seed(args.seed)  # same shuffling for every optimizer
    steps = StepLoss()
    start = time.perf_counter()
    history = model.fit(
        x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
        validation_data=(x_val, y_val), callbacks=[steps], verbose=0,
    ).history
    seconds = time.perf_counter() - start
    val_loss = history["val_loss"]
    return {
        "optimizer": name,
        "final_val_loss": val_loss[-1],
        "best_val_loss": min(val_loss),
        "best_epoch": int(np.argmin(val_loss)) + 1,
        "final_val_accuracy": history["val_accuracy"][-1],
        "final_train_loss": history["loss"][-1],
        "seconds": seconds,
        "val_loss": val_loss,
        "step_loss": steps.losses,
    }


def plot(runs, steps_per_epoch, path):
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        losses = np.array(run["step_loss"])
        window = min(steps_per_epoch, len(losses))
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        left.plot(np.arange(window, len(losses) + 1), smooth, label=run["optimizer"])
        epochs = np.arange(1, len(run["val_loss"]) + 1) * steps_per_epoch
        right.plot(epochs, run["val_loss"], marker=".", label=run["optimizer"])
    left.set(title="training loss (running mean over an epoch)", xlabel="step", ylabel="loss", yscale="log")
    right.set(title="validation loss", xlabel="step", ylabel="loss", yscale="log")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("scikit-learn digits, MLP 64-128-64-10")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=pathlib.Path, default=pathlib.Path("demo_output"))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = load_data(args.seed)
    steps_per_epoch = -(-len(data[0]) // args.batch_size)
    total_steps = steps_per_epoch * args.epochs

    runs = [
        train("Adam (Keras defaults)", keras.optimizers.Adam(), data, args),
        # policy left at its default: the packaged controller steers the hyperparameters.
        train("LHOPT (default controller)", keras_lopt.LHOPT(total_steps=total_steps), data, args),
        train("LHOPT (controller off)", keras_lopt.LHOPT(policy=None), data, args),
    ]

    print(f"\n{args.epochs} epochs x {steps_per_epoch} steps, batch {args.batch_size}, "
          f"{len(data[0])} training / {len(data[1])} validation images")
    header = f"{'optimizer':26s} {'final val loss':>14s} {'best val loss (epoch)':>22s} {'val acc':>8s} {'time':>7s}"
    print(header)
    print("-" * len(header))
    for run in runs:
        best = f"{run['best_val_loss']:.4f} ({run['best_epoch']})"
        print(f"{run['optimizer']:26s} {run['final_val_loss']:14.4f} {best:>22s} "
              f"{run['final_val_accuracy']:8.4f} {run['seconds']:6.1f}s")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    plot(runs, steps_per_epoch, args.output_dir / "comparison.png")
    record = {"dataset": "sklearn digits", "settings": vars(args) | {"output_dir": str(args.output_dir)},
              "controller": keras_lopt.LHOPT().policy.metadata["description"], "runs": runs}
    (args.output_dir / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {args.output_dir / 'comparison.png'} and {args.output_dir / 'results.json'}")


if __name__ == "__main__":
    main()
