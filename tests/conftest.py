import os
import pathlib
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# The scripts in benchmarks/, research/ and examples/ are not packages; tests import them by name.
for _folder in ("benchmarks", "research", "examples"):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / _folder))

# Two logical CPU devices, so MirroredStrategy can be tested on one CPU. This
# must happen before TensorFlow initialises its devices, hence at import.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One MirroredStrategy for the whole session: two instances in one
    process reuse collective-op keys and make each other's all-reduces fail."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    return strategy
