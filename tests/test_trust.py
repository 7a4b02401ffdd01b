"""A controller is a program: only pure-math controllers load, unless the user opts in; bad
controller files get one clear error each."""

import json
import shutil
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_lopt
from keras_lopt import LHOPT, actions, controller, features, save_controller, trust
from keras_lopt.controller import METADATA_FILE
from keras_helpers import regression_data as _data, fit as _fit, compiled_model as _model

HEADS = len(actions.ACTION_HEADS)


def _noop(observation, state):
    batch = tf.shape(observation)[0]
    return tf.tile(tf.constant([actions.NOOP_ACTION], tf.int32), [batch, 1]), state


def _writing_controller(path, target):
    """A controller that writes `target` at every control step (and otherwise does nothing)."""

    def act(observation, state):
        with tf.control_dependencies([tf.io.write_file(str(target), tf.strings.as_string(state[0, 0]))]):
            action, state = _noop(observation, state + 1.0)
        return action, tf.identity(state)

    save_controller(path, act, state_size=1)
    return path


def _ops(path):
    return trust.unsafe_ops((path / "saved_model.pb").read_bytes())


class KerasController(keras.layers.Layer):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8, activation="tanh")
        self.scores = keras.layers.Dense(HEADS)

    def call(self, observation, state):
        scores = self.scores(self.hidden(observation))
        action = tf.clip_by_value(tf.cast(tf.round(scores), tf.int32), 0, 2)
        return action, state, tf.exp(0.01 * tf.tanh(scores))


def test_our_controllers_pass_the_check(tmp_path):
    assert _ops(controller.resolve("default")) == {}
    import rule_based_controller as rule_based

    save_controller(tmp_path / "rule", rule_based.act, state_size=1)
    assert _ops(tmp_path / "rule") == {}
    # save_controller of a Keras layer (its variables are saved and frozen along).
    save_controller(tmp_path / "keras", KerasController(), state_size=0)
    assert _ops(tmp_path / "keras") == {}
    LHOPT(policy=str(tmp_path / "keras"))
    # The pipeline's exports (every kind of move) are checked in test_meta_training's export test.


def test_a_controller_that_writes_files_is_refused_unless_trusted(tmp_path):
    target = tmp_path / "written.txt"
    path = _writing_controller(tmp_path / "writer", target)
    assert "WriteFile" in _ops(path)
    with pytest.raises(trust.UnsafeControllerError, match=r"writer.*WriteFile.*safe_mode=False"):
        LHOPT(policy=str(path))
    with pytest.raises(trust.UnsafeControllerError, match="WriteFile"):
        keras_lopt.Controller.load(str(path))
    assert not target.exists()

    x, y = _data()
    opt = LHOPT(policy=str(path), safe_mode=False, control_every=4, total_steps=16)
    assert "safe_mode" not in opt.get_config()
    _fit(_model(opt, jit_compile=False), 2, x, y)  # file ops do not compile under XLA
    assert target.read_text() == "3.000000"  # the opt-in loads it, and it runs as written


def test_unsafe_ops_anywhere_in_the_library_are_found(tmp_path):
    # In a branch of a tf.cond (its own library function) and in a function `act` never calls.
    def write():
        with tf.control_dependencies([tf.io.write_file(str(tmp_path / "never"), "x")]):
            return tf.constant(1.0)

    def act(observation, state):
        wrote = tf.cond(state[0, 0] > 1e9, write, lambda: tf.constant(0.0))
        action, state = _noop(observation, state)
        return action, state + 0.0 * wrote

    def say_hello():
        with tf.control_dependencies([tf.print("hello")]):
            return tf.constant(0)

    save_controller(tmp_path / "branch", act, state_size=1)
    assert "WriteFile" in _ops(tmp_path / "branch")

    module = tf.Module()
    module.act = tf.function(_noop, input_signature=[tf.TensorSpec([None, features.NUM_FEATURES]),
                                                     tf.TensorSpec([None, 0])])
    module.helper = tf.function(say_hello, input_signature=[])
    module.reader = tf.function(lambda: tf.io.read_file("/etc/hostname"), input_signature=[])
    tf.saved_model.save(module, str(tmp_path / "hidden"))
    found = _ops(tmp_path / "hidden")
    assert {"PrintV2", "ReadFile"} <= set(found)
    # TensorFlow's own save/restore functions carry checkpoint ops and are accepted; act never reaches them.
    assert not {"SaveV2", "RestoreV2"} & set(found)


def _save_model_with_controller(tmp_path, policy):
    x, y = _data()
    model = _model(LHOPT(policy=str(policy), control_every=4, total_steps=16), jit_compile=False)
    _fit(model, 1, x, y)
    path = tmp_path / "model.keras"
    model.save(path)
    return path


def _swap_controller(archive, replacement, output):
    """Rewrites the .keras `archive` to `output` with its embedded controller's files replaced by
    `replacement`'s (a tampered file, as an attacker would make it)."""
    with zipfile.ZipFile(archive) as source:
        entries = {info.filename: source.read(info) for info in source.infolist()}
    embedded = [name for name in entries if name.endswith("/saved_model.pb")]
    assert len(embedded) == 1, entries.keys()
    folder = embedded[0][: -len("saved_model.pb")]
    entries = {name: data for name, data in entries.items() if not name.startswith(folder)}
    for file in replacement.rglob("*"):
        if file.is_file():
            entries[folder + str(file.relative_to(replacement))] = file.read_bytes()
    with zipfile.ZipFile(output, "w") as target:
        for name, data in entries.items():
            target.writestr(name, data)


def test_a_keras_file_with_a_tampered_controller_is_refused_under_safe_mode(tmp_path):
    save_controller(tmp_path / "benign", _noop, state_size=1, name="benign")
    original = _save_model_with_controller(tmp_path, tmp_path / "benign")
    target = tmp_path / "written.txt"
    evil = _writing_controller(tmp_path / "evil", target)
    # Same metadata as the benign one, so only the graph differs.
    shutil.copy(tmp_path / "benign" / METADATA_FILE, evil / METADATA_FILE)
    tampered = tmp_path / "tampered.keras"
    _swap_controller(original, evil, tampered)

    # Keras gathers errors from loading assets into one ValueError that quotes ours.
    with pytest.raises(ValueError, match=r"WriteFile.*load_model\(path, safe_mode=False\)"):
        keras.models.load_model(tampered)
    # A config that claims safe_mode=False changes nothing: trust comes from the caller.
    with zipfile.ZipFile(tampered) as source:
        entries = {info.filename: source.read(info) for info in source.infolist()}
    config = json.loads(entries["config.json"])
    config["compile_config"]["optimizer"]["config"]["safe_mode"] = False
    entries["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "claims_safe.keras", "w") as out:
        for name, data in entries.items():
            out.writestr(name, data)
    with pytest.raises(ValueError, match="WriteFile"):
        keras.models.load_model(tmp_path / "claims_safe.keras")
    assert not target.exists()

    # The untampered file loads as before; the tampered one loads when the user trusts it.
    keras.models.load_model(original)
    loaded = keras.models.load_model(tampered, safe_mode=False)
    x, y = _data()
    _fit(loaded, 1, x, y)
    assert target.exists()


def _replace(path, name, content):
    if content is None:
        (path / name).unlink()
    else:
        (path / name).write_bytes(content)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("saved_model.pb", None, "has no saved_model.pb"),
        ("saved_model.pb", b"not a protobuf \x00\xff" * 10, "cannot be loaded"),
        (METADATA_FILE, None, f"has no {METADATA_FILE}"),
        (METADATA_FILE, b"{not json", f"malformed {METADATA_FILE}"),
        (METADATA_FILE, b"[1, 2]", "not a metadata record"),
    ],
)
def test_damaged_controller_files_get_one_clear_error(tmp_path, name, content, message):
    save_controller(tmp_path / "c", _noop, state_size=1)
    _replace(tmp_path / "c", name, content)
    with pytest.raises(ValueError, match=message) as error:
        LHOPT(policy=str(tmp_path / "c"))
    assert type(error.value) in (ValueError, trust.UnsafeControllerError)
    assert error.value.__traceback__ is not None and "\n" not in str(error.value)


def _raw_controller(path, act, observation_size, state_size, metadata_state_size):
    """A SavedModel written without save_controller (so nothing fixes its signature)."""
    module = tf.Module()
    module.act = tf.function(act, input_signature=[tf.TensorSpec([None, observation_size]),
                                                   tf.TensorSpec([None, state_size])])
    tf.saved_model.save(module, str(path))
    metadata = {"format": controller.FORMAT, "format_version": controller.FORMAT_VERSION, "name": "raw",
                "state_size": metadata_state_size, **controller.spec(), "extra": {}}
    (path / METADATA_FILE).write_text(json.dumps(metadata))
    return str(path)


def test_a_wrong_act_gets_one_clear_error(tmp_path):
    def noop_dict(observation, state):
        action, state = _noop(observation, state)
        return {"action": action, "state": state}

    ok = _raw_controller(tmp_path / "ok", noop_dict, features.NUM_FEATURES, 2, 2)
    LHOPT(policy=ok)
    cases = {
        "observation": (noop_dict, 3, 2, 2, "does not take LHOPT's inputs"),
        "state size": (noop_dict, features.NUM_FEATURES, 2, 3, "does not take LHOPT's inputs"),
        "float action": (lambda o, s: {"action": tf.zeros([tf.shape(o)[0], HEADS]), "state": s},
                         features.NUM_FEATURES, 1, 1, r"'action' is .*float32"),
        "tuple": (lambda o, s: _noop(o, s), features.NUM_FEATURES, 1, 1, "returns tuple"),
        "no state": (lambda o, s: {"action": _noop(o, s)[0]}, features.NUM_FEATURES, 1, 1, "no 'state' output"),
        "heads": (lambda o, s: {"action": _noop(o, s)[0][:, :3], "state": s}, features.NUM_FEATURES, 1, 1,
                  r"'action' is .*\(None, 3\)"),
    }
    for label, (act, observation_size, state_size, metadata_state_size, message) in cases.items():
        path = _raw_controller(tmp_path / label.replace(" ", "_"), act, observation_size, state_size,
                               metadata_state_size)
        with pytest.raises(ValueError, match=message):
            LHOPT(policy=path)
    module = tf.Module()
    module.other = tf.function(lambda: tf.constant(1.0), input_signature=[])
    tf.saved_model.save(module, str(tmp_path / "no_act"))
    shutil.copy(tmp_path / "ok" / METADATA_FILE, tmp_path / "no_act" / METADATA_FILE)
    with pytest.raises(ValueError, match="has no `act` function"):
        LHOPT(policy=str(tmp_path / "no_act"))


def test_out_of_range_actions_are_clamped_and_non_finite_amounts_move_nothing(tmp_path):
    def wild(observation, state):
        batch = tf.shape(observation)[0]
        action = tf.tile(tf.constant([[99] + [-5] * (HEADS - 1)], tf.int32), [batch, 1])
        amount = tf.tile(tf.constant([[np.nan, np.inf, -np.inf] + [1.0] * (HEADS - 3)], tf.float32), [batch, 1])
        return action, state, amount

    save_controller(tmp_path / "wild", wild, state_size=0)
    action, amounts, _ = keras_lopt.Controller.load(str(tmp_path / "wild")).move(
        tf.zeros([features.NUM_FEATURES]), tf.zeros([0]))
    assert list(action.numpy()) == [len(actions.ACTION_HEADS[0].choices) - 1] + [0] * (HEADS - 1)
    x, y = _data()
    opt = LHOPT(policy=str(tmp_path / "wild"), control_every=2, total_steps=16)
    model = _model(opt, jit_compile=True)
    _fit(model, 2, x, y)
    for name in ("learning_rate", "beta_1", "beta_2"):  # the non-finite amounts
        assert opt.hyperparameters[name] == pytest.approx(opt.initial_hyperparameters[name], rel=1e-6)
    assert all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)
