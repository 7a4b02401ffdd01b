"""The demo (`make demo`): every contender trains, the record and the figure are written."""

import importlib.util
import json
import pathlib

import pytest

DEMO = pathlib.Path(__file__).resolve().parents[1] / "examples" / "compare_with_adam.py"


def _demo():
    spec = importlib.util.spec_from_file_location("compare_with_adam", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_trains_adam_cosine_adam_and_lhopt_and_records_the_controller(tmp_path, capsys):
    record = _demo().main(["--epochs", "2", "--batch-size", "128", "--output-dir", str(tmp_path)])
    assert [run["optimizer"] for run in record["runs"]] == ["Adam", "cosine Adam", "LHOPT"]
    assert json.loads((tmp_path / "results.json").read_text())["runs"][2]["optimizer"] == "LHOPT"
    assert (tmp_path / "comparison.png").stat().st_size > 10_000
    adam, cosine, lhopt = record["runs"]
    # The same weights and batches: the runs part only where the optimizers differ.
    assert len(adam["step_loss"]) == len(lhopt["step_loss"]) == 2 * 11
    assert adam["step_loss"][0] == pytest.approx(cosine["step_loss"][0])
    # LHOPT's hyperparameters, once per epoch; its controller moved the learning rate.
    assert len(lhopt["hyperparameters"]) == 2 and not adam["hyperparameters"]
    assert lhopt["hyperparameters"][-1]["learning_rate"] != pytest.approx(1e-2)
    out = capsys.readouterr().out
    assert "LHOPT        epoch   2/2" in out and "wrote" in out


def test_demo_refuses_a_bad_setting(capsys):
    with pytest.raises(SystemExit):
        _demo().main(["--epochs", "0"])
    assert "--epochs and --batch-size must be at least 1" in capsys.readouterr().err
