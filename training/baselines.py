"""Adam baselines for the reward, run once per task and cached on disk.

    python -m training.baselines --sample 5   # five sampled tasks: description, step time, Adam baseline

A baseline is Keras' Adam at its defaults trained on the task for its whole
budget, with the eval loss read at step 0 and after every control step; its
power-law fit (training/reward.py) turns any later eval loss into "the steps
Adam needs to get there". The cache file is named by the task's key (family,
seed and a hash of all its settings), so a changed task never reuses a stale
curve.
"""

import dataclasses
import datetime
import json
import os
import pathlib
import time

import numpy as np

from training import reward, runner, tasks

# Bump when the way baselines are run changes, so old cache files are ignored.
BASELINE_VERSION = 1


def default_baseline_dir():
    return pathlib.Path(
        os.environ.get("KERAS_LOPT_BASELINE_DIR", pathlib.Path.home() / ".cache" / "keras_lopt" / "baselines")
    )


@dataclasses.dataclass
class Baseline:
    """An Adam eval-loss curve and its power-law fit."""

    spec_key: str
    steps: np.ndarray
    losses: np.ndarray
    fit: reward.PowerLaw
    seconds: float  # wall time of the run, compilation included
    step_seconds: float  # median time of one compiled step (first chunk, which compiles, excluded)

    def summary(self):
        f = self.fit
        return (
            f"Adam baseline: eval loss {self.losses[0]:.4g} -> {self.losses[-1]:.4g} "
            f"(min {np.nanmin(self.losses):.4g}) over {int(self.steps[-1])} steps in {self.seconds:.1f}s "
            f"({self.step_seconds * 1e3:.2f} ms/step); "
            f"fit L(t) = {f.c:.4g} + {f.a:.4g} (1 + t/{f.tau:.3g})^-{f.alpha:.3g}"
        )

    def to_json(self):
        return json.dumps(
            {
                "version": BASELINE_VERSION,
                "spec_key": self.spec_key,
                "steps": self.steps.tolist(),
                # JSON has no nan/inf: store them as strings.
                "losses": [x if np.isfinite(x) else str(x) for x in self.losses.tolist()],
                "fit": self.fit.to_dict(),
                "seconds": self.seconds,
                "step_seconds": self.step_seconds,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text):
        d = json.loads(text)
        return cls(
            d["spec_key"], np.asarray(d["steps"]), np.asarray([float(x) for x in d["losses"]]),
            reward.PowerLaw(**d["fit"]), d["seconds"], d["step_seconds"],
        )


def run_baseline(spec, task=None):
    """Trains the task with Adam at Keras' defaults and fits its curve."""
    task = task or tasks.build_task(spec)
    start = time.perf_counter()
    run = runner.TaskRun(task, runner.make_optimizer(spec, "adam"))
    steps, losses = run.run()
    seconds = time.perf_counter() - start
    fit = reward.fit_power_law(steps, losses)
    return Baseline(spec.key, steps, losses, fit, seconds, run.step_seconds())


class BaselineCache:
    """Baselines on disk, one JSON file per task key, computed on first use."""

    def __init__(self, directory=None):
        self.directory = pathlib.Path(directory) if directory else default_baseline_dir()

    def path(self, spec):
        return self.directory / f"{spec.key}.json"

    def get(self, spec, task=None):
        path = self.path(spec)
        if path.exists():
            text = path.read_text()
            if json.loads(text).get("version") == BASELINE_VERSION:
                return Baseline.from_json(text)
        baseline = run_baseline(spec, task)
        self.directory.mkdir(parents=True, exist_ok=True)
        # Write then rename, so parallel workers never read half a file.
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(baseline.to_json())
        partial.replace(path)
        return baseline


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m training.baselines",
        description="Sample meta-training tasks and show each one's description, step time and Adam baseline.",
    )
    parser.add_argument("--sample", type=int, default=5, help="how many tasks to sample (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first task; the others follow (default 0)")
    parser.add_argument("--families", nargs="+", default=list(tasks.FAMILIES), choices=tasks.FAMILIES, metavar="FAMILY",
                        help=f"families to sample from (default: all of {', '.join(tasks.FAMILIES)})")
    parser.add_argument("--cache-dir", default=None,
                        help="baseline cache (default $KERAS_LOPT_BASELINE_DIR or ~/.cache/keras_lopt/baselines)")
    parser.add_argument("--no-baseline", action="store_true", help="only describe the tasks")
    args = parser.parse_args(argv)
    if args.sample < 1:
        parser.error("--sample must be at least 1")

    cache = BaselineCache(args.cache_dir)
    for seed in range(args.seed, args.seed + args.sample):
        spec = tasks.sample_task(seed, families=args.families)
        print(spec.describe(), flush=True)
        if not args.no_baseline:
            print("    " + cache.get(spec).summary(), flush=True)


if __name__ == "__main__":
    main()
