"""Independent actors (training/collection.py): whole episodes, the learner's weights, packing for PPO."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Actors are forked, so they run in a fresh process (pytest's has TensorFlow state already).
_SCRIPT = """
import json, sys
import training  # before TensorFlow: TF-Agents needs its Keras 2
import numpy as np
import tensorflow as tf
from tf_agents.agents.ppo import ppo_utils
from keras_lopt import actions
from training import agent as agent_lib, collection, environment, policy_io, tasks

baselines = sys.argv[1]
distribution = tasks.TaskDistribution(families=("quadratic",), first_seed=3, pool_size=2, min_steps=30, max_steps=60,
                                      min_control_steps=3, max_control_steps=8)
make = lambda index: environment.LHOPTEnvironment(seed=index, distribution=distribution, baseline_dir=baselines)
specs = policy_io.time_step_and_action_specs()
actors = collection.Actors(make, 2, specs, lookahead=3)
agent = agent_lib.create_agent(*specs, train_step_counter=tf.Variable(0, dtype=tf.int64))

def always(choice_of_head):
    # Every head's logits layer: zero kernel, a bias that makes one choice certain.
    layers = [v for v in agent.collect_policy.variables() if f"/{agent_lib.LOGITS_LAYER}/" in v.name]
    kernels = [v for v in layers if "kernel" in v.name]
    biases = [v for v in layers if "bias" in v.name]
    for head, kernel, bias in zip(actions.ACTION_HEADS, kernels, biases):
        kernel.assign(tf.zeros_like(kernel))
        logits = np.full(bias.shape, -50.0, np.float32)
        logits[choice_of_head(head)] = 50.0
        bias.assign(logits)
    return collection.policy_weights(agent.collect_policy)

out = {}
actors.publish(always(lambda head: 0), 0)
first, _ = actors.episodes(3, 0)
actors.publish(always(lambda head: head.noop), 1)
later, dropped = actors.episodes(6, 1)
out["dropped"] = dropped
out["episodes"] = [
    {"step_type": e.step_type.tolist(), "next_step_type": e.next_step_type.tolist(),
     "actions": np.stack(e.action, -1).tolist(), "reward_sum": float(e.reward.sum()),
     "return": r["return"], "control_steps": r["control_steps"], "first_version": r["first_policy_version"],
     "version": r["policy_version"]}
    for e, r in first + later
]
episodes = [e for e, _ in first + later]
experience = tf.nest.map_structure(tf.convert_to_tensor, collection.pack(episodes, 4))
out["packed_shape"] = list(experience.step_type.shape)
out["valid"] = float(tf.reduce_sum(ppo_utils.make_trajectory_mask(agent._preprocess(experience))))
out["loss"] = float(agent.train(experience).loss)
actors._processes[1].kill()  # as the out-of-memory killer would: the other actor keeps delivering
try:
    actors.episodes(50, 1)
except collection.ActorError as error:
    out["dead"] = str(error)
actors.close()

def broken(index):
    raise RuntimeError("no such task")
try:
    collection.Actors(broken, 1, specs, lookahead=1)
except collection.ActorError as error:
    out["error"] = str(error)
print(json.dumps(out))
"""


def test_actors_run_whole_episodes_with_the_learners_latest_policy(tmp_path):
    result = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-5000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    from keras_lopt import actions

    episodes = out["episodes"]
    assert len(episodes) == 9 and out["dropped"] == 0
    for e in episodes:
        n = e["control_steps"]
        # The driver's layout: FIRST, MIDs, LAST (then the boundary item), one item per observed time step.
        assert e["step_type"] == [0] + [1] * (n - 2) + [2]
        assert e["next_step_type"] == [1] * (n - 2) + [2, 0]
        assert e["reward_sum"] == pytest.approx(e["return"], abs=1e-5)
    noop = [head.noop for head in actions.ACTION_HEADS]
    # The weights the learner publishes are the ones that act: version 0 always picks choice 0, version 1 the no-op.
    for e in episodes:
        acted = e["actions"][:-1]  # the boundary item's action is never used
        if e["version"] == 0:
            assert acted == [[0] * len(noop)] * len(acted)
        if e["first_version"] == 1:
            assert acted == [noop] * len(acted)
    assert any(e["first_version"] == 1 for e in episodes)
    # Packed into 4 rows; PPO trains on every real transition and on nothing else (boundaries, padding).
    assert out["packed_shape"][0] == 4
    assert out["valid"] == sum(e["control_steps"] - 1 for e in episodes)
    assert np.isfinite(out["loss"])
    assert "Actor 0 failed" in out["error"] and "no such task" in out["error"]
    assert "Actor 1 died (exit code -9) (killed" in out["dead"]


def test_pack_lays_episodes_end_to_end_in_rows_of_equal_length():
    from training import collection  # first: it sets up TF-Agents' Keras
    from tf_agents.trajectories import trajectory

    def episode(length, tag):
        step_type = np.array([0] + [1] * (length - 2) + [2], np.int32)
        return trajectory.Trajectory(step_type=step_type, observation=np.full((length, 2), tag, np.float32),
                                     action=np.zeros(length, np.int32), policy_info=(),
                                     next_step_type=np.roll(step_type, -1), reward=np.ones(length, np.float32),
                                     discount=np.ones(length, np.float32))

    packed = collection.pack([episode(5, 1), episode(3, 2), episode(4, 3), episode(2, 4)], rows=2)
    assert packed.step_type.shape == (2, 7)
    rows = [sorted(set(packed.observation[r, :, 0].tolist())) for r in range(2)]
    assert sorted(rows) == [[1.0, 4.0], [2.0, 3.0]]  # longest first, each into the shorter row
    row = next(r for r in range(2) if rows[r] == [1.0, 4.0])  # 5 + 2 items: no padding
    np.testing.assert_array_equal(packed.step_type[row], [0, 1, 1, 1, 2, 0, 2])
    other = 1 - row  # 4 + 3 items: no padding either
    assert packed.step_type[other].tolist() == [0, 1, 1, 2, 0, 1, 2]
    padded = collection.pack([episode(5, 1), episode(2, 2)], rows=2)
    short = next(r for r in range(2) if padded.observation[r, 0, 0] == 2.0)
    # Padding repeats the row's last (boundary) item.
    assert padded.step_type[short].tolist() == [0, 2, 2, 2, 2]
    assert padded.next_step_type[short].tolist() == [2, 0, 0, 0, 0]
    assert collection.pack([episode(3, 1)], rows=4).step_type.shape == (1, 3)
