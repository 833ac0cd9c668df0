"""Laws in compute alone, fitted on the compute frontier (best run per budget).

* Loss: L(C) = E + k C**-gamma, least squares on log L (three parameters, >= 4 budgets).
* Downstream metric: Q(C) = k C**gamma (the SIMS Figure 1 form), a line in log-log space.
Both can be fitted per group (e.g. setup = interleaved / textless / text).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import least_squares

from analysis._checks import at_least, loss_array, positive_array, same_length
from analysis.errors import FitError
from analysis.isoflop import group_budgets


def compute_frontier(flops, values, higher_is_better: bool = False, budget_rtol: float = 0.05):
    """Best run per budget: returns (budget FLOPs, best value, index of the winning run).

    Budgets group runs whose FLOPs agree within ``budget_rtol``; a budget's FLOPs are the
    winning run's own.
    """
    C = positive_array(flops, "flops")
    V = np.asarray(values, dtype=float).reshape(-1)
    same_length(flops=C, values=V)
    labels = group_budgets(C, budget_rtol)
    winners = []
    for g in range(labels.max() + 1):
        idx = np.flatnonzero((labels == g) & np.isfinite(V))
        if idx.size:
            winners.append(idx[np.argmax(V[idx])] if higher_is_better else idx[np.argmin(V[idx])])
    winners = np.array(winners, dtype=int)
    return C[winners], V[winners], winners


@dataclass(frozen=True)
class LossComputeFit:
    """L(C) = E + k C**-gamma."""

    E: float
    k: float
    gamma: float
    n_points: int
    rmse_log: float

    def predict(self, flops):
        """Predicted loss at each budget."""
        return self.E + self.k * np.asarray(flops, dtype=float) ** -self.gamma

    def to_dict(self) -> dict:
        """JSON-able dict."""
        return asdict(self)


def fit_loss_compute(flops, loss) -> LossComputeFit:
    """Fit L(C) = E + k C**-gamma to (budget, frontier loss) points.

    Fitted in log loss with E = exp(e) > 0 from several gamma starts; C is rescaled by its
    geometric mean so k is well conditioned, then converted back to raw FLOPs.
    Raises TooFewPoints (< 4 points), NonFiniteLoss, NonPositiveInput.
    """
    C = positive_array(flops, "flops")
    L = loss_array(loss)
    same_length(flops=C, loss=L)
    at_least(C.size, 4, "L(C) = E + k C^-gamma needs frontier points")
    c_ref = float(np.exp(np.log(C).mean()))
    x = C / c_ref
    y = np.log(L)

    def resid(p):
        e, logk, gamma = p
        return np.logaddexp(e, logk - gamma * np.log(x)) - y

    best = None
    for gamma0 in (0.02, 0.1, 0.3, 1.0):
        for frac in (0.5, 0.9):
            p0 = [np.log(frac * L.min()), np.log(max(L.mean() - frac * L.min(), 1e-12)), gamma0]
            r = least_squares(resid, p0, bounds=([-50, -50, 0.0], [50, 50, 10.0]), xtol=1e-14, ftol=1e-14, gtol=1e-14)
            if best is None or r.cost < best.cost:
                best = r
    e, logk, gamma = best.x
    k = float(np.exp(logk) * c_ref**gamma)  # k (C/c_ref)^-g = k c_ref^g C^-g
    rmse = float(np.sqrt(np.mean(best.fun**2)))
    return LossComputeFit(E=float(np.exp(e)), k=k, gamma=float(gamma), n_points=int(C.size), rmse_log=rmse)


@dataclass(frozen=True)
class PowerLaw:
    """Q(C) = k C**gamma."""

    k: float
    gamma: float
    n_points: int
    rmse_log: float

    def predict(self, flops):
        """Predicted value at each budget."""
        return self.k * np.asarray(flops, dtype=float) ** self.gamma

    def solve_for_flops(self, value):
        """Budget at which the law reaches ``value`` (extrapolation; saturation is ignored)."""
        return (np.asarray(value, dtype=float) / self.k) ** (1.0 / self.gamma)

    def to_dict(self) -> dict:
        """JSON-able dict."""
        return asdict(self)


def fit_power_law(flops, values) -> PowerLaw:
    """Least-squares line log Q = log k + gamma log C. Raises TooFewPoints (< 2), NonFiniteLoss."""
    C = positive_array(flops, "flops")
    Q = loss_array(values, "metric value")
    same_length(flops=C, values=Q)
    at_least(np.unique(C).size, 2, "Q(C) = k C^gamma needs distinct budgets")
    gamma, logk = np.polyfit(np.log(C), np.log(Q), 1)
    rmse = float(np.sqrt(np.mean((logk + gamma * np.log(C) - np.log(Q)) ** 2)))
    return PowerLaw(k=float(np.exp(logk)), gamma=float(gamma), n_points=int(C.size), rmse_log=rmse)


def fit_compute_laws(frame, group_col: str | None = "setup", flops_col: str = "flops", loss_col: str = "loss",
                     metric_cols=(), budget_rtol: float = 0.05) -> dict:
    """Per group: L(C) on the loss frontier and Q(C) on each metric's frontier (best score per budget).

    ``frame`` is a pandas DataFrame (one row per run). Returns
    {group: {"loss": LossComputeFit, metric: PowerLaw, ...}}; group None puts all rows in "all".
    A law that cannot be fitted for a group holds the refusal's message as a string instead.
    """

    groups = [("all", frame)] if group_col is None else list(frame.groupby(group_col, sort=True))
    out = {}
    for name, sub in groups:
        laws = {}
        try:
            c, v, _ = compute_frontier(sub[flops_col], sub[loss_col], False, budget_rtol)
            laws["loss"] = fit_loss_compute(c, v)
        except FitError as err:
            laws["loss"] = f"refused: {err}"
        for m in metric_cols:
            try:
                c, v, _ = compute_frontier(sub[flops_col], sub[m], True, budget_rtol)
                laws[m] = fit_power_law(c, v)
            except FitError as err:
                laws[m] = f"refused: {err}"
        out[str(name)] = laws
    return out
