"""Downstream accuracies with their noise, and the Q(C) = k C**gamma law they can (or cannot) carry.

A pair benchmark's accuracy is a binomial proportion over its n pairs: its 95 % interval is the
Wilson score interval (scipy), chance is 0.5, and the difference of two accuracies gets Newcombe's
hybrid score interval (method 10 of Newcombe 1998) built from the two Wilson intervals.
``fit_metric_trend`` fits log Q = log k + gamma log C by weighted least squares with the delta-method
variances var(log p) = (1 - p) / (n p), an interval on gamma, and a verdict: a law is called only when
some point is above chance at 95 % and gamma's interval excludes 0; otherwise "no trend
distinguishable from noise at this scale".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from analysis._checks import at_least, positive_array, same_length

CHANCE_PAIR = 0.5  # a pair benchmark scores the better of two items: guessing gets half
LEVEL = 0.95
NO_TREND = "no trend distinguishable from noise at this scale"


def wilson_interval(accuracy, n, level: float = LEVEL):
    """Wilson score interval of each accuracy measured on n pairs: arrays (lo, hi); NaN where n is unknown."""
    acc = np.atleast_1d(np.asarray(accuracy, float))
    nn = np.broadcast_to(np.asarray(n, float), acc.shape)
    lo, hi = np.full(acc.shape, np.nan), np.full(acc.shape, np.nan)
    for i, (p, m) in enumerate(zip(acc, nn)):
        if np.isfinite(p) and np.isfinite(m) and m >= 1:
            ci = stats.binomtest(int(round(p * m)), int(round(m))).proportion_ci(level, method="wilson")
            lo[i], hi[i] = ci.low, ci.high
    return lo, hi


def difference_interval(p1: float, n1: float, p2: float, n2: float, level: float = LEVEL):
    """Newcombe's hybrid score interval of p1 - p2 (independent samples): (difference, lo, hi)."""
    (l1,), (u1,) = wilson_interval(p1, n1, level)
    (l2,), (u2,) = wilson_interval(p2, n2, level)
    d = float(p1 - p2)
    return d, d - float(np.hypot(p1 - l1, u2 - p2)), d + float(np.hypot(u1 - p1, p2 - l2))


def above_chance(accuracy, n, chance: float = CHANCE_PAIR, level: float = LEVEL) -> np.ndarray:
    """True where the accuracy's Wilson interval lies wholly above chance (False where n is unknown)."""
    lo, _ = wilson_interval(accuracy, n, level)
    return np.nan_to_num(lo, nan=-np.inf) > chance


@dataclass(frozen=True)
class MetricTrend:
    """Q(C) = k C**gamma fitted to (budget, accuracy, pairs) points, with gamma's interval and the verdict.

    ``weighting``: "binomial" (known n: weights 1/var(log p), lack of fit inflates the interval by
    sqrt(chi2/dof) when above 1) or "scatter" (some n unknown: ordinary least squares, interval from the
    residual scatter with a t quantile). ``law`` is True only when the data carry a law.
    """

    k: float
    gamma: float
    gamma_se: float
    gamma_lo: float
    gamma_hi: float
    n_points: int
    weighting: str
    chi2: float
    n_above_chance: int
    chance: float
    law: bool
    verdict: str

    def predict(self, flops):
        """Predicted accuracy at each budget (no saturation)."""
        return self.k * np.asarray(flops, dtype=float) ** self.gamma

    def to_dict(self) -> dict:
        """JSON-able dict."""
        return asdict(self)


def fit_metric_trend(flops, accuracy, n=None, chance: float = CHANCE_PAIR, level: float = LEVEL) -> MetricTrend:
    """Weighted least squares of log accuracy on log C with an interval on gamma, and whether it is a law.

    ``n`` (pairs per point; None or NaN where unknown). With every n known the weights are the inverse
    delta-method variances of log p, (n p~) / (1 - p~) with p~ = (x + 0.5) / (n + 1) so a perfect score
    keeps a finite weight; gamma's standard error is sqrt((X'WX)^-1) times sqrt(chi2/dof) when the
    points scatter more than their binomial noise. Otherwise ordinary least squares with the residual
    standard error (needs 3 points for an interval). Raises TooFewPoints (< 2 distinct budgets),
    NonPositiveInput (an accuracy or budget not > 0).
    """
    C = positive_array(flops, "flops")
    Q = positive_array(accuracy, "accuracy")
    nn = np.full(C.shape, np.nan) if n is None else np.asarray(n, float).reshape(-1)
    same_length(flops=C, accuracy=Q, n=nn)
    at_least(np.unique(C).size, 2, "Q(C) = k C^gamma needs distinct budgets")
    x, y = np.log(C), np.log(Q)
    known = bool(np.isfinite(nn).all() and (nn >= 1).all())
    dof = C.size - 2
    z = stats.norm.ppf(0.5 + level / 2)
    if known:
        p = (np.round(Q * nn) + 0.5) / (nn + 1)
        sd = np.sqrt((1 - p) / (nn * p))
        (gamma, logk), cov = np.polyfit(x, y, 1, w=1 / sd, cov="unscaled")
        chi2 = float(np.sum(((y - logk - gamma * x) / sd) ** 2))
        se = float(np.sqrt(cov[0, 0]) * np.sqrt(max(1.0, chi2 / dof) if dof > 0 else 1.0))
        q = stats.t.ppf(0.5 + level / 2, dof) if dof > 0 and chi2 > dof else z
        weighting = "binomial"
    else:
        gamma, logk = np.polyfit(x, y, 1)
        resid = y - logk - gamma * x
        chi2 = float(np.sum(resid**2))
        se = float(np.sqrt(chi2 / dof / np.sum((x - x.mean()) ** 2))) if dof > 0 else float("nan")
        q = stats.t.ppf(0.5 + level / 2, dof) if dof > 0 else float("nan")
        weighting = "scatter"
    lo, hi = gamma - q * se, gamma + q * se
    n_above = int(above_chance(Q, nn, chance, level).sum())
    has_iv = bool(np.isfinite(lo) and np.isfinite(hi))
    law = has_iv and not (lo <= 0 <= hi) and (n_above > 0 or not known)
    if law:
        verdict = f"gamma = {gamma:.3g} [{lo:.3g}, {hi:.3g}]: accuracy {'rises' if gamma > 0 else 'falls'} with compute"
    elif known and n_above == 0:
        verdict = f"{NO_TREND}: no point is above chance ({chance:g}) at {100 * level:g}%"
    elif not has_iv:
        verdict = f"{NO_TREND}: {C.size} points and unknown pair counts give gamma no interval"
    else:
        verdict = f"{NO_TREND}: gamma's {100 * level:g}% interval [{lo:.3g}, {hi:.3g}] contains 0"
    return MetricTrend(k=float(np.exp(logk)), gamma=float(gamma), gamma_se=se, gamma_lo=float(lo),
                       gamma_hi=float(hi), n_points=int(C.size), weighting=weighting, chi2=chi2,
                       n_above_chance=n_above, chance=float(chance), law=law, verdict=verdict)
