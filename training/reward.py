"""The speedup reward (docs/design.md, "Reward").

The Adam baseline's eval-loss curve (with the loss at initialisation as its
step-0 point) is fitted by a power law

    L(t) = c + a * (1 + t / tau) ** (-alpha),    a >= 0, tau > 0, alpha > 0,

which is non-increasing, so it can be inverted: the step at which the baseline
reaches a loss. At a control step the controller's run has taken `t` steps and
reached eval loss `L`; its log speedup is

    s = clip(log(baseline_step(L) / t), -3, 3),

with `baseline_step` capped at `MAX_EXTRAPOLATION` times the baseline's horizon.
Rewards are differences of consecutive log speedups (the first from 0), so with
gamma = 1 an episode's return telescopes to its final log speedup.
"""

import dataclasses
import math

import numpy as np

CLIP = 3.0
# 3x, as far as the evaluation measures Adam (training/evaluate.py's ADAM_HORIZON).
MAX_EXTRAPOLATION = 3.0
MAX_LOG_SPEEDUP = math.log(MAX_EXTRAPOLATION)  # the most a final score can be
# How to read a score, for results files.
SCALE = (f"0 = Adam's pace, -{CLIP:g} floor, +{MAX_LOG_SPEEDUP:.2f} = log {MAX_EXTRAPOLATION:g} the most a final value "
         f"can reach, since Adam's curve is extrapolated to at most {MAX_EXTRAPOLATION:g}x its budget")


def shown_speedup(speedup, capped):
    """A speedup as results tables show it: ">= " when it reached the cap (MAX_EXTRAPOLATION)."""
    return f">= {speedup:.2f}x" if capped else f"{speedup:.2f}x"


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    """L(t) = c + a * (1 + t / tau) ** (-alpha), fitted up to step `horizon`."""

    c: float
    a: float
    tau: float
    alpha: float
    horizon: float

    def __call__(self, steps):
        steps = np.asarray(steps, dtype=np.float64)
        return self.c + self.a * (1.0 + steps / self.tau) ** (-self.alpha)

    def steps_to_reach(self, loss):
        """The step at which the fitted curve reaches `loss` (0 if it starts
        below it, inf if it never gets there), before capping."""
        if not math.isfinite(loss) or self.a <= 0.0 or loss >= self.c + self.a:
            return 0.0
        if loss <= self.c:
            return math.inf
        return self.tau * ((self.a / (loss - self.c)) ** (1.0 / self.alpha) - 1.0)

    def to_dict(self):
        return dataclasses.asdict(self)


def _weighted_linear_fit(basis, losses, weights, floor):
    """Best (c, a) with a >= 0 and c >= floor for each basis row f: minimises
    sum w (c + a f - L)^2.

    basis: [..., n]; returns c, a, error, each of shape [...].
    """
    sw = weights.sum()
    mean_f = (weights * basis).sum(-1) / sw
    mean_l = (weights * losses).sum() / sw
    df = basis - mean_f[..., None]
    dl = losses - mean_l
    var_f = (weights * df * df).sum(-1)
    a = np.where(var_f > 0, (weights * df * dl).sum(-1) / np.maximum(var_f, 1e-300), 0.0)
    a = np.maximum(a, 0.0)
    c = mean_l - a * mean_f
    # Where the free asymptote falls below the floor, fix it there and refit a.
    low = c < floor
    if np.any(low):
        above = losses - floor
        a_floor = np.maximum((weights * basis * above).sum(-1) / np.maximum((weights * basis * basis).sum(-1), 1e-300), 0.0)
        a = np.where(low, a_floor, a)
        c = np.where(low, floor, c)
    error = (weights * (c[..., None] + a[..., None] * basis - losses) ** 2).sum(-1)
    return c, a, error


def fit_power_law(steps, losses, rounds=4):
    """Fits `PowerLaw` to an eval-loss curve by weighted least squares.

    Weights are 1/L^2 (relative errors), so late, small losses count as much
    as early ones. For each (tau, alpha) on a log grid the best (c, a) is
    linear; the grid is refined around the best point `rounds` times.
    When every loss is >= 0 (all our losses are) the asymptote c is kept
    >= 0 too, so a nearly straight curve does not extrapolate to a negative
    loss. Non-finite losses (a diverged run) are ignored; with fewer than two
    finite points the fit is flat at the first finite loss.
    """
    steps = np.asarray(steps, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    horizon = float(steps.max()) if len(steps) else 1.0
    finite = np.isfinite(losses)
    steps, losses = steps[finite], losses[finite]
    if len(losses) < 2:
        level = float(losses[0]) if len(losses) else math.nan
        return PowerLaw(level, 0.0, 1.0, 1.0, horizon)
    scale = np.abs(losses).max()
    weights = 1.0 / (np.abs(losses) + 1e-3 * scale + 1e-30) ** 2
    floor = 0.0 if losses.min() >= 0.0 else -np.inf

    log_tau = np.linspace(math.log(horizon * 1e-4 + 1e-3), math.log(horizon * 10 + 1), 41)
    log_alpha = np.linspace(math.log(0.02), math.log(10.0), 41)
    best = None
    for _ in range(rounds + 1):
        tau = np.exp(log_tau)[:, None, None]
        alpha = np.exp(log_alpha)[None, :, None]
        basis = (1.0 + steps[None, None, :] / tau) ** (-alpha)
        c, a, error = _weighted_linear_fit(basis, losses, weights, floor)
        i, j = np.unravel_index(np.argmin(error), error.shape)
        best = PowerLaw(float(c[i, j]), float(a[i, j]), float(np.exp(log_tau[i])), float(np.exp(log_alpha[j])), horizon)
        # Zoom in: the next grid spans two cells either side of the best point.
        step_tau = log_tau[1] - log_tau[0]
        step_alpha = log_alpha[1] - log_alpha[0]
        log_tau = np.linspace(log_tau[i] - 2 * step_tau, log_tau[i] + 2 * step_tau, 21)
        log_alpha = np.linspace(log_alpha[j] - 2 * step_alpha, log_alpha[j] + 2 * step_alpha, 21)
    return best


def fitted_log_speedup(fit, loss, step, max_extrapolation=MAX_EXTRAPOLATION, clip=CLIP):
    """Clipped log of (baseline steps to reach `loss`) / `step`, the steps read off
    the baseline's fitted power law (extrapolated up to `max_extrapolation` times its
    horizon): the meta-training reward. The held-out evaluation's speedup is read off
    Adam's measured curve instead (`training.evaluate.measured_speedup`).

    A non-finite loss, or one the baseline beats from the start, gives -clip.
    """
    if step <= 0:
        raise ValueError(f"fitted_log_speedup needs a positive step, got {step}.")
    if not math.isfinite(loss):
        return -clip
    baseline_step = min(fit.steps_to_reach(loss), max_extrapolation * fit.horizon)
    if baseline_step <= 0.0:
        return -clip
    return float(np.clip(math.log(baseline_step / step), -clip, clip))


# Each side of a paired log speedup is read down to 1/10,000 of Adam's pace before the
# difference is clipped: from a badly mis-set start both runs are far below Adam's pace
# (beyond -CLIP), and a controller that repairs some of it must still be told apart.
PAIRED_RESOLUTION = math.log(1e4)


def paired_log_speedup(fit, loss, frame_loss, step, clip=CLIP, resolution=PAIRED_RESOLUTION, **kwargs):
    """The log speedup of a run over the fixed frame's run from the same start: its
    `fitted_log_speedup` minus the frame's at the same `step` (both over the Adam
    baseline `fit`, each clipped to +-`resolution`), clipped to +-`clip`. A run that
    does what the frame does scores exactly 0. Measured in the Adam baseline's steps,
    so it stays informative where the frame makes no progress at all (a badly
    mis-set start), where a fit to the frame's own curve would be flat.
    """
    ours = fitted_log_speedup(fit, loss, step, clip=resolution, **kwargs)
    frame = fitted_log_speedup(fit, frame_loss, step, clip=resolution, **kwargs)
    return float(np.clip(ours - frame, -clip, clip))


def rewards(fit, losses, steps, **kwargs):
    """Per-control-step rewards: differences of consecutive log speedups.

    `losses[k]` is the eval loss after `steps[k]` steps (all positive). The
    rewards sum to the final log speedup (gamma = 1 telescoping).
    """
    speedups = [fitted_log_speedup(fit, loss, step, **kwargs) for loss, step in zip(losses, steps)]
    return np.diff(np.concatenate([[0.0], speedups]))
