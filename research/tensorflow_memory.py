"""Does a process's memory come back when a task run is dropped? (research/notes/paired_campaign.md)

Builds `--runs` runs of the held-out Fashion-MNIST MLP (Adam, two compiled 10-step chunks each), dropping each and
collecting garbage before the next, and prints the process's resident memory after each. With `--rebuild_task` every
run also builds its task again (new data tensors), as an actor computing a missing baseline or an evaluation of a
new seed does.

    python research/tensorflow_memory.py [--runs 12] [--rebuild_task]
    # writes research/results/tensorflow_memory[_rebuild_task].json
"""

import argparse
import gc
import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras  # noqa: E402

from training import evaluate, runner, tasks  # noqa: E402


def resident_mb():
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--rebuild_task", action="store_true")
    args = parser.parse_args()
    spec = evaluate.EVALUATION_TASKS["fashion_mnist_mlp"]
    task = tasks.build_task(spec, evaluation=True)
    sizes = []
    for i in range(args.runs):
        if args.rebuild_task:
            task = tasks.build_task(spec, evaluation=True)
        run = runner.TaskRun(task, keras.optimizers.Adam(), chunk_steps=10)
        run.run(chunks=2)
        del run
        gc.collect()
        sizes.append(resident_mb())
        print(f"run {i + 1}: {sizes[-1]:.0f} MB resident", flush=True)
    growth = (sizes[-1] - sizes[0]) / (len(sizes) - 1)
    print(f"growth per run after the first: {growth:.1f} MB")
    name = "tensorflow_memory_rebuild_task.json" if args.rebuild_task else "tensorflow_memory.json"
    output = pathlib.Path(__file__).resolve().parent / "results" / name
    output.write_text(json.dumps({"command": "python research/tensorflow_memory.py " + " ".join(sys.argv[1:]),
                                  "resident_mb_after_each_run": sizes, "growth_mb_per_run": growth}, indent=1) + "\n")


if __name__ == "__main__":
    main()
