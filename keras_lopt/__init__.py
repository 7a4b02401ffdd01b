"""keras-lopt: a learned optimizer for Keras (LHOPT, Almeida et al., 2021)."""

from keras_lopt.callbacks import ControllerCallback, connect_loss_scale_optimizer
from keras_lopt.controller import Controller, save_controller
from keras_lopt.lhopt import HYPERPARAMETERS, LHOPT

__version__ = "0.1.0"
__all__ = [
    "Controller", "ControllerCallback", "HYPERPARAMETERS", "LHOPT", "connect_loss_scale_optimizer", "save_controller",
    "__version__",
]
