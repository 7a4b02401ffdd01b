"""LHOPT's eight hyperparameters: one table that the optimizer, the controller's
actions and meta-training's random starts all read.

Each hyperparameter lives in an optimizer variable in its *stored* form: the
betas as one-minus-beta, because the controller scales 1 - beta
multiplicatively; the others as themselves. Action bounds and random starts
apply to the stored form.
"""

import dataclasses
import difflib
import math

import keras


@dataclasses.dataclass(frozen=True)
class Hyperparameter:
    name: str  # the constructor argument
    default: float  # LHOPT's default
    reference: float  # the paper's reference value: the centre of meta-training's random starts
    stored_as: str  # the optimizer variable that holds it
    valid: tuple  # (low, high, low inclusive, high inclusive), on the value a user passes
    hint: str  # a valid value, for error messages
    bounds: tuple  # (low, high) on the stored value: the controller's moves stay inside
    start_factors: tuple  # random starts: the stored reference times log-uniform over (low, high)

    @property
    def one_minus(self):
        return self.stored_as.startswith("one_minus_")

    def stored(self, value):
        """The stored form of `value`, or the value of a stored form (the map is its own inverse)."""
        return 1.0 - value if self.one_minus else value

    def validate(self, value):
        """Returns `value` as a float, or raises a one-line `ValueError`."""
        if isinstance(value, keras.optimizers.schedules.LearningRateSchedule) or callable(value):
            raise ValueError(
                f"LHOPT needs a float {self.name}, got {value!r}: it steers its "
                f"hyperparameters itself, so schedules and callables are not "
                f"supported. Pass {self.hint} (with policy=None you can change it "
                f"during training with keras.callbacks.LearningRateScheduler)."
            )
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"LHOPT {self.name} must be {self.hint}; got {value!r}.") from None
        low, high, low_inclusive, high_inclusive = self.valid
        above = number > low or (low_inclusive and number == low)
        below = number < high or (high_inclusive and number == high)
        if not (math.isfinite(number) and above and below):
            raise ValueError(f"LHOPT {self.name} must be {self.hint}; got {value!r}.")
        return number


_OPEN_UNIT = (0.0, 1.0, False, False)
_HALF_OPEN_UNIT = (0.0, 1.0, False, True)
_POSITIVE = (0.0, math.inf, False, False)
_TENFOLD = (0.1, 10.0)

# In the order of the optimizer's variables (a saved model's optimizer state is matched by position).
TABLE = (
    # With the LAMB trust ratio the rate is a step relative to each weight tensor's norm: from the
    # reference 1e-3 the update alone trains several times slower than Adam, so LHOPT starts at 1e-2.
    Hyperparameter("learning_rate", 1e-2, 1e-3, "learning_rate", _POSITIVE, "a positive float like 1e-3",
                   (1e-8, 1.0), (1e-2, 1e2)),
    Hyperparameter("beta_1", 0.9, 0.9, "one_minus_beta_1", _OPEN_UNIT,
                   "a float strictly between 0 and 1, like 0.9", (1e-4, 0.5), _TENFOLD),
    Hyperparameter("beta_2", 0.99, 0.99, "one_minus_beta_2", _OPEN_UNIT,
                   "a float strictly between 0 and 1, like 0.99", (1e-4, 0.5), _TENFOLD),
    Hyperparameter("epsilon", 1e-6, 1e-6, "epsilon", _POSITIVE, "a positive float like 1e-6", (1e-10, 1.0), _TENFOLD),
    # The controller keeps weight decay at most 10x the reference (the top of the random starts): a
    # controller free to raise it further did so late in long runs and the loss rose.
    Hyperparameter("weight_decay", 1e-2, 1e-2, "weight_decay", (0.0, math.inf, True, False),
                   "a float >= 0 like 1e-2 (0 disables it)", (0.0, 0.1), _TENFOLD),
    Hyperparameter("clip_threshold", 0.8, 0.8, "clip_threshold", _OPEN_UNIT,
                   "a float strictly between 0 and 1, like 0.8",
                   (1 / (1 + math.exp(5.0)), 1 / (1 + math.exp(-5.0))), _TENFOLD),
    Hyperparameter("clip_ema", 1e-2, 1e-2, "clip_ema", _HALF_OPEN_UNIT, "a float in (0, 1], like 1e-2",
                   (1e-4, 1.0), _TENFOLD),
    Hyperparameter("update_norm_ema", 0.05, 0.05, "update_norm_ema", _HALF_OPEN_UNIT,
                   "a float in (0, 1], like 0.05", (1e-3, 1.0), _TENFOLD),
)

HYPERPARAMETERS = {hyperparameter.name: hyperparameter for hyperparameter in TABLE}
DEFAULTS = {hyperparameter.name: hyperparameter.default for hyperparameter in TABLE}


def did_you_mean(name, known):
    close = difflib.get_close_matches(name, known, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def get(name):
    """The `Hyperparameter` called `name`, or a one-line `ValueError`."""
    if name not in HYPERPARAMETERS:
        raise ValueError(
            f"Unknown LHOPT hyperparameter '{name}'.{did_you_mean(name, list(HYPERPARAMETERS))} "
            f"Known: {', '.join(HYPERPARAMETERS)}."
        )
    return HYPERPARAMETERS[name]


def validate(name, value):
    """Returns `value` as a float, or raises a one-line `ValueError`."""
    return get(name).validate(value)


def stored_value(name, value):
    """Converts between a hyperparameter and its stored form (either way)."""
    return HYPERPARAMETERS[name].stored(value)
