"""Predict a long run's loss from a trial's decayed losses at its cooldown rungs.

Each rung value is the loss of a fully decayed run of that horizon (sweeps.cooldown), so the
values across rungs trace loss against training tokens D for this config. They are fit with a
saturating power law, L(D) = E + A * D^-alpha (E: the loss more tokens cannot remove; alpha: how
fast the rest goes), weighted by each value's standard error, and the fit is read at the long
run's length with a 95% interval from the fit's covariance (the eval noise, inflated by the misfit
when the points scatter more than their errors say).

The prediction says when it is not to be trusted: fewer than four rungs leave nothing to check
the form against; a fit at the edge of its bounds (alpha at its largest: the curve still falls
faster than any power law this early, as before the loss leaves its first plateau; or E at zero:
no sign of saturation yet) extrapolates a shape it has not seen; a fall that steepens from one pair
of rungs to the next (in log loss against log tokens, beyond the eval noise) is one no saturating
power law has, whose slope only flattens: the loss has not reached its power-law phase, and the
law, bent to the early rungs, extrapolates the wrong curve; an extrapolation past 10x the
last rung rests on the form alone; and with four rungs or more, the law fit to all but the last
must predict the last within 1% (the form checked on the trial's own rungs).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

MIN_TRUSTED_POINTS = 4
SELF_CHECK_TOLERANCE = 0.01  # the fit without its last rung must predict that rung within this share
MAX_ALPHA = 3.0
MAX_TRUSTED_EXTRAPOLATION = 10.0
SE_FLOOR = 1e-3  # an eval's standard error is never taken as smaller: a few batches understate it


@dataclass
class LongRunPrediction:
    tokens: int  # the horizon predicted at
    loss: float
    low: float  # 95% interval
    high: float
    E: float
    A: float
    alpha: float
    n_points: int
    doubts: List[str] = field(default_factory=list)  # why not to trust it; empty: trusted

    @property
    def trusted(self) -> bool:
        return not self.doubts

    def describe(self) -> str:
        text = (f"{self.loss:.4f} [{self.low:.4f}, {self.high:.4f}] at {self.tokens:,} tokens "
                f"(L = {self.E:.3f} + {self.A:.3g} * D^-{self.alpha:.3f}, {self.n_points} rungs)")
        return text + (f"; not to be trusted: {'; '.join(self.doubts)}" if self.doubts else "")


def power_law(D, E, A, alpha):
    return E + A * np.power(D, -alpha)


def _fit(x: np.ndarray, y: np.ndarray, se: np.ndarray):
    from scipy.optimize import curve_fit

    span = float(y.max() - y.min())
    E0 = max(0.0, float(y.min()) - max(span, 0.05))
    p0 = (E0, max(float(y.max()) - E0, 1e-3) * float(x.min()) ** 0.5, 0.5)
    bounds = ([0.0, 0.0, 1e-3], [float(y.min()), np.inf, MAX_ALPHA])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # covariance warnings: judged below from its values
        return curve_fit(power_law, x, y, p0=p0, sigma=se, absolute_sigma=True, bounds=bounds, maxfev=20000)


def predict_long_run(tokens: Sequence[int], losses: Sequence[float], ses: Optional[Sequence[float]],
                     at_tokens: int) -> Optional[LongRunPrediction]:
    """The fit of `losses` (decayed, one per rung) against `tokens`, read at `at_tokens`; None when
    fewer than three finite points (three parameters) or the fit does not converge."""
    points = [(t, v, s if s is not None else SE_FLOOR)
              for t, v, s in zip(tokens, losses, ses if ses is not None else [None] * len(losses))
              if t > 0 and v is not None and math.isfinite(v)]
    if len(points) < 3:
        return None
    points.sort()
    scale = float(points[-1][0])  # tokens in units of the last rung: a well-conditioned fit
    x = np.array([p[0] / scale for p in points])
    y = np.array([p[1] for p in points])
    se = np.maximum(np.array([p[2] for p in points], dtype=float), SE_FLOOR)
    try:
        params, cov = _fit(x, y, se)
    except (RuntimeError, ValueError):
        return None
    E, A, alpha = (float(p) for p in params)
    residuals = (y - power_law(x, E, A, alpha)) / se
    dof = len(points) - 3
    if dof > 0:
        cov = cov * max(1.0, float(np.sum(residuals ** 2)) / dof)  # scatter beyond the errors widens it
    x_at = at_tokens / scale
    grad = np.array([1.0, x_at ** -alpha, -A * x_at ** -alpha * math.log(x_at)])
    var = float(grad @ cov @ grad) if np.all(np.isfinite(cov)) else math.inf
    sd = math.sqrt(var) if var >= 0 else math.inf
    loss = float(power_law(x_at, E, A, alpha))
    # without the rungs' standard errors a steeper slope cannot be told from eval noise
    steepening = _steepening(x, y, se) if ses is not None else []
    doubts = _doubts(len(points), E, alpha, x_at) + steepening + _self_check(x, y, se)
    return LongRunPrediction(int(at_tokens), loss, loss - 1.96 * sd, loss + 1.96 * sd, E, A * scale ** alpha,
                             alpha, len(points), doubts)


def _steepening(x: np.ndarray, y: np.ndarray, se: np.ndarray) -> List[str]:
    """A doubt when the log-log slope between two neighbouring rungs is steeper than the one before
    by more than twice the sd of that difference (the three rungs' eval noise, in log loss; the
    middle rung's enters both slopes)."""
    log_x, log_y, log_se = np.log(x), np.log(y), se / y
    for k in range(len(x) - 2):
        h1, h2 = log_x[k + 1] - log_x[k], log_x[k + 2] - log_x[k + 1]
        before = (log_y[k + 1] - log_y[k]) / h1
        after = (log_y[k + 2] - log_y[k + 1]) / h2
        sd = math.sqrt((log_se[k] / h1) ** 2 + (log_se[k + 1] * (1 / h1 + 1 / h2)) ** 2 + (log_se[k + 2] / h2) ** 2)
        if after < before - 2 * sd:
            return [f"the fall steepens from rung to rung (log-log slope {before:.3f}, then {after:.3f}): "
                    f"the loss is still before its power-law phase, which no saturating law fits"]
    return []


def _self_check(x: np.ndarray, y: np.ndarray, se: np.ndarray) -> List[str]:
    """A doubt when the law fit to every rung but the last misses the last by over 1%."""
    if len(x) < MIN_TRUSTED_POINTS:
        return []
    try:
        params, _ = _fit(x[:-1], y[:-1], se[:-1])
    except (RuntimeError, ValueError):
        return ["the law does not fit the rungs before the last"]
    miss = float(power_law(x[-1], *params)) - float(y[-1])
    if abs(miss) <= SELF_CHECK_TOLERANCE * abs(float(y[-1])):
        return []
    return [f"fit without its last rung, the law misses that rung by {miss:+.3f} (over "
            f"{100 * SELF_CHECK_TOLERANCE:g}%): the form does not hold across these rungs"]


def _doubts(n_points: int, E: float, alpha: float, extrapolation: float) -> List[str]:
    found = []
    if n_points < MIN_TRUSTED_POINTS:
        found.append(f"{n_points} rungs fit the law's 3 parameters exactly, leaving nothing to check its form "
                     f"(the interval counts eval noise only); {MIN_TRUSTED_POINTS}+ rungs give a check")
    if alpha >= MAX_ALPHA * 0.99:
        found.append(f"the decayed losses fall faster than any power law (alpha reached its bound {MAX_ALPHA:g}): "
                     f"the runs are still early, before the loss's power-law phase")
    if E <= 1e-6:
        found.append("the fit finds no floor (E = 0): the rungs show no saturation yet, so the form is a guess")
    if extrapolation > MAX_TRUSTED_EXTRAPOLATION:
        found.append(f"it extrapolates {extrapolation:.0f}x past the last rung (over {MAX_TRUSTED_EXTRAPOLATION:g}x "
                     f"rests on the form alone)")
    return found
