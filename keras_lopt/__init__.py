"""keras-lopt: a learned optimizer for Keras (LHOPT, Almeida et al., 2021)."""

from keras_lopt.lhopt import HYPERPARAMETERS, LHOPT

__version__ = "0.1.0"
__all__ = ["HYPERPARAMETERS", "LHOPT", "__version__"]
