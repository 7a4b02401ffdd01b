"""research/feature_attribution.py: replays of the default controller on recorded observations."""

import dataclasses

import feature_attribution
import numpy as np
import pytest

from keras_lopt import controller, features
from training import tasks

def test_replays_reproduce_the_run_and_with_every_task_side_input_swapped_the_donors_run():
    specs = {
        seed: dataclasses.replace(tasks.sample_task(seed, families=("tabular_mlp",)), control_steps=6,
                                  control_every=4, batch_size=16)
        for seed in (3, 4)
    }
    recordings = {f"task {seed}": feature_attribution.record(spec, "default", evaluation=False)
                  for seed, spec in specs.items()}
    first, second = recordings.values()
    # The two runs must move the learning rate differently, or the swap check proves nothing.
    assert not np.allclose(first["learning_rates"], second["learning_rates"])
    groups, own = feature_attribution.feature_groups()

    checks, progress, pairs = feature_attribution.attribute(
        recordings, controller.Controller.load("default"), groups, own)

    assert [c["replayed_moves_match_recording"] for c in checks] == [True, True]
    # Float32 rounding: LHOPT moves its hyperparameters in the compiled step, the replay eagerly, and by
    # continuous amounts (expected moves) the two drift apart slightly; the moves above still match. The
    # recomputed log-relative features drift by about 3e-5; their history CDFs at the shortest horizon divide
    # by a small standard deviation and drift up to some 40x as far.
    assert max(c["max_abs_difference_of_recomputed_features"] for c in checks) < 5e-3
    is_cdf = np.array(["_cdf_" in features.FEATURE_NAMES[i] for i in own])
    for r in recordings.values():
        _, replayed = feature_attribution.replay(
            controller.Controller.load("default"), r["optimizer"], r["observations"], own)
        difference = np.abs(replayed[:, own] - r["observations"][:, own])
        assert difference[:, ~is_cdf].max() < 1e-4
    assert [p["all_swapped_reproduces_donor"] for p in pairs] == [True, True]
    assert pairs[0]["all_task_side_swapped"] == pytest.approx(pairs[0]["donor_own"], abs=1e-4)
    assert set(pairs[0]["swapped"]) == set(feature_attribution.SWAPPED_GROUPS)
    assert {row["task"] for row in progress} == set(recordings)


def test_every_feature_is_in_one_group_or_the_controllers_own():
    groups, own = feature_attribution.feature_groups()
    indices = own + [i for g in groups.values() for i in g]
    assert sorted(indices) == list(range(features.NUM_FEATURES))  # no feature twice, none left out


def test_one_task_is_a_usage_error():
    with pytest.raises(SystemExit):
        feature_attribution.main(["--tasks", "diamonds_mlp"])
