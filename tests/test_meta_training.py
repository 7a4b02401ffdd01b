"""Meta-training end to end: environment, PPO training with resume, export, use in model.fit."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Two tiny tasks, small networks, two iterations: a smoke run, not a result.
_SMOKE_GIN = [
    "TaskDistribution.pool_size=2",
    "TaskDistribution.long_run_pool_size=0",
    "TaskDistribution.families=('quadratic', 'tabular_mlp')",
    "TaskDistribution.min_steps=20",
    "TaskDistribution.max_steps=60",
    "TaskDistribution.min_control_steps=2",
    "TaskDistribution.max_control_steps=16",
    "train_eval.collect_episodes_per_iteration=2",
    "train_eval.num_parallel_environments=2",
    "create_agent.num_epochs=2",
    "create_networks.input_fc=(32,)",
    "create_networks.lstm_units=16",
    "create_networks.output_fc=(32,)",
    "train_eval.export_interval=2",
]


def _run(module, *args):
    command = [sys.executable, "-m", module, *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout


def _gin_args(iterations):
    params = _SMOKE_GIN + [f"train_eval.num_iterations={iterations}"]
    return [arg for p in params for arg in ("--gin_param", p)]


@pytest.mark.slow  # 6-8 minutes on 2 cores: PPO twice, resume, four exports, fit, fine-tune
def test_train_resume_export_and_fit(tmp_path):
    root = tmp_path / "run"
    out = _run("training.train", "--root_dir", str(root), *_gin_args(1))
    assert "iteration 1/1" in out and "mean speedup" in out
    checkpoint = (root / "train" / "checkpoint").read_text()
    assert "ckpt-1" in checkpoint
    # As a trainer killed during iteration 2 leaves them: an episode and a progress row never checkpointed.
    first = (root / "episodes.jsonl").read_text().splitlines()
    with open(root / "episodes.jsonl", "a") as f:
        f.write(first[0] + "\n" + '{"task": "half a line')
    with open(root / "progress.jsonl", "a") as f:
        f.write('{"iteration": 2, "episodes": 1}\n')

    # Resumed: starts from the checkpoint's iteration, runs only the missing one, and first forgets what the
    # killed iteration recorded.
    out = _run("training.train", "--root_dir", str(root), *_gin_args(2))
    assert "iteration 2/2" in out and "iteration 1/" not in out
    assert "Dropped 2 episode records written after the checkpoint of iteration 1" in out
    assert "ckpt-2" in (root / "train" / "checkpoint").read_text()
    progress = [json.loads(line) for line in (root / "progress.jsonl").read_text().splitlines()]
    assert [p["iteration"] for p in progress] == [1, 2]
    episodes = [json.loads(line) for line in (root / "episodes.jsonl").read_text().splitlines()]
    assert len(episodes) >= 4 and {e["family"] for e in episodes} <= {"quadratic", "tabular_mlp"}
    assert episodes[: len(first)] == [json.loads(line) for line in first]
    for e in episodes:  # ppo.gin pays the log speedup over the frame; gamma = 1 telescoping
        assert e["reward_baseline"] == "frame" and e["return"] == pytest.approx(e["log_speedup_over_frame"], abs=1e-4)
    assert len(list((root / "baselines").glob("*.json"))) <= 2  # each task's baseline ran once
    assert list((root / "train").glob("events.out.tfevents.*"))

    # Snapshots every export_interval iterations, kept apart from the pruned checkpoints.
    assert [p.name for p in (root / "policies").iterdir()] == ["iteration_00002"]
    snapshot = json.loads((root / "policies" / "iteration_00002" / "keras_lopt_controller.json").read_text())
    assert snapshot["extra"]["iterations"] == 2 and snapshot["extra"]["episodes"] == len(episodes)

    shipped = tmp_path / "shipped"
    _run("training.export", "--snapshot", str(root / "policies" / "iteration_00002"), "--name", "chosen",
         "--output_dir", str(shipped), "--description", "picked for the test")
    copied = json.loads((shipped / "chosen" / "keras_lopt_controller.json").read_text())
    assert copied["name"] == "chosen" and copied["description"] == "picked for the test"
    assert copied["extra"]["copied_from"] == "iteration_00002" and (shipped / "chosen" / "saved_model.pb").exists()

    exported = tmp_path / "policies"
    gin = [arg for p in _SMOKE_GIN for arg in ("--gin_param", p)]
    _run("training.export", "--root_dir", str(root), "--name", "smoke", "--output_dir", str(exported), *gin)
    policy = exported / "smoke"
    metadata = json.loads((policy / "keras_lopt_controller.json").read_text())
    # The LSTM's state, and the previous progress of the cosine frame that ppo.gin trains in.
    assert metadata["extra"]["iterations"] == 2 and metadata["state_size"] == 32 + 1
    assert (policy / "tf_agents_policy" / "saved_model.pb").exists()
    # The PolicySaver copy beside the controller is not part of it (nor of .keras files that embed it).
    import keras_lopt

    files = keras_lopt.Controller.load(str(policy))._files
    assert "saved_model.pb" in files and not any(name.startswith("tf_agents_policy") for name in files)

    # The exported controller drives model.fit in a plain Keras 3 process, without TF-Agents.
    script = f"""
import sys, numpy as np, keras, keras_lopt
rng = np.random.default_rng(0)
x = rng.normal(size=(256, 8)).astype("float32"); y = (x[:, 0] > 0).astype("int32")
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)])
optimizer = keras_lopt.LHOPT(policy={str(policy)!r}, control_every=2)
model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
history = model.fit(x, y, epochs=2, batch_size=32, verbose=0)
assert np.isfinite(history.history["loss"]).all()
assert optimizer.hyperparameters != optimizer.initial_hyperparameters, "the controller never acted"
assert "tf_agents" not in sys.modules and "tensorflow_probability" not in sys.modules
print("fit ok", optimizer.hyperparameters["learning_rate"])
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0 and "fit ok" in result.stdout, result.stderr[-4000:]

    # Written again to move by each head's expected move: the same modes, amounts within the choices;
    # and to sample each head as meta-training does, repeatably (seeded by the control step's index).
    # Sampled with the logits scaled up 1000x, the policy samples its mode.
    for moves in ("expected", "sampled"):
        _run("training.export", "--policy", str(policy), "--name", moves, "--output_dir", str(exported),
             "--moves", moves, *gin)
    _run("training.export", "--policy", str(policy), "--name", "sharp", "--output_dir", str(exported),
         "--moves", "sampled", "--logit_scale", "1000", *gin)
    assert json.loads((exported / "sharp" / "keras_lopt_controller.json").read_text())["extra"]["logit_scale"] == 1000
    metadata = json.loads((exported / "expected" / "keras_lopt_controller.json").read_text())
    assert metadata["extra"]["moves"] == "expected" and metadata["extra"]["reexported_from"] == "smoke"
    assert metadata["extra"]["iterations"] == 2
    script = f"""
import numpy as np, tensorflow as tf, keras_lopt
from keras_lopt import actions, features
mode = keras_lopt.Controller.load({str(policy)!r})
expected = keras_lopt.Controller.load({str(exported / "expected")!r})
observations = np.random.default_rng(0).normal(size=(20, features.NUM_FEATURES)).astype("float32")
observations[:, features.PROGRESS] = 0.0  # the cosine frame's learning-rate factor stays 1: amounts are the moves'
state_a = state_b = tf.zeros([mode.state_size])
between = 0
for observation in observations:
    action_a, amounts_a, state_a = mode.move(tf.constant(observation), state_a)
    action_b, amounts_b, state_b = expected.move(tf.constant(observation), state_b)
    np.testing.assert_array_equal(action_a.numpy(), action_b.numpy())
    np.testing.assert_allclose(state_a.numpy(), state_b.numpy(), rtol=1e-5, atol=1e-6)
    for head, a, b in zip(actions.ACTION_HEADS, amounts_a.numpy(), amounts_b.numpy()):
        assert a in np.float32(head.choices) and min(head.choices) - 1e-6 <= b <= max(head.choices) + 1e-6
        between += not np.isclose(b, np.float32(head.choices)).any()
assert between > 0, "every expected move was one of the choices"
print("expected moves ok", between)
sampled = keras_lopt.Controller.load({str(exported / "sampled")!r})
assert sampled.state_size == mode.state_size + 1
def sample_run():
    state, chosen = tf.zeros([sampled.state_size]), []
    for observation in observations:
        action, state = sampled.act(tf.constant(observation), state)
        chosen.append(action.numpy())
    return np.array(chosen), state.numpy()
first, state = sample_run()
np.testing.assert_array_equal(first, sample_run()[0])
# The control step's index; the last slot is the cosine frame's previous progress.
assert state[-2] == len(observations) and len({{tuple(a) for a in first}}) > 1
sharp = keras_lopt.Controller.load({str(exported / "sharp")!r})
state_mode, state_sharp = tf.zeros([mode.state_size]), tf.zeros([sharp.state_size])
for observation in observations:
    action_mode, state_mode = mode.act(tf.constant(observation), state_mode)
    action_sharp, state_sharp = sharp.act(tf.constant(observation), state_sharp)
    np.testing.assert_array_equal(action_mode.numpy(), action_sharp.numpy())
print("sampled moves ok")
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0 and "sampled moves ok" in result.stdout, result.stderr[-4000:]

    # A new run can start from the exported policy (fine-tuning) instead of random weights.
    script = f"""
from training import policy_io, train  # first: the training package selects Keras 2 for TF-Agents
import numpy as np, tensorflow as tf
train.parse_gin([], {_SMOKE_GIN!r})
agent = policy_io.create_agent_for_root({str(tmp_path / "fresh")!r})[0]
saved = [v.numpy() for v in tf.saved_model.load({str(policy / "tf_agents_policy")!r}).model_variables]
before = [v.numpy() for v in agent.policy.variables()]
assert not all(np.array_equal(a, b) for a, b in zip(before, saved)), "a fresh agent already had the weights"
policy_io.warm_start(agent, {str(policy)!r})
after = [v.numpy() for v in agent.policy.variables()]
assert len(after) == len(saved) and all(np.array_equal(a, b) for a, b in zip(after, saved))
# Scaled logits: each head's output layer (kernel and bias) times the scale, all else as saved.
policy_io.warm_start(agent, {str(policy)!r}, logit_scale=3.0)
scaled = [("/logits/" in v.name, v.numpy()) for v in agent.policy.variables()]
assert sum(is_logits for is_logits, _ in scaled) == 2 * len(agent.action_spec)
for (is_logits, a), b in zip(scaled, saved):
    np.testing.assert_allclose(a, 3.0 * b if is_logits else b, rtol=1e-6)
print("warm start ok", len(saved))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0 and "warm start ok" in result.stdout, result.stderr[-4000:]
    finetune = tmp_path / "finetune"
    out = _run("training.train", "--root_dir", str(finetune), "--init_policy", str(policy), *_gin_args(1),
               "--gin_param", "train_eval.export_interval=1", "--gin_param", "train_eval.init_logit_scale=2.0")
    assert "Starting from the policy" in out and "its logits scaled by 2.0" in out and "iteration 1/1" in out
    snapshot = json.loads((finetune / "policies" / "iteration_00001" / "keras_lopt_controller.json").read_text())
    recorded = snapshot["extra"]["gin_config"]  # gin may wrap the long binding over two lines
    assert "train_eval.init_policy =" in recorded and str(policy) in recorded, recorded


def test_train_init_policy_must_be_an_exported_policy(tmp_path):
    command = [sys.executable, "-m", "training.train", "--root_dir", str(tmp_path / "run"),
               "--init_policy", str(tmp_path / "missing")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2 and "no such directory" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "train").exists()  # failed before starting workers or the agent


def test_train_bad_settings_are_usage_errors(tmp_path):
    for params, message in ((["--gin_param", "train_eval.init_logit_scale=3.0"], "set init_policy too"),
                            (["--init_policy", "default", "--gin_param", "train_eval.init_logit_scale=0.0"],
                             "must be a positive finite number"),
                            (["--gin_param", "TaskDistribution.min_control_steps=9", "--gin_param",
                              "TaskDistribution.max_control_steps=3"], "control_steps")):
        command = [sys.executable, "-m", "training.train", "--root_dir", str(tmp_path / "run"), *params]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        # A usage error naming the setting, not a traceback.
        assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "run" / "train").exists()


def test_export_logit_scale_needs_policy_and_a_positive_scale(tmp_path):
    for args, message in ((["--snapshot", str(tmp_path), "--logit_scale", "2"], "--logit_scale needs --policy"),
                          (["--policy", "default", "--logit_scale", "-1"], "must be a positive finite number")):
        command = [sys.executable, "-m", "training.export", "--name", "x", "--output_dir", str(tmp_path), *args]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
        assert not (tmp_path / "x").exists()


def _one_quadratic(min_steps, max_steps, **settings):
    """A pool of one quadratic task (seed 3)."""
    from training import tasks

    return tasks.TaskDistribution(families=("quadratic",), first_seed=3, pool_size=1, min_steps=min_steps,
                                  max_steps=max_steps, **settings)


def test_environment_episode_rewards_telescope(tmp_path):
    from keras_lopt import actions
    from training import environment  # first: the training package selects Keras 2 for TF-Agents
    from tf_agents.environments import utils

    env = environment.LHOPTEnvironment(
        seed=1, distribution=_one_quadratic(30, 40),
        baseline_dir=tmp_path / "baselines", stats_path=tmp_path / "episodes.jsonl",
    )
    utils.validate_py_environment(env, episodes=1)
    time_step = env.reset()
    assert time_step.observation["observation"].shape == (environment.features.NUM_FEATURES,)
    total, steps = 0.0, 0
    while not time_step.is_last():
        time_step = env.step(tuple(np.int32(a) for a in actions.NOOP_ACTION))
        total += float(time_step.reward)
        steps += 1
    records = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    last = records[-1]
    assert steps == last["control_steps"] - 1  # the first interval runs in reset
    assert total == pytest.approx(last["log_speedup"], abs=1e-5)
    assert last["compile_seconds"] == 0.0  # the second episode on a task reuses its compiled run
    assert last["long_run"] is False  # seed 3 is in the main pool

    env.reset()
    bad = list(actions.NOOP_ACTION)
    bad[0] = len(actions.ACTION_HEADS[0].choices)  # what a NaN policy samples
    with pytest.raises(ValueError, match="Invalid action"):
        env.step(tuple(np.int32(a) for a in bad))
    huge = environment.bounded([np.nan, np.inf, -np.inf, 1e21, 0.5])
    np.testing.assert_array_equal(huge, np.float32([0.0, 1e3, -1e3, 1e3, 0.5]))


def test_long_run_seeds_are_long_runs_of_cheap_families():
    from training import tasks

    distribution = tasks.TaskDistribution(pool_size=6, long_run_pool_size=6, balance_families=True)
    short = [distribution.sample(seed) for seed in range(6)]
    long = [distribution.sample(seed) for seed in range(6, 12)]
    assert {s.family for s in short} == set(tasks.FAMILIES)
    assert {s.family for s in long} == set(tasks.LONG_RUN_FAMILIES)
    assert all(s.total_steps <= tasks.MAX_STEPS for s in short)
    assert all(tasks.LONG_RUN_MIN_STEPS * 0.9 <= s.total_steps <= tasks.LONG_RUN_MAX_STEPS for s in long)
    assert distribution.seeds == tuple(range(12)) and distribution.long_run_seeds == tuple(range(6, 12))
    with pytest.raises(ValueError, match="long-run families"):
        tasks.TaskDistribution(pool_size=1, long_run_pool_size=1, families=("char_lm",))
    with pytest.raises(ValueError, match="Unknown or no task families"):
        tasks.TaskDistribution(families=("mnist",))


def test_environment_draws_each_episodes_start(tmp_path):
    from keras_lopt import actions
    from training import environment, tasks

    env = environment.LHOPTEnvironment(
        seed=0, distribution=_one_quadratic(20, 30, default_start_probability=0.5),
        baseline_dir=tmp_path / "baselines", stats_path=tmp_path / "episodes.jsonl",
    )
    for _ in range(6):
        time_step = env.reset()
        while not time_step.is_last():
            time_step = env.step(tuple(np.int32(a) for a in actions.NOOP_ACTION))
        # No-op actions: hyperparameters stay where the episode started, and are
        # measured from there (the compiled run's constructor values are not the reference).
        relative = [time_step.observation["observation"][environment.features.FEATURE_NAMES.index(name)]
                    for name in environment.features.HYPERPARAMETER_RATIOS]
        np.testing.assert_allclose(relative, 0.0, atol=1e-5)
    records = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    defaults = tasks.default_hyperparameters()
    assert {r["default_start"] for r in records} == {True, False}
    for r in records:
        assert r["hyperparameters"] == pytest.approx(r["initial_hyperparameters"], rel=1e-5)
        assert (r["initial_hyperparameters"] == defaults) == r["default_start"]
    # Mis-set starts are the task's own few (so the frame's run from each is cached), drawn per episode.
    spec = _one_quadratic(20, 30).sample(3)
    for r in records:
        assert r["initial_hyperparameters"] == _one_quadratic(20, 30).start(spec, r["start"]).hyperparameters
    with pytest.raises(ValueError, match="default_start_probability"):
        tasks.TaskDistribution(default_start_probability=2.0)


def test_environment_task_return_baseline_shapes_rewards_by_the_tasks_recent_returns(tmp_path):
    from keras_lopt import actions
    from training import environment

    stats = tmp_path / "episodes.jsonl"
    env = environment.LHOPTEnvironment(
        seed=1, distribution=_one_quadratic(30, 40),
        baseline_dir=tmp_path / "baselines", stats_path=stats, task_return_baseline=2,
    )
    shaped_returns = []
    for _ in range(4):
        time_step, shaped = env.reset(), 0.0
        while not time_step.is_last():
            time_step = env.step(tuple(np.int32(a) for a in actions.NOOP_ACTION))
            shaped += float(time_step.reward)
        shaped_returns.append(shaped)
    records = [json.loads(line) for line in stats.read_text().splitlines()]
    returns = [r["return"] for r in records]
    assert [r["return_baseline"] for r in records] == pytest.approx(
        [0.0, returns[0], np.mean(returns[:2]), np.mean(returns[1:3])], abs=1e-6)  # the last 2 episodes' mean
    assert [r["return"] for r in records] == pytest.approx([r["log_speedup"] for r in records], abs=1e-5)
    assert shaped_returns == pytest.approx([r["return"] - r["return_baseline"] for r in records], abs=1e-4)

    # Another worker (or a restart) picks up the same history from the file.
    other = environment.LHOPTEnvironment(seed=2, distribution=_one_quadratic(30, 40),
                                         baseline_dir=tmp_path / "baselines", stats_path=stats, task_return_baseline=2)
    spec = _one_quadratic(30, 40).sample(3)
    assert other._return_baseline(spec, False) == pytest.approx(np.mean(returns[2:]), abs=1e-6)
    assert other._return_baseline(spec, True) == 0.0  # no default-start episodes yet
    with pytest.raises(ValueError, match="give stats_path"):
        environment.LHOPTEnvironment(distribution=_one_quadratic(30, 40), task_return_baseline=4)
    with pytest.raises(ValueError, match="whole number"):
        environment.LHOPTEnvironment(distribution=_one_quadratic(30, 40), stats_path=stats, task_return_baseline=-1)


def test_cosine_schedule_moves_the_learning_rate_alike_in_training_and_in_the_exported_controller(tmp_path):
    import math

    import keras_lopt
    from keras_lopt import actions
    from training import environment

    env = environment.LHOPTEnvironment(
        seed=1, distribution=_one_quadratic(30, 40, default_start_probability=1.0),
        baseline_dir=tmp_path / "baselines", learning_rate_schedule="cosine",
    )
    time_step, trained = env.reset(), []
    while not time_step.is_last():
        time_step = env.step(tuple(np.int32(a) for a in actions.NOOP_ACTION))
        trained.append(env._episode["prepared"].run.optimizer.hyperparameters["learning_rate"])
    spec = env._episode["spec"]
    start = keras_lopt.lhopt.DEFAULTS["learning_rate"]
    cosine = [max(start * 0.5 * (1 + math.cos(math.pi * k / spec.control_steps)), 1e-8)
              for k in range(1, spec.control_steps + 1)]
    # No-op actions follow the cosine (the action after the last control step is never taken).
    assert trained == pytest.approx(cosine[:-1], rel=1e-5)
    with pytest.raises(ValueError, match="learning-rate schedule must be one of"):
        environment.LHOPTEnvironment(distribution=_one_quadratic(30, 40), learning_rate_schedule="linear")

    # A fresh (no-op-biased) policy exported with the schedule moves LHOPT the same way; and a warm
    # start can keep a head's fresh initialisation. In a process of its own: TF-Agents needs Keras 2.
    script = f"""
from training import agent as agent_lib, policy_io, runner, tasks, train  # first: selects Keras 2 for TF-Agents
import numpy as np, pytest, tensorflow as tf, keras_lopt
train.parse_gin([], ["create_networks.input_fc=(32,)", "create_networks.lstm_units=16",
                     "create_networks.output_fc=(32,)"])
specs = policy_io.time_step_and_action_specs()
agent = agent_lib.create_agent(*specs, train_step_counter=tf.Variable(0, dtype=tf.int64))
path = policy_io.save_policy(agent, {str(tmp_path / "cosine")!r}, "cosine", {{"iterations": 0}},
                          learning_rate_schedule="cosine")
controller = keras_lopt.Controller.load(str(path))  # in safe mode: the export passes the op check
for moves in ("expected", "sampled"):  # every kind of deployed actor is pure tensor math too
    other = policy_io.save_policy(agent, {str(tmp_path)!r} + "/" + moves, moves, {{"iterations": 0}}, moves=moves)
    assert keras_lopt.trust.unsafe_ops((other / "saved_model.pb").read_bytes()) == {{}}, moves
assert controller.state_size == 2 * 16 + 1 and controller.metadata["extra"]["learning_rate_schedule"] == "cosine"
spec = tasks.sample_task(3, families=("quadratic",), min_steps=30, max_steps=40)
assert spec.key == {spec.key!r}
optimizer = keras_lopt.LHOPT(policy=str(path), total_steps=spec.total_steps, control_every=spec.control_every)
deployed = []
runner.TaskRun(tasks.build_task(spec), optimizer).run(
    on_chunk=lambda run: deployed.append(run.optimizer.hyperparameters["learning_rate"]))
assert deployed == pytest.approx({cosine!r}, rel=1e-5), deployed

train.parse_gin([], ["create_networks.input_fc=(256,)", "create_networks.lstm_units=256",
                     "create_networks.output_fc=(256,)"])
agent = agent_lib.create_agent(*specs, train_step_counter=tf.Variable(0, dtype=tf.int64))
logits = [v for v in agent.actor_net.variables if "/logits/" in v.name]
fresh = [v.numpy() for v in logits]
policy_io.warm_start(agent, "default", fresh_heads=("learning_rate",))
np.testing.assert_array_equal(logits[0].numpy(), fresh[0])  # the learning-rate head's kernel and bias
np.testing.assert_array_equal(logits[1].numpy(), fresh[1])
assert not np.array_equal(logits[3].numpy(), fresh[3])  # the next head's bias: copied
with pytest.raises(ValueError, match="fresh heads must be"):
    policy_io.warm_start(agent, "default", fresh_heads=("momentum",))
print("cosine export ok")
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0 and "cosine export ok" in result.stdout, result.stderr[-4000:]


def test_a_policy_is_fine_tuned_in_the_schedule_its_learning_rate_head_was_trained_in():
    from training import policy_io

    # The packaged default was meta-trained in the cosine frame.
    policy_io.check_policy_schedule("default", "cosine", ())
    with pytest.raises(ValueError, match=r"learning_rate_schedule='cosine'.*init_fresh_heads=\('learning_rate',\)"):
        policy_io.check_policy_schedule("default", "constant", ())
    policy_io.check_policy_schedule("default", "constant", ("learning_rate",))  # that head starts fresh


def test_a_controller_that_does_what_the_frame_does_scores_exactly_zero_over_it(tmp_path):
    from keras_lopt import actions
    from training import environment

    distribution = _one_quadratic(30, 40, default_start_probability=0.0, random_starts=2, max_weight_scale=3.0)
    make = lambda seed: environment.LHOPTEnvironment(  # noqa: E731
        seed=seed, distribution=distribution, baseline_dir=tmp_path / "baselines", stats_path=tmp_path / "episodes.jsonl",
        learning_rate_schedule="cosine", reward_baseline="frame")
    env = make(0)
    noop = tuple(np.int32(a) for a in actions.NOOP_ACTION)
    for _ in range(3):  # both mis-set starts come up, each run once by the frame and then reused
        time_step = env.reset()
        rewards = []
        while not time_step.is_last():
            time_step = env.step(noop)
            rewards.append(float(time_step.reward))
        assert rewards == [0.0] * len(rewards)
    records = environment.read_episode_records(tmp_path / "episodes.jsonl", 0)[0]
    assert [r["return"] for r in records] == [0.0] * 3
    assert all(r["log_speedup_over_frame"] == 0.0 and r["reward_baseline"] == "frame" for r in records)
    assert {r["start"] for r in records} <= {1, 2} and all(1 / 3 <= r["weight_scale"] <= 3 for r in records)
    assert len(list((tmp_path / "baselines" / "frames").glob("*.json"))) == len({r["start"] for r in records})

    # Another worker reuses the cached frame; moving the learning rate away from the frame's is paid for (or
    # charged) relative to it, and the return over Adam is kept beside it.
    other = make(1)
    time_step = other.reset()
    assert other._episode["frame_seconds"] == 0.0
    double = list(noop)
    double[0] = np.int32(actions.ACTION_HEADS[0].choices.index(2.0))
    while not time_step.is_last():
        time_step = other.step(tuple(double))
    record = environment.read_episode_records(tmp_path / "episodes.jsonl", 0)[0][-1]
    assert record["return"] == pytest.approx(record["log_speedup_over_frame"], abs=1e-6) and record["return"] != 0.0
    assert record["log_speedup"] != record["return"]
    with pytest.raises(ValueError, match="reward_baseline must be one of"):
        environment.LHOPTEnvironment(distribution=distribution, reward_baseline="cosine")


def test_mis_set_starts_are_drawn_once_per_task_around_lhopts_defaults():
    from keras_lopt.hyperparameters import DEFAULTS, HYPERPARAMETERS
    from training import tasks

    distribution = tasks.TaskDistribution(random_starts=3, max_weight_scale=3.0)
    spec = distribution.sample(5)
    assert distribution.start(spec, 0) == tasks.Start(0, DEFAULTS)
    starts = [distribution.start(spec, i) for i in (1, 2, 3)]
    assert starts == [distribution.start(spec, i) for i in (1, 2, 3)]  # the same every time: the frame is cached
    assert len({s.key for s in starts}) == 3
    for seed in range(40):
        for index in (1, 2, 3):
            start = distribution.start(distribution.sample(seed), index)
            assert 1 / 3 <= start.weight_scale <= 3
            assert 1e-2 * DEFAULTS["learning_rate"] <= start.hyperparameters["learning_rate"] <= 1.0
            for name, value in start.hyperparameters.items():
                low, high = HYPERPARAMETERS[name].bounds
                assert low <= HYPERPARAMETERS[name].stored(value) * (1 + 1e-9) <= high * (1 + 1e-9) + 1e-12
    with pytest.raises(ValueError, match="not one of the task's starts"):
        distribution.start(spec, 4)
    with pytest.raises(ValueError, match="random_starts must be >= 1"):
        tasks.TaskDistribution(random_starts=0)
    assert tasks.TaskDistribution(random_starts=0, default_start_probability=1.0).random_starts == 0
    rng = np.random.default_rng(0)
    drawn = [tasks.TaskDistribution(default_start_probability=0.5).draw_start(spec, rng).index for _ in range(400)]
    assert 150 < drawn.count(0) < 250 and set(drawn) == {0, 1, 2, 3, 4}


def test_a_start_rescales_the_models_initial_weights(tmp_path):
    from training import environment, tasks

    spec = _one_quadratic(30, 40).sample(3)
    prepared = environment._PreparedRun(spec, tasks.build_task(spec))
    weights = [v.numpy() for v in prepared.run.model.trainable_variables]
    prepared.reset(tasks.Start(1, {"learning_rate": 0.5}, weight_scale=2.5))
    for before, variable in zip(weights, prepared.run.model.trainable_variables):
        np.testing.assert_allclose(variable.numpy(), 2.5 * before, rtol=1e-6)
    assert prepared.run.optimizer.hyperparameters["learning_rate"] == pytest.approx(0.5)
    prepared.reset()
    for before, variable in zip(weights, prepared.run.model.trainable_variables):
        np.testing.assert_array_equal(variable.numpy(), before)


def test_a_killed_trainer_leaves_no_worker_running(tmp_path):
    import signal
    import time

    script = f"""
import time
from training import collection, environment, policy_io, tasks
distribution = tasks.TaskDistribution(families=("quadratic",), first_seed=3, pool_size=1, min_steps=30, max_steps=40)
make = lambda index: environment.LHOPTEnvironment(distribution=distribution, baseline_dir={str(tmp_path)!r})
actors = collection.Actors(make, 2, policy_io.time_step_and_action_specs(), lookahead=2)
print("workers started", flush=True)
time.sleep(600)
"""
    trainer = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert trainer.stdout.readline().strip() == "workers started"
        workers = _children(trainer.pid)
        assert len(workers) >= 2
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in workers)
    finally:
        trainer.kill()


def _children(pid):
    children = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _alive(pid):
    """Running or sleeping; a zombie waiting to be reaped has stopped."""
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_keep_first_records_drops_what_came_after_the_checkpoint(tmp_path):
    from training import environment

    path = tmp_path / "episodes.jsonl"
    assert environment.keep_first_records(path, 3) == 0 and not path.exists()
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n{"a": ')
    assert environment.keep_first_records(path, 2) == 2
    assert environment.read_episode_records(path, 0)[0] == [{"a": 1}, {"a": 2}]
    assert environment.keep_first_records(path, 5) == 0 and len(path.read_text().splitlines()) == 2
