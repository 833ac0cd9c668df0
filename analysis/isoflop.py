"""Approach 2 (IsoFLOP profiles): per compute budget, a parabola of loss against log N.

For each budget C the runs trained at that budget give loss(log N); a least-squares parabola
through them has its vertex at N_opt(C). Regressing log N_opt on log C gives N_opt = k C**a,
and D_opt = C / (6 N_opt) = C**(1-a) / (6k) (Hoffmann et al. 2022, Approach 2).

A vertex from a flat or off-centre profile is far less certain than one from a sharp, centred
one, so each vertex carries a standard error: the delta method through the parabola's
covariance, sigma^2 (V'V)^-1 with sigma^2 the residual variance pooled over the budgets (a
budget of five runs alone leaves two degrees of freedom). The regression of log N_opt on log C
is then weighted by 1/variance (``weighted=False`` gives the equal-weight regression of old).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from analysis._checks import at_least, loss_array, positive_array, same_length
from analysis.errors import FitError, NoInteriorMinimum, OneModelSize

PERCENTILES = (2.5, 10.0, 90.0, 97.5)
LEVEL = 0.95
IRLS_STEPS = 3  # reweighting passes of the vertex regression (converged to 1e-4 in a by then)


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
    """One budget's parabola loss = c2 x**2 + c1 x + c0 in x = ln N, and its vertex.

    ``rss`` is the parabola's residual sum of squares over its ``n_runs`` runs (``dof`` = n_runs - 3);
    ``vertex_var_unscaled`` is g'(V'V)^-1 g with g the gradient of x_v = -c1/(2 c2) in (c2, c1, c0):
    var(ln N_opt) = sigma^2 times it. ``window`` is the factor in N around the best run that chose
    the runs (None: all runs of the budget).
    """

    flops: float
    n_opt: float
    d_opt: float
    loss_opt: float
    coeffs: tuple
    n_runs: int
    n_min: float
    n_max: float
    rss: float = float("nan")
    dof: int = 0
    vertex_var_unscaled: float = float("nan")
    window: float | None = None
    design_inv: tuple = ()

    def var_unscaled_at(self, x: float) -> float:
        """g'(V'V)^-1 g with the vertex gradient g = -(2x, 1, 0) / (2 c2) evaluated at ln N = x."""
        g = -np.array([2 * x, 1.0, 0.0]) / (2 * self.coeffs[0])
        return float(g @ np.asarray(self.design_inv).reshape(3, 3) @ g)

    def to_dict(self) -> dict:
        """JSON-able dict."""
        return asdict(self)


def window_runs(params, loss, window: float) -> np.ndarray:
    """Indices of the runs within a factor ``window`` in N of the lowest-loss run, widened to the
    three nearest model sizes (in log N) when fewer sizes fall inside: the stated windowing rule."""
    N, L = np.asarray(params, float), np.asarray(loss, float)
    dist = np.abs(np.log(N) - np.log(N[np.argmin(L)]))
    inside = dist <= np.log(window) + 1e-12
    if np.unique(N[inside]).size < 3:
        sizes = np.unique(N)
        near = sizes[np.argsort(np.abs(np.log(sizes) - np.log(N[np.argmin(L)])), kind="stable")[:3]]
        inside = np.isin(N, near)
    return np.flatnonzero(inside)


def isoflop_vertex(params, loss, flops: float, window: float | None = None) -> IsoFlopProfile:
    """Fit one budget's parabola and return its vertex with what its standard error needs.

    ``window`` (> 1) fits only the runs ``window_runs`` keeps, since a wide grid biases the vertex
    of a parabola fitted to a curve that is not one. Raises TooFewPoints (< 3 distinct model
    sizes), NoInteriorMinimum when the parabola opens downward or its vertex lies outside the
    sampled range of N.
    """
    N = positive_array(params, "params")
    L = loss_array(loss)
    same_length(params=N, loss=L)
    at_least(np.unique(N).size, 3, f"IsoFLOP parabola at C={flops:.3g} needs distinct model sizes")
    if window is not None:
        keep = window_runs(N, L, window)
        N, L = N[keep], L[keep]
    x = np.log(N)
    V = np.vander(x, 3)
    coef, *_ = np.linalg.lstsq(V, L, rcond=None)
    c2, c1, c0 = (float(c) for c in coef)
    if not c2 > 0:
        raise NoInteriorMinimum(
            f"IsoFLOP profile at C={flops:.3g} opens downward (curvature {c2:.3g}); no minimum to take"
        )
    xv = -c1 / (2 * c2)
    if not x.min() <= xv <= x.max():
        with np.errstate(over="ignore"):  # a nearly flat parabola's vertex can sit beyond exp's range
            n_v = np.exp(xv)
        raise NoInteriorMinimum(
            f"IsoFLOP vertex at C={flops:.3g} is N={n_v:.3g}, outside the sampled range "
            f"[{N.min():.3g}, {N.max():.3g}]; add model sizes on that side"
        )
    design_inv = np.linalg.pinv(V.T @ V)
    grad = np.array([c1 / (2 * c2**2), -1 / (2 * c2), 0.0])  # d x_v / d (c2, c1, c0)
    var_unscaled = float(grad @ design_inv @ grad)
    n_opt = float(np.exp(xv))
    return IsoFlopProfile(flops=float(flops), n_opt=n_opt, d_opt=float(flops) / (6 * n_opt),
                          loss_opt=float(c0 - c1 * c1 / (4 * c2)), coeffs=(c2, c1, c0),
                          n_runs=int(N.size), n_min=float(N.min()), n_max=float(N.max()),
                          rss=float(np.sum((V @ coef - L) ** 2)), dof=int(N.size - 3),
                          vertex_var_unscaled=var_unscaled, window=window,
                          design_inv=tuple(float(v) for v in design_inv.ravel()))


@dataclass
class IsoFlopFit:
    """N_opt = k C**a and D_opt = k_d C**b (b = 1 - a under C = 6ND), with the per-budget vertices.

    ``intervals`` are the analytic 95 % intervals of the (weighted) regression; ``vertex_se`` the
    standard error of each vertex's ln N_opt (same order as ``profiles``); ``refused`` the budgets
    left out, as {"flops", "error"}; ``bootstrap_intervals`` percentiles over resampled runs.
    """

    a: float
    k: float
    b: float
    k_d: float
    profiles: list
    n_budgets: int
    intervals: dict = field(default_factory=dict)
    n_bootstrap: int = 0
    n_bootstrap_failed: int = 0
    a_se: float = float("nan")
    vertex_se: list = field(default_factory=list)
    weighting: str = "equal"
    sigma: float = float("nan")
    chi2: float = float("nan")
    interval_method: str = ""
    refused: list = field(default_factory=list)
    window: float | None = None
    bootstrap_intervals: dict = field(default_factory=dict)

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
            "a_se": self.a_se, "intervals": self.intervals, "interval_method": self.interval_method,
            "weighting": self.weighting, "sigma": self.sigma, "chi2": self.chi2, "window": self.window,
            "n_bootstrap": self.n_bootstrap, "n_bootstrap_failed": self.n_bootstrap_failed,
            "bootstrap_intervals": self.bootstrap_intervals,
            "profiles": [{**p.to_dict(), "log_n_opt_se": se} for p, se in zip(self.profiles, self.vertex_se)],
            "refused": self.refused,
        }


@dataclass(frozen=True)
class _Regression:
    a: float
    logk: float
    a_se: float
    logk_se: float
    vertex_se: np.ndarray
    sigma: float
    chi2: float
    quantile: float
    method: str
    weighting: str


def vertex_regression(profiles, weighted: bool = True, level: float = LEVEL) -> _Regression:
    """ln N_opt = ln k + a ln C over the vertices, weighted by 1/var(ln N_opt) or equally.

    Weighted: var = sigma^2 * vertex_var_unscaled with sigma^2 = sum(rss) / sum(dof) pooled over the
    budgets; the coefficients' covariance is (X'WX)^-1, inflated by chi2/(m-2) when the vertices
    scatter more than their errors allow (m budgets), and the interval uses a t quantile (the pooled
    dof, or m-2 when inflated). With no pooled dof (three runs per budget) the relative weights stay
    and the scale comes from the vertices' scatter. Equal weights: ordinary least squares with the
    residual standard error and t(m-2). Two budgets leave no interval (NaN).
    """
    x = np.log([p.flops for p in profiles])
    y = np.log([p.n_opt for p in profiles])
    m = x.size
    dof_reg = m - 2
    u = np.array([p.vertex_var_unscaled for p in profiles], float)
    if weighted and m > 2:
        # a vertex's variance is smallest at its grid's centre, so weights taken at the estimated
        # vertex favour estimates pulled inward; take them where the line puts each vertex instead
        for _ in range(IRLS_STEPS):
            a0, logk0 = np.polyfit(x, y, 1, w=1 / np.sqrt(u))
            u = np.array([p.var_unscaled_at(logk0 + a0 * xi) for p, xi in zip(profiles, x)])
    dof_pool = int(sum(p.dof for p in profiles))
    rss = float(sum(p.rss for p in profiles))
    sigma2 = rss / dof_pool if dof_pool > 0 else float("nan")
    if weighted and np.all(np.isfinite(u) & (u > 0)):
        known = np.isfinite(sigma2) and sigma2 > 0
        var = (sigma2 if known else 1.0) * u
        (a, logk), cov = np.polyfit(x, y, 1, w=1 / np.sqrt(var), cov="unscaled")
        chi2 = float(np.sum((y - logk - a * x) ** 2 / var))
        if known and not (dof_reg > 0 and chi2 > dof_reg):
            scale, q, method = 1.0, stats.t.ppf(0.5 + level / 2, dof_pool), "delta method, pooled residual variance"
        elif dof_reg > 0:
            scale, q = chi2 / dof_reg, stats.t.ppf(0.5 + level / 2, dof_reg)
            method = "delta method, scaled by the vertices' scatter"
        else:
            scale, q, method = float("nan"), float("nan"), "none (two budgets, no pooled residual variance)"
        vertex_se = np.sqrt(var * scale)  # NaN when neither the runs nor the vertices give the noise's scale
        return _Regression(float(a), float(logk), float(np.sqrt(cov[0, 0] * scale)), float(np.sqrt(cov[1, 1] * scale)),
                           vertex_se, float(np.sqrt(sigma2)), chi2, float(q), method, "inverse vertex variance")
    a, logk = np.polyfit(x, y, 1)
    resid = y - logk - a * x
    chi2 = float(np.sum(resid**2))
    s2 = chi2 / dof_reg if dof_reg > 0 else float("nan")
    sxx = float(np.sum((x - x.mean()) ** 2))
    q = stats.t.ppf(0.5 + level / 2, dof_reg) if dof_reg > 0 else float("nan")
    return _Regression(float(a), float(logk), float(np.sqrt(s2 / sxx)), float(np.sqrt(s2 * (1 / m + x.mean() ** 2 / sxx))),
                       np.full(m, np.sqrt(s2)), float(np.sqrt(sigma2)), chi2, float(q),
                       "ordinary least squares, residual standard error" if dof_reg > 0 else "none (two budgets)",
                       "equal")


def _profiles(budgets, N, L, members, window, skip_refused):
    profiles, refused = [], []
    for C, idx in zip(budgets, members):
        try:
            profiles.append(isoflop_vertex(N[idx], L[idx], C, window))
        except FitError as err:
            if not skip_refused:
                raise
            refused.append({"flops": float(C), "error": f"{type(err).__name__}: {err}"})
    return profiles, refused


def fit_isoflop(flops, params, loss, n_bootstrap: int = 0, seed: int = 0, budget_rtol: float = 0.05,
                weighted: bool = True, window: float | None = None, skip_refused: bool = False,
                level: float = LEVEL) -> IsoFlopFit:
    """Approach 2 over runs given as parallel arrays (flops, params, loss).

    Runs are grouped into budgets with ``group_budgets``; each budget's FLOP value is the
    geometric mean of its runs. A budget without an interior vertex raises, or with
    ``skip_refused`` is left out and named in ``refused``. The regression of ln N_opt on ln C is
    weighted by each vertex's inverse variance (``vertex_regression``); ``intervals`` holds its
    analytic ``level`` interval of a, b and k. ``window`` fits each parabola on the runs around its
    minimum (``window_runs``).
    Bootstrap: runs are resampled with replacement within each budget and the whole fit repeated;
    a resample without interior minima is counted in ``n_bootstrap_failed`` and skipped;
    ``bootstrap_intervals`` are percentiles (2.5, 10, 90, 97.5) of a, b, k.
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
    profiles, refused = _profiles(budgets, N, L, members, window, skip_refused)
    at_least(len(profiles), 2, f"Approach 2 needs compute budgets with an interior IsoFLOP minimum "
                               f"({len(refused)} of {len(members)} have none)")
    reg = vertex_regression(profiles, weighted, level)
    k = float(np.exp(reg.logk))
    lo, hi = reg.a - reg.quantile * reg.a_se, reg.a + reg.quantile * reg.a_se
    klo, khi = np.exp(reg.logk - reg.quantile * reg.logk_se), np.exp(reg.logk + reg.quantile * reg.logk_se)
    p_lo, p_hi = f"p{50 - 50 * level:g}", f"p{50 + 50 * level:g}"
    fit = IsoFlopFit(a=reg.a, k=k, b=1.0 - reg.a, k_d=1.0 / (6.0 * k), profiles=profiles, n_budgets=len(profiles),
                     intervals={"a": {p_lo: lo, p_hi: hi}, "b": {p_lo: 1 - hi, p_hi: 1 - lo},
                                "k": {p_lo: float(klo), p_hi: float(khi)}},
                     a_se=reg.a_se, vertex_se=[float(s) for s in reg.vertex_se], weighting=reg.weighting,
                     sigma=reg.sigma, chi2=reg.chi2, interval_method=reg.method, refused=refused, window=window)
    if n_bootstrap > 0:
        used = [idx for idx, c in zip(members, budgets) if any(p.flops == c for p in profiles)]
        kept = budgets[[any(p.flops == c for p in profiles) for c in budgets]]
        rng = np.random.default_rng(seed)
        draws, failed = [], 0
        for _ in range(n_bootstrap):
            resampled = [rng.choice(idx, size=idx.size, replace=True) for idx in used]
            try:
                r = vertex_regression(_profiles(kept, N, L, resampled, window, False)[0], weighted, level)
            except FitError:
                failed += 1
                continue
            draws.append((r.a, 1.0 - r.a, np.exp(r.logk)))
        fit.n_bootstrap, fit.n_bootstrap_failed = n_bootstrap, failed
        if draws:
            arr = np.array(draws)
            fit.bootstrap_intervals = {
                name: {f"p{p:g}": float(np.percentile(arr[:, j], p)) for p in PERCENTILES}
                for j, name in enumerate(("a", "b", "k"))
            }
    return fit
