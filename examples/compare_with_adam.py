"""Train the same model with Adam, cosine-decay Adam and keras-lopt, side by side.

The data is scikit-learn's bundled handwritten digits (1,797 8x8 images; no
download). Adam at Keras' defaults, Adam with a cosine decay of its default
learning rate over the run, and LHOPT with its packaged default controller start
from the same initial weights and see the batches in the same order. Each prints
its progress as it trains. The figure shows the training and validation losses
and the hyperparameters LHOPT's controller chose along the run. Digits MLPs are
one of the meta-training task families, so this is a demo, not a held-out
evaluation (training/evaluate.py is).

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


def optimizers(total_steps):
    """The contenders, by name: `() -> (optimizer, callbacks)`."""
    return {
        "Adam": lambda: (keras.optimizers.Adam(), []),
        "cosine Adam": lambda: (keras.optimizers.Adam(
            learning_rate=keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=total_steps)), []),
        # policy left at its default: the packaged controller steers the hyperparameters.
        "LHOPT": lambda: (keras_lopt.LHOPT(), [keras_lopt.ControllerCallback()]),
    }


class Record(keras.callbacks.Callback):
    """Records every batch's training loss and, each epoch, LHOPT's hyperparameters; prints progress."""

    def __init__(self, name, epochs, print_every):
        super().__init__()
        self.name, self.epochs, self.print_every = name, epochs, print_every
        self.losses, self.hyperparameters = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))

    def on_epoch_end(self, epoch, logs=None):
        if isinstance(self.model.optimizer, keras_lopt.LHOPT):
            self.hyperparameters.append(self.model.optimizer.hyperparameters)
        if (epoch + 1) % self.print_every == 0 or epoch + 1 == self.epochs:
            print(f"  {self.name:12s} epoch {epoch + 1:3d}/{self.epochs}  loss {logs['loss']:.4f}  "
                  f"val_loss {logs['val_loss']:.4f}  val_accuracy {logs['val_accuracy']:.3f}", flush=True)


def train(name, make_optimizer, data, args):
    x_train, x_val, y_train, y_val = data
    model = build_model(args.seed)
    optimizer, callbacks = make_optimizer()
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,
    )
    keras.utils.set_random_seed(args.seed)  # same shuffling for every optimizer
    record = Record(name, args.epochs, print_every=max(1, args.epochs // 8))
    start = time.perf_counter()
    history = model.fit(
        x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
        validation_data=(x_val, y_val), callbacks=[record, *callbacks], verbose=0,
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
        "step_loss": record.losses,
        "hyperparameters": record.hyperparameters,  # LHOPT's, at the end of each epoch
    }


def plot(runs, steps_per_epoch, path):
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.2))
    for run in runs:
        losses = np.array(run["step_loss"])
        window = min(steps_per_epoch, len(losses))
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        left.plot(np.arange(window, len(losses) + 1), smooth, label=run["optimizer"])
        epochs = np.arange(1, len(run["val_loss"]) + 1) * steps_per_epoch
        middle.plot(epochs, run["val_loss"], marker=".", label=run["optimizer"])
    left.set(title="training loss (running mean over an epoch)", xlabel="step", ylabel="loss", yscale="log")
    middle.set(title="validation loss", xlabel="step", ylabel="loss", yscale="log")
    lhopt = next(run for run in runs if run["hyperparameters"])
    steps = np.arange(1, len(lhopt["hyperparameters"]) + 1) * steps_per_epoch
    for name in lhopt["hyperparameters"][0]:
        values = np.array([point[name] for point in lhopt["hyperparameters"]])
        if name.startswith("beta"):  # shown as 1 - beta, the form the controller scales
            values, name = 1.0 - values, f"1 - {name}"
        right.plot(steps, values, label=name)
    right.set(title=f"{lhopt['optimizer']}: hyperparameters the controller chose", xlabel="step", yscale="log")
    for ax in (left, middle, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("scikit-learn digits, MLP 64-128-64-10")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=pathlib.Path, default=pathlib.Path("demo_output"))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        parser.error(f"--epochs and --batch-size must be at least 1; got {args.epochs} and {args.batch_size}.")
    data = load_data(args.seed)
    steps_per_epoch = -(-len(data[0]) // args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    print(f"{args.epochs} epochs x {steps_per_epoch} steps, batch {args.batch_size}, "
          f"{len(data[0])} training / {len(data[1])} validation images", flush=True)

    runs = []
    for name, make_optimizer in optimizers(total_steps).items():
        print(f"training with {name}", flush=True)
        runs.append(train(name, make_optimizer, data, args))

    header = f"\n{'optimizer':12s} {'final val loss':>14s} {'best val loss (epoch)':>22s} {'val acc':>8s} {'time':>7s}"
    print(header)
    print("-" * len(header.strip()))
    for run in runs:
        best = f"{run['best_val_loss']:.4f} ({run['best_epoch']})"
        print(f"{run['optimizer']:12s} {run['final_val_loss']:14.4f} {best:>22s} "
              f"{run['final_val_accuracy']:8.4f} {run['seconds']:6.1f}s")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    plot(runs, steps_per_epoch, args.output_dir / "comparison.png")
    record = {"dataset": "sklearn digits", "settings": vars(args) | {"output_dir": str(args.output_dir)},
              "controller": keras_lopt.LHOPT().policy.metadata["description"], "runs": runs}
    (args.output_dir / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {args.output_dir / 'comparison.png'} and {args.output_dir / 'results.json'}")
    return record


if __name__ == "__main__":
    main()
