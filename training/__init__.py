"""The meta-training pipeline: inner tasks, baselines and reward, the PPO agent and environment, export,
validation and the held-out evaluation (see training/README.md).

TF-Agents 0.18 builds its networks with Keras 2 (`tf_keras`), so `tf.keras` must be Keras 2 here while
`import keras` stays Keras 3 for the inner tasks and LHOPT. The switch is read when TensorFlow first builds
`tf.keras`, so it is set here, before any module of the pipeline imports TensorFlow.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
