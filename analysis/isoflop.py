"""Approach 2 (IsoFLOP profiles): per compute budget, a parabola of loss against log N.

For each budget C the runs trained at that budget give loss(log N); a least-squares parabola
through them has its vertex at N_opt(C). Regressing log N_opt on log C gives N_opt = k C**a,
and D_opt = C / (6 N_opt) = C**(1-a) / (6k) (Hoffmann et al. 2022, Approach 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis._checks import at_least, loss_array, positive_array, same_length
from analysis.errors import FitError, NoInteriorMinimum, OneModelSize

PERCENTILES = (2.5, 10.0, 90.0, 97.5)


def group_budgets(flops, rtol: float = 0.05) -> np.ndarray:
    """Label runs by budget: sorted FLOP values closer than ``rtol`` (relative) share a label.

    Runs at one nominal budget often report slightly different FLOPs (token counts round to
    whole steps), so exact equality would split a budget.
    """
    C = positive_array(flops, "flops")
    order = np.argsort(C)
    logc = np.log(C[order])
    new = np.concatenate([[True], np.diff(logc) > np.log1p(rtol)])
    labels = np.empty(C.size, dtype=int)
    labels[order] = np.cumsum(new) - 1
    return labels


@dataclass(frozen=True)
class IsoFlopProfile:
    """One budget's parabola loss = c2 x**2 + c1 x + c0 in x = ln N, and its vertex."""

    flops: float
    n_opt: float
    d_opt: float
    loss_opt: float
    coeffs: tuple
    n_runs: int
    n_min: float
    n_max: float


def isoflop_vertex(params, loss, flops: float) -> IsoFlopProfile:
    """Fit one budget's parabola and return its vertex.

    Raises TooFewPoints (< 3 distinct model sizes), NoInteriorMinimum when the parabola opens
    downward or its vertex lies outside the sampled range of N.
    """
    N = positive_array(params, "params")
    L = loss_array(loss)
    same_length(params=N, loss=L)
    at_least(np.unique(N).size, 3, f"IsoFLOP parabola at C={flops:.3g} needs distinct model sizes")
    x = np.log(N)
    c2, c1, c0 = np.polyfit(x, L, 2)
    if not c2 > 0:
        raise NoInteriorMinimum(
            f"IsoFLOP profile at C={flops:.3g} opens downward (curvature {c2:.3g}); no minimum to take"
        )
    xv = -c1 / (2 * c2)
    if not x.min() <= xv <= x.max():
        raise NoInteriorMinimum(
            f"IsoFLOP vertex at C={flops:.3g} is N={np.exp(xv):.3g}, outside the sampled range "
            f"[{N.min():.3g}, {N.max():.3g}]; add model sizes on that side"
        )
    n_opt = float(np.exp(xv))
    return IsoFlopProfile(flops=float(flops), n_opt=n_opt, d_opt=float(flops) / (6 * n_opt),
                          loss_opt=float(c0 - c1 * c1 / (4 * c2)), coeffs=(float(c2), float(c1), float(c0)),
                          n_runs=int(N.size), n_min=float(N.min()), n_max=float(N.max()))


@dataclass
class IsoFlopFit:
    """N_opt = k C**a and D_opt = k_d C**b (b = 1 - a under C = 6ND), with the per-budget vertices."""

    a: float
    k: float
    b: float
    k_d: float
    profiles: list
    n_budgets: int
    intervals: dict = field(default_factory=dict)
    n_bootstrap: int = 0
    n_bootstrap_failed: int = 0

    def n_opt(self, flops):
        """Compute-optimal parameter count at each budget."""
        return self.k * np.asarray(flops, dtype=float) ** self.a

    def d_opt(self, flops):
        """Compute-optimal token count at each budget."""
        return self.k_d * np.asarray(flops, dtype=float) ** self.b

    def to_dict(self) -> dict:
        """JSON-able summary."""
        return {
            "a": self.a, "k": self.k, "b": self.b, "k_d": self.k_d, "n_budgets": self.n_budgets,
            "intervals": self.intervals, "n_bootstrap": self.n_bootstrap,
            "n_bootstrap_failed": self.n_bootstrap_failed,
            "profiles": [p.__dict__ for p in self.profiles],
        }


def _power_law_from_vertices(budgets: np.ndarray, n_opts: np.ndarray) -> tuple[float, float]:
    a, logk = np.polyfit(np.log(budgets), np.log(n_opts), 1)
    return float(a), float(np.exp(logk))


def _fit_all(C_by_budget, N, L, members):
    profiles = [isoflop_vertex(N[idx], L[idx], C) for C, idx in zip(C_by_budget, members)]
    a, k = _power_law_from_vertices(np.array([p.flops for p in profiles]), np.array([p.n_opt for p in profiles]))
    return a, k, profiles


def fit_isoflop(flops, params, loss, n_bootstrap: int = 0, seed: int = 0, budget_rtol: float = 0.05) -> IsoFlopFit:
    """Approach 2 over runs given as parallel arrays (flops, params, loss).

    Runs are grouped into budgets with ``group_budgets``; each budget's FLOP value is the
    geometric mean of its runs. Every budget must yield an interior vertex, otherwise the
    budget's refusal propagates (drop that budget's runs to proceed without it).
    Bootstrap: runs are resampled with replacement within each budget and the whole fit
    repeated; a resample whose parabola has no interior minimum is counted in
    ``n_bootstrap_failed`` and skipped. Intervals are percentiles (2.5, 10, 90, 97.5) of a, b, k.
    Raises TooFewPoints (< 2 budgets or < 3 sizes in a budget), NoInteriorMinimum, OneModelSize.
    """
    C = positive_array(flops, "flops")
    N = positive_array(params, "params")
    L = loss_array(loss)
    same_length(flops=C, params=N, loss=L)
    if np.unique(N).size < 2:
        raise OneModelSize(f"all {N.size} runs share one model size N={N[0]:.4g}; no IsoFLOP profile exists")
    labels = group_budgets(C, budget_rtol)
    members = [np.flatnonzero(labels == g) for g in range(labels.max() + 1)]
    at_least(len(members), 2, "Approach 2 needs compute budgets")
    budgets = np.array([float(np.exp(np.log(C[idx]).mean())) for idx in members])
    a, k, profiles = _fit_all(budgets, N, L, members)
    fit = IsoFlopFit(a=a, k=k, b=1.0 - a, k_d=1.0 / (6.0 * k), profiles=profiles, n_budgets=len(members))
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        draws, failed = [], 0
        for _ in range(n_bootstrap):
            resampled = [rng.choice(idx, size=idx.size, replace=True) for idx in members]
            try:
                a_s, k_s, _ = _fit_all(budgets, N, L, resampled)
            except FitError:
                failed += 1
                continue
            draws.append((a_s, 1.0 - a_s, k_s))
        fit.n_bootstrap, fit.n_bootstrap_failed = n_bootstrap, failed
        if draws:
            arr = np.array(draws)
            fit.intervals = {
                name: {f"p{p:g}": float(np.percentile(arr[:, j], p)) for p in PERCENTILES}
                for j, name in enumerate(("a", "b", "k"))
            }
    return fit
