"""Warnings that point at the user's line and are given once.

LHOPT's warnings come from deep inside Keras and TensorFlow (a traced train
step, a callback); Python would attribute them to a line in Keras. `warn`
attributes each to the first caller outside keras_lopt, Keras, TensorFlow and
the standard library (the user's `model.fit(...)` line), and gives it once per
object it is about (an optimizer, a callback), however often the step is traced.
"""

import os
import sys
import sysconfig
import warnings
import weakref

import keras
import tensorflow as tf

_INTERNAL = tuple(os.path.dirname(path) + os.sep for path in (keras.__file__, tf.__file__, __file__)) + (
    sysconfig.get_paths()["stdlib"] + os.sep, "<frozen")
# Packages TensorFlow and Keras run the step through (absl, the Keras 2 shim, optree) are not the user's either.
_INTERNAL_PACKAGES = ("absl", "tf_keras", "optree", "keras")

_given = weakref.WeakKeyDictionary()  # owner -> keys already warned about


def _internal(filename):
    if filename.startswith(_INTERNAL):
        return True
    parts = filename.split(os.sep)
    return "site-packages" in parts and parts[parts.index("site-packages") + 1] in _INTERNAL_PACKAGES


def warn(owner, key, message, category=UserWarning):
    """Warns `message` once for `owner` and `key`, attributed to the user's line."""
    given = _given.setdefault(owner, set())
    if key in given:
        return
    given.add(key)
    frame, level = sys._getframe(1), 1
    while frame is not None and _internal(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1 if frame is not None else 2)


def forget(owner, key):
    """Lets `key` be warned about again for `owner` (the condition was cleared)."""
    _given.get(owner, set()).discard(key)
