"""Does a validation set pick the policies that do well on the held-out tasks?

For each validation set (the validate_policies.py results files that scored the same
tasks), every policy's mean score on it is set against its held-out geometric-mean
speedup (training/evaluate.py results), over the policies that have both: the Spearman
rank correlation (also against each held-out task's speedup, to see which tasks a set
tracks), and whether the set's favourite is the held-out favourite. A set that
ranks policies unlike the held-out tasks cannot choose which snapshot to ship.
Policies are matched by the name they were given (`--policies` / `--policy`);
"default" and "saved_policies/default" are the same policy, and an evaluation run with
--start is named as validate_policies.py names that start ("default, epsilon=1e-08").
Validate_policies.py runs are deterministic on one machine, so a policy scored in two
files of one set scores the same in both (checked: the files must agree). Not across
machines: the default's character-LM scores moved by up to 0.9 on a new machine
(research/notes/policy_starts.md), so pass files from one machine.

    python research/validation_agreement.py --validation research/results/validate_policies_*.json \
        --evaluations research/results/evaluation*/evaluation.json
    # writes research/results/validation_agreement.json and .md
"""

import argparse
import json
import math
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from training.tasks import describe_start  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "validation_agreement.json"
CONTROLLER_OFF = "controller off"


def policy_name(name):
    """One name per policy: "saved_policies/default" and "default" are the same."""
    return "default" if name in ("default", "saved_policies/default") else name


def ranks(values):
    """Ranks starting at 1, ties sharing their average rank."""
    values = np.asarray(values, float)
    order = np.argsort(values, kind="stable")
    result = np.empty(len(values))
    result[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        result[tied] = result[tied].mean()
    return result


def spearman(x, y):
    """Spearman rank correlation (nan with fewer than 3 pairs)."""
    if len(x) < 3:
        return math.nan
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def validation_sets(paths):
    """{task list: {"files": [...], "command": first file's command, "scores": {policy: mean score}}}."""
    sets = {}
    for path in paths:
        data = json.loads(pathlib.Path(path).read_text())
        if "results" not in data or "mean_log_speedup" not in data:
            raise ValueError(f"{path} is not a validate_policies.py results file (no results / mean_log_speedup).")
        tasks = tuple(row["task"] for row in data["results"])
        entry = sets.setdefault(tasks, {"files": [], "command": data["command"], "scores": {}})
        entry["files"].append(str(path))
        for name, value in data["mean_log_speedup"].items():
            if name.startswith(CONTROLLER_OFF):
                continue
            name = policy_name(name)
            known = entry["scores"].get(name)
            if known is not None and not math.isclose(known, value, abs_tol=1e-6):
                raise ValueError(f"{name} scores {known:+.4f} and {value:+.4f} on the same tasks ({entry['files']}); "
                                 "runs are deterministic on one machine, so these are two policies under one name "
                                 "(was another default shipped in between?) or files from two machines: pass only "
                                 "files scored with the same policies on one machine.")
            entry["scores"][name] = value
    return sets


def held_out(paths):
    """{policy: {"file", "geometric_mean": speedup, "tasks": {task: speedup}}} from evaluation.json files."""
    result = {}
    for path in paths:
        data = json.loads(pathlib.Path(path).read_text())
        name = policy_name(data["policy"]) + describe_start(data.get("start", {}))
        if name in result and not math.isclose(result[name]["geometric_mean"], data["geometric_mean_speedup"]):
            raise ValueError(f"Two held-out evaluations of {name} disagree ({result[name]['file']}, {path}): "
                             "pass one per policy, all run the same way (seeds, default learning rate) on one machine.")
        result[name] = {
            "file": str(path),
            "geometric_mean": data["geometric_mean_speedup"],
            "tasks": {r["task"]: r["speedup_over_adam"] for r in data["results"]},
            "capped": {r["task"]: bool(r.get("speedup_capped")) for r in data["results"]},
        }
    return result


def agreement(sets, speedups):
    """One row per validation set that scored at least one policy with a held-out evaluation."""
    rows = []
    for tasks, entry in sets.items():
        policies = sorted(p for p in entry["scores"] if p in speedups)
        if not policies:
            continue
        scores = [entry["scores"][p] for p in policies]
        held = [speedups[p]["geometric_mean"] for p in policies]
        held_out_tasks = sorted(set.intersection(*(set(speedups[p]["tasks"]) for p in policies)))
        best_validation = policies[int(np.argmax(scores))]
        rows.append({
            "files": entry["files"],
            "command": entry["command"],
            "tasks": len(tasks),
            "policies": {p: {"validation_mean": entry["scores"][p], "held_out_speedup": speedups[p]["geometric_mean"]}
                         for p in policies},
            "spearman": spearman(scores, held),
            "spearman_per_held_out_task": {t: spearman(scores, [speedups[p]["tasks"][t] for p in policies])
                                           for t in held_out_tasks},
            "validation_favourite": best_validation,
            "its_held_out_speedup": speedups[best_validation]["geometric_mean"],
            "held_out_favourite": policies[int(np.argmax(held))],
        })
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validation", nargs="+", required=True, help="validate_policies.py results (.json)")
    parser.add_argument("--evaluations", nargs="+", required=True, help="training.evaluate results (evaluation.json)")
    parser.add_argument("--min_policies", type=int, default=3, help="report sets with at least this many matched policies")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    try:
        speedups = held_out(args.evaluations)
        sets = validation_sets(args.validation)
    except ValueError as error:  # a wrong or inconsistent input file: say which, without a traceback
        sys.exit(str(error))
    rows = [r for r in agreement(sets, speedups) if len(r["policies"]) >= args.min_policies]
    if not rows:
        sys.exit(f"No validation set scored at least {args.min_policies} policies that have a held-out evaluation.")

    command = "python research/validation_agreement.py " + " ".join(sys.argv[1:])
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"command": command, "held_out": speedups, "sets": rows}, indent=1))
    lines = [
        "# Do validation sets agree with the held-out tasks?",
        "",
        f"Generated by `{command}`.",
        "Per validation set: the Spearman rank correlation, over the policies scored on both, between the mean",
        "validation score and the held-out geometric-mean speedup (1 = same order, -1 = reversed); the policy the",
        "set would pick and its held-out speedup.",
        "",
        "| validation set (first file) | tasks | policies | Spearman | set's pick: held-out speedup | best held-out |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        best = max(v["held_out_speedup"] for v in r["policies"].values())
        lines.append(f"| `{pathlib.Path(r['files'][0]).name}` | {r['tasks']} | {len(r['policies'])} | "
                     f"{r['spearman']:+.2f} | {r['its_held_out_speedup']:.2f}x | {best:.2f}x |")
    task_names = sorted({t for r in rows for t in r["spearman_per_held_out_task"]})
    lines += ["", "Spearman against each held-out task's speedup (ties, e.g. capped 3x speedups, share a rank):", "",
              "| validation set (first file) | " + " | ".join(task_names) + " |", "|---|" + "---|" * len(task_names)]
    for r in rows:
        per_task = r["spearman_per_held_out_task"]
        lines.append(f"| `{pathlib.Path(r['files'][0]).name}` | " + " | ".join(
            f"{per_task[t]:+.2f}" if t in per_task else "-" for t in task_names) + " |")
    lines += ["", "Per policy (validation mean score / held-out speedup):", ""]
    for r in rows:
        lines.append(f"- `{pathlib.Path(r['files'][0]).name}`: " + "; ".join(
            f"{p}: {v['validation_mean']:+.2f} / {v['held_out_speedup']:.2f}x" for p, v in r["policies"].items()))
    lines += ["", "Held-out speedups (as training/evaluate.py reported them; >= where one capped at 3x):", "",
              "| policy | geometric mean | " + " | ".join(task_names) + " |", "|---|---|" + "---|" * len(task_names)]
    for name, result in sorted(speedups.items(), key=lambda item: -item[1]["geometric_mean"]):
        lines.append(f"| {name} | {result['geometric_mean']:.2f}x | " + " | ".join(
            ("-" if t not in result["tasks"] else
             f"{'>= ' if result['capped'][t] else ''}{result['tasks'][t]:.2f}x") for t in task_names) + " |")
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
