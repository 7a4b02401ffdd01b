"""Controller SavedModels: writing, loading and checking them.

A controller is a TensorFlow SavedModel whose root object has a
`tf.function` named `act`:

    act(observation: float32 [batch, NUM_FEATURES],
        state: float32 [batch, state_size])
        -> {"action": int32 [batch, len(ACTION_HEADS)],
            "state": float32 [batch, state_size],
            "amount": float32 [batch, len(ACTION_HEADS)]}  # optional

`observation` is laid out as `keras_lopt.features.FEATURE_NAMES`; each action
is one choice index per head of `keras_lopt.actions.ACTION_HEADS`. LHOPT moves
its hyperparameters by the chosen choices, or, if the controller has an
"amount" output, by those amounts (`keras_lopt.actions.apply_amounts`; e.g. a
policy's expected move, see training/export.py), the action then only feeding
the next observation. The recurrent state starts at zeros (`state_size` may
be 0). Next to `saved_model.pb` the directory holds `keras_lopt_controller.json`, the
metadata record: the feature and action spec versions, the feature names, the
action heads, the state size, a name, a description, and free-form `extra`
information (for example how it was trained).

Only TensorFlow is needed to load one: no TF-Agents, no TensorFlow
Probability.
"""

import concurrent.futures
import datetime
import importlib.resources
import json
import os
import pathlib
import tempfile

import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from keras_lopt import actions, features, trust

METADATA_FILE = "keras_lopt_controller.json"
FORMAT = "keras_lopt.controller"
FORMAT_VERSION = 1


def spec():
    """The parts of the metadata a controller must share with this optimizer."""
    return {
        "feature_spec_version": features.FEATURE_SPEC_VERSION,
        "feature_names": list(features.FEATURE_NAMES),
        "action_spec_version": actions.ACTION_SPEC_VERSION,
        "action_heads": [
            {"hyperparameter": head.hyperparameter, "kind": head.kind, "choices": list(head.choices)}
            for head in actions.ACTION_HEADS
        ],
    }


def save_controller(path, act, *, state_size=0, name=None, description="", extra=None):
    """Saves a controller as a SavedModel with its metadata record.

    Args:
        path: directory to write (it must not exist or be empty).
        act: callable `(observation [B, NUM_FEATURES], state [B, state_size])
            -> (action [B, len(ACTION_HEADS)], new_state [B, state_size])`,
            or `-> (action, new_state, amount [B, len(ACTION_HEADS)])` for a
            controller that moves by amounts, written with TensorFlow ops.
            If it is a `tf.Module` (or a Keras layer or model), its variables
            are saved with it.
        state_size: size of the recurrent state (0 for a stateless controller).
        name: a short name; defaults to the directory name.
        description: free text stored in the metadata.
        extra: a JSON-serialisable dict stored in the metadata under "extra".

    Returns:
        The metadata dict that was written.
    """
    path = pathlib.Path(path)
    if path.exists() and any(path.iterdir()):
        raise ValueError(f"Cannot save the controller to {path}: the directory is not empty.")
    if not (isinstance(state_size, int) and state_size >= 0):
        raise ValueError(f"state_size must be an int >= 0; got {state_size!r}.")
    num_heads = len(actions.ACTION_HEADS)
    module = tf.Module()
    module.controller = act

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, features.NUM_FEATURES], tf.float32, name="observation"),
            tf.TensorSpec([None, state_size], tf.float32, name="state"),
        ]
    )
    def act_fn(observation, state):
        action, new_state, *amount = act(observation, state)
        outputs = {
            "action": tf.ensure_shape(tf.cast(action, tf.int32), [None, num_heads]),
            "state": tf.ensure_shape(tf.cast(new_state, tf.float32), [None, state_size]),
        }
        if amount:
            outputs["amount"] = tf.ensure_shape(tf.cast(amount[0], tf.float32), [None, num_heads])
        return outputs

    module.act = act_fn
    tf.saved_model.save(module, str(path))
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name or path.name,
        "description": description,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "state_size": state_size,
        **spec(),
        "extra": extra or {},
    }
    (path / METADATA_FILE).write_text(json.dumps(metadata, indent=1))
    return metadata


class ScheduledLearningRate(tf.Module):
    """A controller `act` whose learning rate also follows `schedule`
    (`keras_lopt.actions.scheduled_amounts`): it outputs amounts, and keeps the
    previous control step's progress as one more, last, state slot (so its
    `state_size` is `act`'s plus one)."""

    def __init__(self, act, schedule):
        super().__init__()
        actions.check_learning_rate_schedule(schedule)
        self.act = act
        self.schedule = schedule

    def __call__(self, observation, state):
        progress = observation[:, features.PROGRESS]
        action, new_state, *amounts = self.act(observation, state[:, :-1])
        amounts = amounts[0] if amounts else actions.chosen_amounts(action)
        amounts = actions.scheduled_amounts(amounts, state[:, -1], progress, self.schedule)
        return action, tf.concat([new_state, progress[:, None]], axis=-1), amounts


def read_metadata(policy):
    """The metadata record of a policy ("default" or a directory), without loading its SavedModel."""
    return parse_metadata((resolve(policy) / METADATA_FILE).read_bytes(), policy)


def learning_rate_schedule_of(metadata):
    """The learning-rate schedule a controller's metadata records ("constant" if none)."""
    return metadata.get("extra", {}).get("learning_rate_schedule", "constant")


def parse_metadata(text, source):
    """The metadata record (`METADATA_FILE`'s contents, str or bytes), checked; or one clear `ValueError`."""
    if text is None:
        raise ValueError(f"The controller {source} has no {METADATA_FILE}; save controllers with "
                         f"keras_lopt.save_controller (or training.export).")
    try:
        metadata = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"The controller {source} has a malformed {METADATA_FILE} ({error}); "
                         f"re-save it with keras_lopt.save_controller.") from None
    check_metadata(metadata, source)
    return metadata


def check_metadata(metadata, source):
    """Raises one `ValueError` unless `metadata` is a record this optimizer can use."""
    if not isinstance(metadata, dict):
        raise ValueError(f"The controller {source}'s {METADATA_FILE} holds {type(metadata).__name__}, "
                         f"not a metadata record; re-save it with keras_lopt.save_controller.")
    check_spec(metadata, source)
    state_size = metadata.get("state_size")
    if not (isinstance(state_size, int) and not isinstance(state_size, bool) and state_size >= 0):
        raise ValueError(f"The controller {source}'s {METADATA_FILE} has state_size {state_size!r}; "
                         f"it must be an int >= 0.")


# What an optimizer's config keeps of its controller's record: enough to build the optimizer and check
# that the controller fits this version before its files are at hand.
_CONFIG_KEYS = ("format", "format_version", "name", "state_size", "feature_spec_version", "action_spec_version")
_CONFIG_EXTRA = ("learning_rate_schedule", "trained_with_validation_loss")


def _check_summary(summary, source):
    """`check_metadata` for the short record of an optimizer's config: format and spec versions, state size."""
    expected = {"format": FORMAT, "format_version": FORMAT_VERSION, **{
        key: value for key, value in spec().items() if key.endswith("_version")}}
    problems = [f"{key} {summary.get(key)!r} (expected {value!r})"
                for key, value in expected.items() if summary.get(key) != value]
    if problems:
        raise ValueError(
            f"The controller {source} in this optimizer's config was made for a different format or "
            f"feature/action spec than this keras_lopt {_version()}: {'; '.join(problems)}. Install the "
            f"keras_lopt version it was saved with.")
    state_size = summary.get("state_size")
    if not (isinstance(state_size, int) and not isinstance(state_size, bool) and state_size >= 0):
        raise ValueError(f"The controller {source} in this optimizer's config has state_size {state_size!r}; "
                         f"it must be an int >= 0.")


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def _act_function(module, source, state_size):
    """`module.act`'s concrete function for LHOPT's inputs, its outputs checked; or one clear `ValueError`."""
    heads = len(actions.ACTION_HEADS)
    expected = (f"act(observation: float32 [batch, {features.NUM_FEATURES}], state: float32 [batch, "
                f"{state_size}]) -> {{'action': int32 [batch, {heads}], 'state': float32 [batch, "
                f"{state_size}], 'amount' (optional): float32 [batch, {heads}]}}")
    if not hasattr(module, "act"):
        raise ValueError(f"The controller {source} has no `act` function; a controller needs {expected} "
                         f"(see keras_lopt.save_controller).")
    try:
        concrete = module.act.get_concrete_function(
            tf.TensorSpec([None, features.NUM_FEATURES], tf.float32),
            tf.TensorSpec([None, state_size], tf.float32),
        )
    except Exception as error:  # no traced signature matches LHOPT's inputs
        raise ValueError(f"The controller {source}'s `act` does not take LHOPT's inputs ({_first_line(error)}); "
                         f"a controller needs {expected}.") from None
    outputs = concrete.structured_outputs
    wanted = {"action": (tf.int32, heads), "state": (tf.float32, state_size), "amount": (tf.float32, heads)}
    problems = [] if isinstance(outputs, dict) else [f"it returns {type(outputs).__name__}, not a dict"]
    if isinstance(outputs, dict):
        problems += [f"no {key!r} output" for key in ("action", "state") if key not in outputs]
        problems += [f"an unexpected {key!r} output" for key in outputs if key not in wanted]
        for key, spec in outputs.items():
            if key in wanted and not (isinstance(spec, tf.Tensor) and spec.dtype == wanted[key][0]
                                      and spec.shape.is_compatible_with([None, wanted[key][1]])):
                problems.append(f"{key!r} is {getattr(spec, 'dtype', spec)!r} {getattr(spec, 'shape', '')}")
    if problems:
        raise ValueError(f"The controller {source}'s `act` has the wrong outputs ({'; '.join(problems)}); "
                         f"a controller needs {expected}.")
    return concrete


def check_spec(metadata, source):
    """Raises one `ValueError` listing every way `metadata` differs from this optimizer's spec."""
    if metadata.get("format") != FORMAT or metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{source} is not a keras_lopt controller of format version {FORMAT_VERSION} "
            f"(its {METADATA_FILE} says format={metadata.get('format')!r}, "
            f"format_version={metadata.get('format_version')!r})."
        )
    problems = []
    for key, expected in spec().items():
        found = metadata.get(key)
        if found == expected:
            continue
        if isinstance(expected, list) and isinstance(found, list):
            differing = [i for i, (a, b) in enumerate(zip(found, expected)) if a != b]
            detail = f"{len(found)} entries, expected {len(expected)}"
            if differing:
                i = differing[0]
                detail += f"; first difference at {i}: {found[i]!r} instead of {expected[i]!r}"
            problems.append(f"{key} ({detail})")
        else:
            problems.append(f"{key} {found!r} (expected {expected!r})")
    if problems:
        raise ValueError(
            f"The controller at {source} was made for a different feature/action spec than "
            f"this keras_lopt {_version()}: {'; '.join(problems)}. Use a controller exported "
            f"for this version, or install the keras_lopt version it was trained with."
        )


def _version():
    from keras_lopt import __version__

    return __version__


# The parts of a controller directory that make the controller. Anything else
# beside them (a policy export's TF-Agents PolicySaver copy, notes) is not
# read, so it is not embedded in every .keras file that uses the controller.
_CONTROLLER_PARTS = ("saved_model.pb", "fingerprint.pb", "variables", "assets", METADATA_FILE)


def _read_files(directory):
    directory = pathlib.Path(directory)
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.relative_to(directory).parts[0] in _CONTROLLER_PARTS
    }


def _write_files(files, directory):
    directory = pathlib.Path(directory)
    for relative, content in files.items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def resolve(policy):
    """The directory of a policy given as "default" or as a path."""
    if policy == "default":
        directory = pathlib.Path(str(importlib.resources.files("keras_lopt.saved_policies"))) / "default"
        if not (directory / METADATA_FILE).is_file():
            raise ValueError(
                'policy="default" asks for the packaged default controller, but this '
                f"installation of keras_lopt {_version()} ships none yet ({directory} is "
                "missing). Pass the path of a controller SavedModel, or policy=None to "
                "train with fixed hyperparameters."
            )
        return directory
    directory = pathlib.Path(os.path.expanduser(os.fspath(policy)))
    if not directory.is_dir():
        raise ValueError(
            f"LHOPT policy={os.fspath(policy)!r}: no such directory. Pass the path of a "
            f'controller SavedModel (see keras_lopt.save_controller), "default", "external" '
            f"or None."
        )
    if not (directory / METADATA_FILE).is_file():
        raise ValueError(
            f"{directory} is not a keras_lopt controller: it has no {METADATA_FILE}. "
            f"Save controllers with keras_lopt.save_controller (or training.export)."
        )
    return directory


class Controller:
    """A controller: its metadata and, once loaded, its `act` function.

    The SavedModel's files are kept in memory (controllers are small), so
    that `model.save` can embed the controller in the `.keras` file even after
    its original directory is gone. A controller rebuilt from a config (as
    `keras.models.load_model` does) knows only its metadata until its files
    arrive from the `.keras` file's assets, or, failing that, are read from
    its source when first needed.
    """

    def __init__(self, metadata, source, files=None, safe_mode=True):
        check_metadata(metadata, source)
        self._start(metadata, source, files, safe_mode)

    def _start(self, metadata, source, files, safe_mode):
        self.metadata = metadata
        self.source = source
        self.state_size = int(metadata["state_size"])
        # Whether the SavedModel is checked against keras_lopt.trust.ALLOWED_OPS before it is loaded.
        self.safe_mode = bool(safe_mode)
        self._files = None
        self._act = None
        if files is not None:
            self.set_files(files)

    @classmethod
    def load(cls, policy, safe_mode=True):
        """Loads `policy`: "default" or the path of a controller directory.

        With `safe_mode=True` (the default) a controller with ops outside
        `keras_lopt.trust.ALLOWED_OPS` is refused before any of it runs.
        """
        files = _read_files(resolve(policy))
        return cls(parse_metadata(files.get(METADATA_FILE), policy), os.fspath(policy), files, safe_mode)

    def set_files(self, files):
        """Uses the SavedModel made of `files` (relative path -> bytes): checks its
        metadata, its ops (in safe mode) and its `act` signature, then loads it."""
        metadata = parse_metadata(files.get(METADATA_FILE), self.source)
        if metadata["state_size"] != self.state_size:
            raise ValueError(
                f"The controller files for {self.source} have state_size "
                f"{metadata['state_size']}, but the optimizer was built for {self.state_size}."
            )
        if "saved_model.pb" not in files:
            raise ValueError(f"The controller {self.source} has no saved_model.pb; re-save it with "
                             f"keras_lopt.save_controller.")
        if self.safe_mode:
            trust.check(files["saved_model.pb"], self.source)
        # In a thread of its own: graph building and distribution strategies are per thread, so the
        # controller loads eagerly and unmirrored whether the caller is inside a strategy's scope or
        # tracing a train step (a config-rebuilt LHOPT loads its controller lazily, at the first step).
        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            act, outputs = thread.submit(self._frozen_act, files).result()
        self.metadata, self._files = metadata, dict(files)
        self._act, self._outputs = act, outputs

    def _frozen_act(self, files):
        with tempfile.TemporaryDirectory() as scratch:
            _write_files(files, scratch)
            try:
                module = tf.saved_model.load(scratch)
            except Exception as error:  # TensorFlow raises many kinds for a damaged SavedModel
                raise ValueError(f"The controller {self.source} cannot be loaded: its SavedModel is "
                                 f"damaged ({_first_line(error)}).") from None
        concrete = _act_function(module, self.source, self.state_size)
        # A deployed controller never changes: freezing its weights into
        # constants keeps them out of the compiled train step's inputs, which
        # XLA would otherwise pass on every step, control step or not.
        return convert_variables_to_constants_v2(concrete), concrete.structured_outputs

    def _ensure_loaded(self):
        if self._act is None:
            try:
                directory = resolve(self.source)
            except ValueError as error:
                raise ValueError(
                    f"The controller {self.name!r} is needed but was not embedded in what was "
                    f"loaded, and its source is unusable: {error}"
                ) from None
            self.set_files(_read_files(directory))

    @property
    def name(self):
        return self.metadata.get("name", "")

    @property
    def learning_rate_schedule(self):
        """The schedule its learning rate follows over the run (see
        `keras_lopt.actions.scheduled_amounts`), as its metadata says:
        "constant" unless it was exported with one."""
        return learning_rate_schedule_of(self.metadata)

    def act(self, observation, state):
        """One step: `(observation [NUM_FEATURES], state [S])` -> `(action, state)`."""
        action, _, state = self.move(observation, state)
        return action, state

    def move(self, observation, state):
        """One step: `(observation, state)` -> `(action, amounts, state)`: the action
        clamped to valid choices and the amounts LHOPT moves its hyperparameters by
        (`keras_lopt.actions.apply_amounts`): the controller's own "amount" output if it
        has one, else the chosen choices'."""
        self._ensure_loaded()
        flat = self._act(observation[None], state[None])
        out = tf.nest.pack_sequence_as(self._outputs, flat)
        action = actions.clip_action(out["action"][0])
        amounts = out["amount"][0] if "amount" in out else actions.chosen_amounts(action)
        return action, amounts, out["state"][0]

    def write(self, directory):
        """Writes the SavedModel and its metadata into `directory`."""
        self._ensure_loaded()
        _write_files(self._files, directory)

    def read(self, directory):
        """Uses the controller written into `directory` by `write`."""
        self.set_files(_read_files(directory))

    def get_config(self):
        # The record's essentials only: the whole record travels with the controller's files (a .keras
        # file's assets, or its source), and a short config stays readable in Keras' error messages.
        extra = self.metadata.get("extra", {})
        return {
            "source": self.source,
            **{key: self.metadata.get(key) for key in _CONFIG_KEYS},
            "extra": {key: extra[key] for key in _CONFIG_EXTRA if key in extra},
        }

    @classmethod
    def from_config(cls, config, safe_mode=True):
        if "metadata" in config:  # a config holding the whole record, as older saves do
            return cls(config["metadata"], config["source"], safe_mode=safe_mode)
        source = config.get("source")
        summary = {key: config.get(key) for key in _CONFIG_KEYS}
        summary["extra"] = dict(config.get("extra", {}))
        _check_summary(summary, source)
        controller = cls.__new__(cls)
        # The full record is checked when the files arrive (Controller.set_files).
        controller._start(summary, source, None, safe_mode)
        return controller

    def __repr__(self):
        return f"<keras_lopt Controller {self.name!r} from {self.source!r}>"
