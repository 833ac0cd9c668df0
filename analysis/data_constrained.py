"""The data-constrained law of Muennighoff et al. (2023): repeated tokens and excess parameters are worth
less than fresh ones.

    L(N, D, U) = E + A / N'**alpha + B / D'**beta
    U_D = min(U, D)                                  unique tokens seen
    R_D = D / U_D - 1                                repetitions (0 for one epoch or less)
    D'  = U_D + U_D R_D* (1 - exp(-R_D / R_D*))
    U_N = min(N_opt(U_D), N)                         the compute-optimal size for U_D tokens (base law)
    R_N = N / U_N - 1                                excess parameters
    N'  = U_N + U_N R_N* (1 - exp(-R_N / R_N*))

N_opt(D) = G (G D)**(beta/alpha), G = (alpha A / (beta B))**(1/(alpha+beta)), is the Chinchilla
allocation solved for the size whose compute-optimal data is D.

Fitted as the paper did: the base law (E, A, B, alpha, beta) by Approach 3 on the single-epoch cells
(D <= U), or given; then R_D*, R_N* on all cells with the base fixed, by the summed Huber loss
(delta 1e-3) on log loss over log R* from a grid of starts, L-BFGS-B from the best few. Bootstrap:
cells resampled with replacement, the base refitted on each resample's single-epoch cells (when it was
fitted, not given) and R_D*, R_N* after it. The objective is often flat in R*: a parameter whose
95% interval reaches the search bounds (or that no cell exercises) is reported as not identified.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from analysis._checks import at_least, loss_array, positive_array, same_length
from analysis.allocation import allocation_exponents, optimal_allocation
from analysis.errors import FitError
from analysis.fit_lnd import (HUBER_DELTA, LNDFit, batched_newton, chinchilla_grid, fit_lnd, huber, objective,
                              percentile_intervals)

R_BOUNDS = (1e-2, 1e4)                          # search range of R_D* and R_N*
_LOG_BOUNDS = (math.log(R_BOUNDS[0]), math.log(R_BOUNDS[1]))
_STARTS = np.log(np.logspace(-1.5, 3.5, 11))    # per axis: 121 starts
PAPER = {"E": 1.87, "A": 521.0, "B": 1488.0, "alpha": 0.35, "beta": 0.353, "R_D_star": 15.4, "R_N_star": 5.3}
BASE_NAMES = ("E", "A", "B", "alpha", "beta")


@dataclass(frozen=True)
class BaseLaw:
    """L(N, D) = E + A/N**alpha + B/D**beta for fresh tokens and no excess parameters."""
    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def n_opt(self, d):
        """The compute-optimal parameter count whose optimal token count is d."""
        _, _, G = allocation_exponents(self.alpha, self.beta, self.A, self.B)
        return G * (G * np.asarray(d, dtype=float)) ** (self.beta / self.alpha)

    def to_dict(self) -> dict:
        return {k: float(getattr(self, k)) for k in BASE_NAMES}


def effective_tokens(D, U, R_D_star):
    """D': the fresh-token equivalent of D tokens drawn from U unique ones."""
    D, U = np.asarray(D, dtype=float), np.asarray(U, dtype=float)
    u_d = np.minimum(U, D)
    return u_d + u_d * R_D_star * -np.expm1(-(D / u_d - 1.0) / R_D_star)


def effective_params(N, D, U, base: BaseLaw, R_N_star):
    """N': the parameters that count, given the excess over the compute-optimal size for the unique data."""
    N = np.asarray(N, dtype=float)
    u_n = np.minimum(base.n_opt(np.minimum(U, D)), N)
    return u_n + u_n * R_N_star * -np.expm1(-(N / u_n - 1.0) / R_N_star)


def predict(N, D, U, base: BaseLaw, R_D_star: float, R_N_star: float):
    """The data-constrained loss L(N, D, U)."""
    n_eff = effective_params(N, D, U, base, R_N_star)
    d_eff = effective_tokens(D, U, R_D_star)
    return base.E + base.A / n_eff**base.alpha + base.B / d_eff**base.beta


# ----------------------------------------------------------------------------- fitting R_D*, R_N*


class _Points:
    """N, D, U, log loss with the parts of the prediction that do not depend on R* precomputed."""

    def __init__(self, N, D, U, log_l, base: BaseLaw):
        self.base = base
        self.log_l = log_l
        self.u_d = np.minimum(U, D)
        self.r_d = D / self.u_d - 1.0
        self.u_n = np.minimum(base.n_opt(self.u_d), N)
        self.r_n = N / self.u_n - 1.0

    def terms(self, log_r_d: np.ndarray, log_r_n: np.ndarray):
        """B/D'**beta for each log R_D* (rows) and A/N'**alpha for each log R_N* (rows)."""
        b = self.base
        rd, rn = np.exp(log_r_d)[:, None], np.exp(log_r_n)[:, None]
        d_eff = self.u_d * (1.0 + rd * -np.expm1(-self.r_d / rd))
        n_eff = self.u_n * (1.0 + rn * -np.expm1(-self.r_n / rn))
        return b.B / d_eff**b.beta, b.A / n_eff**b.alpha

    def objective(self, x, delta: float, weights=None) -> float:
        td, tn = self.terms(np.array([x[0]]), np.array([x[1]]))
        h = huber(np.log(self.base.E + td[0] + tn[0]) - self.log_l, delta)
        return float(h.sum() if weights is None else h @ weights)

    def grid_objective(self, delta: float, weights=None) -> np.ndarray:
        """The objective at every (log R_D*, log R_N*) start, shape (len, len)."""
        td, tn = self.terms(_STARTS, _STARTS)
        pred = np.log(self.base.E + td[:, None, :] + tn[None, :, :])
        h = huber(pred - self.log_l, delta)
        return h.sum(axis=2) if weights is None else h @ weights


def _fit_r(points: _Points, delta: float, weights=None, extra_starts=(), n_polish: int = 3):
    """(log R_D*, log R_N*, objective): L-BFGS-B from the best grid starts (and any extra starts)."""
    grid = points.grid_objective(delta, weights)
    order = np.argsort(grid, axis=None, kind="stable")[:n_polish]
    starts = [np.array([_STARTS[i // _STARTS.size], _STARTS[i % _STARTS.size]]) for i in order]
    starts += [np.asarray(s, dtype=float) for s in extra_starts]
    best = None
    for x0 in starts:
        res = minimize(points.objective, x0, args=(delta, weights), method="L-BFGS-B",
                       bounds=[_LOG_BOUNDS, _LOG_BOUNDS], options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 500})
        if np.isfinite(res.fun) and (best is None or res.fun < best[2]):
            best = (float(res.x[0]), float(res.x[1]), float(res.fun))
    return best


def _prepare(N, D, U, loss):
    N = positive_array(N, "N (parameters)")
    D = positive_array(D, "D (tokens)")
    U = positive_array(U, "U (unique tokens)")
    L = loss_array(loss)
    n = same_length(N=N, D=D, U=U, loss=L)
    at_least(n, 3, "the data-constrained fit needs points")
    return N, D, U, L


def _single_epoch(D, U) -> np.ndarray:
    return D <= U * (1 + 1e-9)


def _identified(name: str, samples: np.ndarray, exercised: bool) -> tuple[bool | None, str | None]:
    """Whether a bootstrap distribution pins R* down, and the plain statement when it does not."""
    what = "repeated tokens (R_D > 0)" if name == "R_D_star" else "parameters beyond N_opt(U) (R_N > 0)"
    if not exercised:
        return False, f"{name} is not identified: no cell has {what}, so the objective does not depend on it"
    vals = samples[np.isfinite(samples)]
    if vals.size == 0:
        return None, None
    lo, hi = np.percentile(vals, [2.5, 97.5])
    if lo <= 2 * R_BOUNDS[0] or hi >= R_BOUNDS[1] / 2:
        return False, (f"{name} is not identified by these data: the objective is flat in it (95% bootstrap "
                       f"interval {lo:.3g} to {hi:.3g} reaches the search range {R_BOUNDS[0]:g} to "
                       f"{R_BOUNDS[1]:g}); report the interval, not the point")
    return True, None


@dataclass
class DataConstrainedFit:
    base: BaseLaw
    base_source: str            # "given" or "fitted on K single-epoch cells"
    R_D_star: float
    R_N_star: float
    objective: float
    n_points: int
    n_repeated: int             # cells with R_D > 0
    n_excess: int               # cells with R_N > 0
    huber_delta: float
    intervals: dict
    identified: dict
    notes: list
    n_bootstrap: int = 0
    n_bootstrap_failed: int = 0

    def predict(self, N, D, U):
        return predict(N, D, U, self.base, self.R_D_star, self.R_N_star)

    def to_dict(self) -> dict:
        return {"R_D_star": self.R_D_star, "R_N_star": self.R_N_star, "objective": self.objective,
                "intervals": self.intervals, "identified": self.identified, "notes": self.notes,
                "base": {**self.base.to_dict(), "source": self.base_source}, "n_points": self.n_points,
                "n_repeated": self.n_repeated, "n_excess": self.n_excess, "huber_delta": self.huber_delta,
                "n_bootstrap": self.n_bootstrap, "n_bootstrap_failed": self.n_bootstrap_failed,
                "search_range": list(R_BOUNDS)}


def _base_from(theta) -> BaseLaw:
    f = LNDFit.from_theta(theta, 0.0, 0)
    return BaseLaw(f.E, f.A, f.B, f.alpha, f.beta)


def fit_data_constrained(N, D, U, loss, base: BaseLaw | None = None, delta: float = HUBER_DELTA,
                         n_bootstrap: int = 200, seed: int = 0) -> DataConstrainedFit:
    """Fit R_D* and R_N* (and the base law on the single-epoch cells unless `base` is given).

    Raises FitError when the base law must be fitted but the single-epoch cells cannot support
    Approach 3 (fewer than 6, one model size or one token count): pass `base` then.
    """
    N, D, U, L = _prepare(N, D, U, loss)
    log_l = np.log(L)
    single = _single_epoch(D, U)
    base_theta = None
    if base is None:
        try:
            lnd = fit_lnd(N[single], D[single], L[single], delta=delta)
        except FitError as e:
            raise FitError(f"base law from the {int(single.sum())} single-epoch cells (D <= U): {e}; "
                           "give the base law (--base E,A,B,alpha,beta)") from None
        base_theta = np.asarray(lnd.theta, dtype=float)
        base = _base_from(base_theta)
        source = f"fitted on {int(single.sum())} single-epoch cells"
    else:
        source = "given"
    points = _Points(N, D, U, log_l, base)
    x_d, x_n, f = _fit_r(points, delta)
    exercised = {"R_D_star": bool((points.r_d > 0).any()), "R_N_star": bool((points.r_n > 0).any())}
    fit = DataConstrainedFit(base, source, math.exp(x_d), math.exp(x_n), f, N.size, int((points.r_d > 0).sum()),
                             int((points.r_n > 0).sum()), delta, {}, {}, [])
    if n_bootstrap <= 0:
        for name in exercised:
            fit.identified[name] = False if not exercised[name] else None
        return fit
    samples, failed = _bootstrap(N, D, U, log_l, single, base, base_theta, (x_d, x_n), delta, n_bootstrap, seed)
    fit.intervals = percentile_intervals(samples)
    fit.n_bootstrap, fit.n_bootstrap_failed = n_bootstrap, failed
    for name in ("R_D_star", "R_N_star"):
        ok, note = _identified(name, samples[name], exercised[name])
        fit.identified[name] = ok
        if note:
            fit.notes.append(note)
    return fit


def _bootstrap(N, D, U, log_l, single, base, base_theta, x_best, delta, n_resamples, seed):
    """Per-resample R_D*, R_N* (and base parameters when fitted); returns (samples, n_failed)."""
    n = N.size
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(float)
    bases = [base] * n_resamples
    ok = np.ones(n_resamples, dtype=bool)
    if base_theta is not None:
        ln, ld, ll = np.log(N[single]), np.log(D[single]), log_l[single]
        w = counts[:, single]
        # a resample needs two sizes, two token counts and 6 single-epoch points to refit the base
        ok = np.array([np.unique(ln[c > 0]).size > 1 and np.unique(ld[c > 0]).size > 1 and c.sum() >= 6 for c in w])
        grid = chinchilla_grid()
        f0 = objective(grid, ln, ld, ll, delta)
        seeds = np.vstack([base_theta[None, :], grid[np.argsort(f0, kind="stable")[:3]]])
        k = seeds.shape[0]
        good = np.flatnonzero(ok)
        res = batched_newton(np.tile(seeds, (good.size, 1)), ln, ld, ll, delta, weights=np.repeat(w[good], k, axis=0),
                             groups=np.repeat(np.arange(good.size), k), max_iter=300)
        f = res.f.reshape(-1, k)
        thetas = res.theta.reshape(-1, k, 5)[np.arange(good.size), np.argmin(f, axis=1)]
        for i, t in zip(good, thetas):
            bases[i] = _base_from(t)
    samples = {name: np.full(n_resamples, np.nan) for name in ("R_D_star", "R_N_star", *BASE_NAMES)}
    for i in np.flatnonzero(ok):
        try:
            pts = _Points(N, D, U, log_l, bases[i])
        except FitError:
            ok[i] = False
            continue
        x_d, x_n, _ = _fit_r(pts, delta, counts[i], extra_starts=[x_best], n_polish=2)
        samples["R_D_star"][i], samples["R_N_star"][i] = math.exp(x_d), math.exp(x_n)
        for name in BASE_NAMES:
            samples[name][i] = getattr(bases[i], name)
    if base_theta is None:
        for name in BASE_NAMES:
            del samples[name]
    return samples, int((~ok).sum())


# ----------------------------------------------------------------------------- allocation


def constrained_allocation(flops: float, unique_tokens: float, base: BaseLaw, R_D_star: float, R_N_star: float,
                           n_grid: int = 601) -> dict:
    """The best N and D = C / 6N for a budget C with U unique tokens (grid search in log N over six decades
    around the unconstrained optimum, as the paper, then Brent's method between the grid neighbours of the
    best point), against the unconstrained Chinchilla allocation of the base law."""
    C, U = float(flops), float(unique_tokens)
    free = optimal_allocation(C, base.E, base.A, base.B, base.alpha, base.beta)

    def loss_at(log_n):
        n = np.exp(log_n)
        return predict(n, C / (6.0 * n), U, base, R_D_star, R_N_star)

    grid = np.linspace(math.log(free.n_opt) - 3 * math.log(10), math.log(free.n_opt) + 3 * math.log(10), n_grid)
    i = int(np.argmin(loss_at(grid)))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, n_grid - 1)]
    best = minimize_scalar(lambda x: float(loss_at(np.array([x]))[0]), bounds=(lo, hi), method="bounded",
                           options={"xatol": 1e-10})
    n = math.exp(best.x)
    d = C / (6.0 * n)
    return {"flops": C, "unique_tokens": U, "n": n, "d": d, "epochs": d / U, "loss": float(best.fun),
            "unconstrained": {"n": float(free.n_opt), "d": float(free.d_opt), "epochs": float(free.d_opt) / U,
                              "loss_fresh": float(free.loss_opt),
                              "loss": float(predict(free.n_opt, free.d_opt, U, base, R_D_star, R_N_star))}}
