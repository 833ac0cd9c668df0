"""Approach 3: the parametric loss law L(N, D) = E + A / N**alpha + B / D**beta.

The fit follows Hoffmann et al. (2022) as corrected by Epoch AI (Besiroglu et al. 2024):
parameters theta = (a, b, e, alpha, beta) with A = exp(a), B = exp(b), E = exp(e); the
predicted log loss is LSE(a - alpha log N, b - beta log D, e); the objective is the SUM
(never the mean, which stalls L-BFGS) of Huber_delta(log L_pred - log L_obs), delta = 1e-3,
minimised from the 4,500-start Chinchilla grid, best objective wins.

Speed: instead of 4,500 scipy runs (~40 s on 240 points) the objective is evaluated at all
4,500 starts in one numpy pass, the 256 lowest-objective starts are optimised at once by a
batched trust-region Newton method on exact gradients and Hessians (the model is LSE of a
linear map of theta, so both are closed-form), rows that converge, duplicate a better row,
or trail the best by 3x after 20 iterations are dropped, and the few best distinct end
points are polished one at a time (Newton to machine precision, then scipy L-BFGS-B with the
analytic gradient and zero tolerances); the lowest objective wins. Ranking and racing give
up the "every start runs to convergence" guarantee; bench/fit_speed.py and the tests check
the result against the brute-force loop (same or lower objective, within 1e-9 relative).

Bootstrap: resampling points with replacement is the same as giving each point an integer
weight, so all resamples are fitted together in one batch (rows = resample x start). Each
resample starts from the full-data best fit plus the 3 grid starts with the lowest full-data
objective, not from the whole grid; this is documented in ``bootstrap_lnd``.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import minimize

from analysis._checks import at_least, loss_array, positive_array, same_length
from analysis.errors import OneDataSize, OneModelSize

HUBER_DELTA = 1e-3
PARAM_NAMES = ("a", "b", "e", "alpha", "beta")  # order of theta's columns


def chinchilla_grid() -> np.ndarray:
    """Return the (4500, 5) grid of starts (a, b, e, alpha, beta) used by Hoffmann et al."""
    alphas = np.arange(0.0, 2.0 + 1e-9, 0.5)
    betas = np.arange(0.0, 2.0 + 1e-9, 0.5)
    es = np.arange(-1.0, 1.0 + 1e-9, 0.5)
    As = np.arange(0.0, 25.0 + 1e-9, 5.0)
    Bs = np.arange(0.0, 25.0 + 1e-9, 5.0)
    return np.array([(a, b, e, al, be) for a, b, e, al, be in itertools.product(As, Bs, es, alphas, betas)])


# ----------------------------------------------------------------------------- objective


def predict_log_loss(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    """Return LSE(a - alpha log N, b - beta log D, e) for each row of theta (shape (S, n))."""
    theta = np.atleast_2d(theta)
    z1 = theta[:, 0:1] - theta[:, 3:4] * log_n[None, :]
    z2 = theta[:, 1:2] - theta[:, 4:5] * log_d[None, :]
    z3 = np.broadcast_to(theta[:, 2:3], z1.shape)
    return np.logaddexp(np.logaddexp(z1, z2), z3)


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    """Huber loss: r**2/2 inside |r| <= delta, delta*(|r| - delta/2) outside (== scipy.special.huber)."""
    ar = np.abs(r)
    return np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def objective(theta, log_n, log_d, log_l, delta: float = HUBER_DELTA, weights=None) -> np.ndarray:
    """Return the summed Huber objective for each row of theta (shape (S,))."""
    r = predict_log_loss(theta, log_n, log_d) - log_l[None, :]
    h = huber(r, delta)
    if weights is not None:
        h = h * weights
    return h.sum(axis=1)


def _batched_eval(theta, log_n, log_d, log_l, delta, weights, feats, want_hess=True, want_grad=True):
    """Objective, gradient (S,5) and Hessian (S,5,5) of the summed Huber loss for every row.

    With z = (a - alpha u, b - beta v, e) = P theta, pred = LSE(z) has gradient P^T w and
    Hessian P^T (diag w - w w^T) P, w = softmax(z); the chain rule through Huber adds
    huber'' * J J^T (huber'' is 1 inside |r| <= delta, else 0).
    Rows whose exponentials over/underflow get objective inf (callers reject such trials).
    """
    u, v = log_n, log_d
    S = theta.shape[0]
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        # exp without max-subtraction: grid starts keep z within float range, and a wild
        # trial that overflows becomes inf/nan and is rejected by the caller
        e1 = np.multiply(theta[:, 3:4], -u[None, :])
        e1 += theta[:, 0:1]
        np.exp(e1, out=e1)
        e2 = np.multiply(theta[:, 4:5], -v[None, :])
        e2 += theta[:, 1:2]
        np.exp(e2, out=e2)
        e3 = np.exp(theta[:, 2:3])
        s = e1 + e2
        s += e3
        r = np.log(s)
        r -= log_l[None, :]
        d1 = np.clip(r, -delta, delta)  # huber'
        # huber = d1*(r - d1/2): equals r^2/2 inside and delta(|r| - delta/2) outside
        h = d1 * 0.5
        np.subtract(r, h, out=h)
        h *= d1
        if weights is not None:
            h *= weights
        f = h.sum(axis=1)
        f[~np.isfinite(f)] = np.inf
        if not want_grad:
            return f, None, None
        if want_hess:
            d2 = (np.abs(r) <= delta).astype(float)  # huber''
        if weights is not None:
            d1 *= weights
            if want_hess:
                d2 *= weights
        inv = np.divide(1.0, s, out=s)
        w1 = np.multiply(e1, inv, out=e1)
        w2 = np.multiply(e2, inv, out=e2)
        w3 = np.multiply(inv, e3, out=inv)
        q1 = d1 * w1
        q2 = d1 * w2
        one, u1, v1, uu, uv, vv = feats  # contiguous vectors: matrix-vector products are fast
        grad = np.empty((S, 5))
        grad[:, 0] = q1.sum(axis=1)
        grad[:, 1] = q2.sum(axis=1)
        grad[:, 2] = np.einsum("ij,ij->i", d1, w3)
        grad[:, 3] = -(q1 @ u1)
        grad[:, 4] = -(q2 @ v1)
        if not want_hess:
            return f, grad, None
        c = d2
        c -= d1  # M_jk = c w_j w_k + d1 delta_jk w_j
        cw1 = c * w1
        cw2 = c * w2
        m00 = cw1 * w1
        m00 += q1
        m11 = cw2 * w2
        m11 += q2
        m22 = c * w3
        m22 += d1
        m22 *= w3
        m01 = np.multiply(cw1, w2, out=q1)
        m02 = np.multiply(cw1, w3, out=cw1)
        m12 = np.multiply(cw2, w3, out=cw2)
    H = np.empty((S, 5, 5))
    # theta order (a, b, e, alpha, beta): alpha acts on z1 with coefficient -u, beta on z2 with -v
    H[:, 0, 0] = m00.sum(axis=1)
    H[:, 0, 1] = m01.sum(axis=1)
    H[:, 0, 2] = m02.sum(axis=1)
    H[:, 0, 3] = -(m00 @ u1)
    H[:, 0, 4] = -(m01 @ v1)
    H[:, 1, 1] = m11.sum(axis=1)
    H[:, 1, 2] = m12.sum(axis=1)
    H[:, 1, 3] = -(m01 @ u1)
    H[:, 1, 4] = -(m11 @ v1)
    H[:, 2, 2] = m22.sum(axis=1)
    H[:, 2, 3] = -(m02 @ u1)
    H[:, 2, 4] = -(m12 @ v1)
    H[:, 3, 3] = m00 @ uu
    H[:, 3, 4] = m01 @ uv
    H[:, 4, 4] = m11 @ vv
    iu = np.triu_indices(5, 1)
    H[:, iu[1], iu[0]] = H[:, iu[0], iu[1]]
    bad = ~np.isfinite(f)
    if bad.any():
        grad[bad] = 0.0
        H[bad] = 0.0
    return f, grad, H


def _features(log_n: np.ndarray, log_d: np.ndarray) -> tuple:
    """Per-point vectors (1, u, v, u^2, uv, v^2) the gradient and Hessian sums are weighted by."""
    vecs = (np.ones_like(log_n), log_n, log_d, log_n**2, log_n * log_d, log_d**2)
    return tuple(np.ascontiguousarray(x, dtype=float) for x in vecs)


# ----------------------------------------------------------------------------- batched optimiser


def _trust_region_steps(grad, H, radius):
    """Saddle-free trust-region steps: s = -sum_i (v_i.g)/(|lam_i| + mu) v_i with ||s|| <= radius.

    Using |lambda| keeps every step a descent direction where the Hessian is indefinite;
    mu >= 0 is found per row by bisection in log space so the step fits the radius.
    """
    lam, V = np.linalg.eigh(H)
    lam = np.abs(lam)
    gt = np.einsum("sji,sj->si", V, grad)  # coordinates of g in the eigenbasis
    floor = 1e-12 * np.maximum(lam.max(axis=1, keepdims=True), 1e-300) + 1e-300

    def norm_at(mu):
        return np.sqrt(((gt / (lam + mu[:, None] + floor)) ** 2).sum(axis=1))

    mu = np.zeros(grad.shape[0])
    too_long = norm_at(mu) > radius
    if too_long.any():
        # Newton on phi(mu) = 1/||s(mu)|| - 1/radius (More & Sorensen): from mu = 0, where
        # phi < 0, the iterates increase monotonically to the root without overshooting
        lam_t, gt_t, fl_t, rad_t = lam[too_long], gt[too_long], floor[too_long], radius[too_long]
        m = np.zeros(lam_t.shape[0])
        for _ in range(12):
            den = lam_t + m[:, None] + fl_t
            q2 = (gt_t**2 / den**2).sum(axis=1)
            q3 = (gt_t**2 / den**3).sum(axis=1)
            norm = np.sqrt(q2)
            m = m + (norm / rad_t - 1.0) * q2 / q3
            m = np.maximum(m, 0.0)
        mu[too_long] = m
    coef = -gt / (lam + mu[:, None] + floor)
    step = np.einsum("sij,sj->si", V, coef)
    # predicted decrease of the (|lambda|-modified) quadratic model, used for the ratio test
    pred = -(gt * coef).sum(axis=1) - 0.5 * ((lam * coef**2).sum(axis=1))
    return step, pred


@dataclass
class _BatchResult:
    theta: np.ndarray
    f: np.ndarray
    iterations: int


def batched_newton(
    theta0: np.ndarray,
    log_n: np.ndarray,
    log_d: np.ndarray,
    log_l: np.ndarray,
    delta: float = HUBER_DELTA,
    weights: np.ndarray | None = None,
    max_iter: int = 200,
    gtol: float = 1e-10,
    ftol: float = 1e-15,
    prune_every: int = 5,
    dedupe_decimals: int | None = 6,
    groups: np.ndarray | None = None,
    prune_factor: float | None = None,
    prune_after: int = 20,
    patience: int | None = None,
    radius0: float = 1.0,
) -> _BatchResult:
    """Minimise the summed Huber objective from every row of theta0 at once.

    Promise: each returned row has an objective no higher than its start. Rows stop when the
    gradient is below gtol, the relative decrease below ftol for 3 accepted steps, or the trust
    radius collapses. Every ``prune_every`` iterations rows that coincide (to ``dedupe_decimals``
    in theta) with a lower-objective row of the same group are frozen: they would follow the
    same path. ``groups`` labels rows that share data (bootstrap resamples); dedupe never
    crosses groups. ``weights`` (S, n) weighs each row's points.
    Racing (off by default): after ``prune_after`` iterations, rows whose objective exceeds
    ``prune_factor`` times their group's best are frozen, and a group whose best objective
    has not improved by 1e-12 (relative) for ``patience`` iterations is stopped; both trade a
    guarantee for speed and are checked against the brute-force loop in the tests/bench.
    """
    theta = np.array(theta0, dtype=float, copy=True)
    S = theta.shape[0]
    feats = _features(log_n, log_d)
    f, g, H = _batched_eval(theta, log_n, log_d, log_l, delta, weights, feats)
    radius = np.full(S, float(radius0))
    active = np.ones(S, dtype=bool)
    stall = np.zeros(S, dtype=int)
    groups = np.zeros(S, dtype=int) if groups is None else np.asarray(groups)
    n_groups = int(groups.max()) + 1 if S else 0
    group_best = np.full(n_groups, np.inf)
    np.minimum.at(group_best, groups, f)
    last_gain = np.zeros(n_groups, dtype=int)
    it = 0
    for it in range(1, max_iter + 1):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        step, pred = _trust_region_steps(g[idx], H[idx], radius[idx])
        trial = theta[idx] + step
        w_idx = None if weights is None else weights[idx]
        f_t, g_t, H_t = _batched_eval(trial, log_n, log_d, log_l, delta, w_idx, feats)
        actual = f[idx] - f_t
        ok = np.isfinite(f_t) & (actual > 0)
        rho = np.where(pred > 0, actual / np.maximum(pred, 1e-300), 0.0)
        snorm = np.linalg.norm(step, axis=1)
        rad = radius[idx]
        rad = np.where(~ok | (rho < 0.25), 0.25 * np.minimum(rad, snorm + 1e-300), rad)
        rad = np.where(ok & (rho > 0.75) & (snorm > 0.9 * rad), 2.0 * rad, rad)
        radius[idx] = np.minimum(rad, 100.0)
        acc = idx[ok]
        rel = actual[ok] / np.maximum(np.abs(f[acc]), 1e-300)
        stall[acc] = np.where(rel < ftol, stall[acc] + 1, 0)
        theta[acc] = trial[ok]
        f[acc] = f_t[ok]
        g[acc] = g_t[ok]
        H[acc] = H_t[ok]
        done = (np.linalg.norm(g[idx], axis=1) < gtol) | (stall[idx] >= 3) | (radius[idx] < 1e-14)
        active[idx[done]] = False
        if dedupe_decimals is not None and it % prune_every == 0:
            _freeze_duplicates(theta, f, active, groups, dedupe_decimals)
        if prune_factor is not None or patience is not None:
            new_best = np.full(n_groups, np.inf)
            np.minimum.at(new_best, groups, f)
            gained = new_best < group_best * (1 - 1e-12)
            last_gain[gained] = it
            group_best = new_best
            if patience is not None:
                active &= (it - last_gain[groups]) < patience
            if prune_factor is not None and it >= prune_after and it % prune_every == 0:
                active &= f <= prune_factor * group_best[groups]
    return _BatchResult(theta=theta, f=f, iterations=it)


def _freeze_duplicates(theta, f, active, groups, decimals):
    """Deactivate active rows that round to the same theta as a lower-objective row in their group."""
    idx = np.flatnonzero(active)
    if idx.size < 2:
        return
    key = np.column_stack([groups[idx], np.round(theta[idx], decimals)])
    order = np.lexsort((f[idx],) + tuple(key.T[::-1]))  # sort by key, then objective
    k = key[order]
    same_as_prev = np.zeros(order.size, dtype=bool)
    same_as_prev[1:] = (k[1:] == k[:-1]).all(axis=1)
    active[idx[order[same_as_prev]]] = False


# ----------------------------------------------------------------------------- single-row polish


def objective_and_grad(theta, log_n, log_d, log_l, delta: float = HUBER_DELTA, weights=None):
    """Summed Huber objective and its gradient for one theta (the scipy-facing form, ``jac=True``)."""
    a_, b_, e_, alpha, beta = theta
    z1 = a_ - alpha * log_n
    z2 = b_ - beta * log_d
    m = np.maximum(np.maximum(z1, z2), e_)
    e1 = np.exp(z1 - m)
    e2 = np.exp(z2 - m)
    e3 = np.exp(e_ - m)
    s = e1 + e2 + e3
    r = m + np.log(s) - log_l
    d1 = np.clip(r, -delta, delta)
    h = d1 * (r - 0.5 * d1)  # r^2/2 inside |r| <= delta, delta(|r| - delta/2) outside
    if weights is not None:
        h = h * weights
        d1 = d1 * weights
    q1 = d1 * e1 / s
    q2 = d1 * e2 / s
    grad = np.array([q1.sum(), q2.sum(), (d1 * e3 / s).sum(), -(q1 @ log_n), -(q2 @ log_d)])
    return float(h.sum()), grad


def polish(theta, log_n, log_d, log_l, delta: float = HUBER_DELTA, weights=None):
    """Refine one start: batched Newton to machine precision, then scipy L-BFGS-B (analytic
    gradient, tight tolerances) as a second opinion; returns (theta, objective) of the better."""
    w = None if weights is None else np.asarray(weights, dtype=float)[None, :]
    res = batched_newton(np.asarray(theta, float)[None, :], log_n, log_d, log_l, delta, w,
                         max_iter=100, gtol=0.0, ftol=1e-16, dedupe_decimals=None)
    best_theta, best_f = res.theta[0], float(res.f[0])
    # zero tolerances: run until the line search cannot find a decrease (objectives here are
    # ~1e-3, so scipy's default absolute-ish tolerances would stop early)
    opt = minimize(objective_and_grad, best_theta, args=(log_n, log_d, log_l, delta, weights), jac=True,
                   method="L-BFGS-B", options={"ftol": 0.0, "gtol": 0.0, "maxiter": 2000, "maxcor": 20})
    if np.isfinite(opt.fun) and opt.fun < best_f:
        best_theta, best_f = np.asarray(opt.x, float), float(opt.fun)
    return best_theta, best_f


# ----------------------------------------------------------------------------- public API


@dataclass
class LNDFit:
    """A fitted L(N, D) = E + A/N**alpha + B/D**beta.

    ``a`` and ``b`` are the compute-optimal allocation exponents (N_opt ~ C**a, D_opt ~ C**b
    under C = 6ND) and G the allocation constant; ``objective`` is the summed Huber loss.
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    a: float
    b: float
    G: float
    objective: float
    n_points: int
    huber_delta: float = HUBER_DELTA
    theta: tuple = field(default=(), repr=False)

    @classmethod
    def from_theta(cls, theta, objective: float, n_points: int, delta: float = HUBER_DELTA) -> "LNDFit":
        a_, b_, e_, alpha, beta = (float(x) for x in theta)
        A, B, E = np.exp(a_), np.exp(b_), np.exp(e_)
        s = alpha + beta
        a = beta / s if s > 0 else float("nan")
        b = alpha / s if s > 0 else float("nan")
        with np.errstate(all="ignore"):
            G = float((alpha * A / (beta * B)) ** (1.0 / s)) if s > 0 and beta > 0 else float("nan")
        return cls(E=float(E), A=float(A), B=float(B), alpha=alpha, beta=beta, a=a, b=b, G=G,
                   objective=float(objective), n_points=int(n_points), huber_delta=delta,
                   theta=tuple(float(x) for x in theta))

    def predict(self, N, D):
        """Return the predicted loss E + A/N**alpha + B/D**beta (broadcasts N and D)."""
        N = np.asarray(N, dtype=float)
        D = np.asarray(D, dtype=float)
        return self.E + self.A / N**self.alpha + self.B / D**self.beta

    def to_dict(self) -> dict:
        """JSON-able dict of the fitted values (without the raw theta)."""
        d = asdict(self)
        d.pop("theta")
        return d


def _prepare(N, D, loss):
    N = positive_array(N, "N (parameters)")
    D = positive_array(D, "D (tokens)")
    L = loss_array(loss)
    n = same_length(N=N, D=D, loss=L)
    at_least(n, 6, "Approach-3 fit needs more points than its 5 parameters")
    if np.unique(N).size < 2:
        raise OneModelSize(f"all {n} points share one model size N={N[0]:.4g}; alpha and A cannot be fitted")
    if np.unique(D).size < 2:
        raise OneDataSize(f"all {n} points share one token count D={D[0]:.4g}; beta and B cannot be fitted")
    return np.log(N), np.log(D), np.log(L)


def _grid_search(log_n, log_d, log_l, delta, starts, n_newton, n_polish):
    """Rank all starts by their objective, Newton-optimise the best ``n_newton`` together,
    polish the best ``n_polish`` distinct end points; return (theta, objective)."""
    feats = _features(log_n, log_d)
    f0, _, _ = _batched_eval(starts, log_n, log_d, log_l, delta, None, feats, want_grad=False)
    # the start's own objective ranks starts well: on Chinchilla-like data most of the
    # grid reaches the global basin and the lowest-objective starts are among them
    chosen = starts[np.argsort(f0, kind="stable")[:n_newton]]
    res = batched_newton(chosen, log_n, log_d, log_l, delta, prune_factor=3.0, patience=15)
    order = np.argsort(res.f, kind="stable")
    picked, seen = [], []
    for i in order:
        t = res.theta[i]
        if not np.isfinite(res.f[i]) or any(np.allclose(t, s, rtol=1e-5, atol=1e-7) for s in seen):
            continue
        seen.append(t)
        picked.append(i)
        if len(picked) >= n_polish:
            break
    polished = [polish(res.theta[i], log_n, log_d, log_l, delta) for i in picked]
    best_theta, best_f = min(polished, key=lambda tf: tf[1])
    return best_theta, best_f


def fit_lnd(
    N,
    D,
    loss,
    delta: float = HUBER_DELTA,
    starts: np.ndarray | None = None,
    n_newton: int = 256,
    n_polish: int = 4,
) -> LNDFit:
    """Fit L(N, D) = E + A/N**alpha + B/D**beta by the Chinchilla/Epoch Approach-3 recipe.

    N, D, loss: 1-D sequences of equal length (the caller picks which parameter count is N).
    Returns the lowest-objective fit over all starts (default: the 4,500-start Chinchilla grid).
    Raises TooFewPoints (< 6 points), OneModelSize, OneDataSize, NonFiniteLoss, NonPositiveInput.
    """
    log_n, log_d, log_l = _prepare(N, D, loss)
    starts = chinchilla_grid() if starts is None else np.atleast_2d(np.asarray(starts, float))
    theta, f = _grid_search(log_n, log_d, log_l, delta, starts, n_newton, n_polish)
    return LNDFit.from_theta(theta, f, log_n.size, delta)


def scipy_loop_fit(N, D, loss, delta: float = HUBER_DELTA, starts: np.ndarray | None = None) -> LNDFit:
    """Reference fit: one scipy L-BFGS-B run (analytic gradient, default tolerances) per start.

    Slow (tens of seconds on the full grid); exists so tests and benchmarks can check the
    batched fit against the brute-force recipe.
    """
    log_n, log_d, log_l = _prepare(N, D, loss)
    starts = chinchilla_grid() if starts is None else np.atleast_2d(np.asarray(starts, float))
    best_theta, best_f = None, np.inf
    for s in starts:
        r = minimize(objective_and_grad, s, args=(log_n, log_d, log_l, delta), jac=True, method="L-BFGS-B")
        if np.isfinite(r.fun) and r.fun < best_f:
            best_theta, best_f = r.x, float(r.fun)
    return LNDFit.from_theta(best_theta, best_f, log_n.size, delta)


# ----------------------------------------------------------------------------- bootstrap

INTERVAL_PERCENTILES = (2.5, 10.0, 90.0, 97.5)
BOOTSTRAP_FIELDS = ("E", "A", "B", "alpha", "beta", "a", "b", "G")


@dataclass
class LNDBootstrap:
    """Bootstrap distribution of an Approach-3 fit: per-resample values and their percentiles."""

    samples: dict
    intervals: dict
    n_resamples: int
    n_failed: int

    def to_dict(self) -> dict:
        """JSON-able percentiles (samples are left out)."""
        return {"intervals": self.intervals, "n_resamples": self.n_resamples, "n_failed": self.n_failed}


def percentile_intervals(samples: dict, percentiles=INTERVAL_PERCENTILES) -> dict:
    """{name: {"p2.5": .., "p10": .., "p90": .., "p97.5": ..}} over the finite samples of each name."""
    out = {}
    for name, vals in samples.items():
        vals = np.asarray(vals, dtype=float)
        vals = vals[np.isfinite(vals)]
        out[name] = {f"p{p:g}": (float(np.percentile(vals, p)) if vals.size else float("nan")) for p in percentiles}
    return out


def bootstrap_lnd(
    N,
    D,
    loss,
    fit: LNDFit | None = None,
    n_resamples: int = 200,
    seed: int = 0,
    n_grid_seeds: int = 3,
    delta: float = HUBER_DELTA,
) -> LNDBootstrap:
    """Resample points with replacement ``n_resamples`` times and refit each resample.

    Documented shortcut: a resample is not refitted from all 4,500 grid starts. Its starts are
    the full-data best fit plus the ``n_grid_seeds`` grid starts with the lowest full-data
    objective; all resamples x starts are optimised in one batched Newton run (a resample is
    a vector of integer point weights), best objective per resample wins. A resample with a
    single model size or token count is skipped and counted in ``n_failed``.
    Returns percentiles (2.5, 10, 90, 97.5) of E, A, B, alpha, beta, a, b, G.
    """
    log_n, log_d, log_l = _prepare(N, D, loss)
    n = log_n.size
    fit = fit_lnd(N, D, loss, delta=delta) if fit is None else fit
    grid = chinchilla_grid()
    f0 = objective(grid, log_n, log_d, log_l, delta)
    seeds = np.vstack([np.asarray(fit.theta, float)[None, :], grid[np.argsort(f0, kind="stable")[:n_grid_seeds]]])
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(float)
    # a resample needs two model sizes and two token counts to identify the exponents
    ok = np.array([np.unique(log_n[c > 0]).size > 1 and np.unique(log_d[c > 0]).size > 1 for c in counts])
    counts = counts[ok]
    k = seeds.shape[0]
    theta0 = np.tile(seeds, (counts.shape[0], 1))
    weights = np.repeat(counts, k, axis=0)
    groups = np.repeat(np.arange(counts.shape[0]), k)
    res = batched_newton(theta0, log_n, log_d, log_l, delta, weights=weights, groups=groups, max_iter=300)
    f = res.f.reshape(-1, k)
    best = res.theta.reshape(-1, k, 5)[np.arange(f.shape[0]), np.argmin(f, axis=1)]
    fits = [LNDFit.from_theta(t, 0.0, n, delta) for t in best]
    samples = {name: np.array([getattr(x, name) for x in fits]) for name in BOOTSTRAP_FIELDS}
    return LNDBootstrap(samples=samples, intervals=percentile_intervals(samples),
                        n_resamples=n_resamples, n_failed=int((~ok).sum()))
