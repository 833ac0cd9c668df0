"""Which cells to train next: the expected shrinkage of a target's interval per GPU-hour.

The law is Approach 3 in its log-sum-exp form, log L = LSE(a - alpha log N, b - beta log D, e) with
theta = (a, b, e, alpha, beta) (``analysis.fit_lnd``). With residuals of standard deviation sigma on
log L, a design (cells (N_i, D_i)) carries the Fisher information F = sum_i J_i J_i^T / sigma^2,
J_i = d log L(N_i, D_i) / d theta; a target g(theta) then has the delta-method variance
V = c^T (F + P)^-1 c, c = dg/dtheta, P a weak prior precision that keeps V finite while the design
cannot pin every parameter down. Targets:

* ``a``: the allocation exponent beta / (alpha + beta) (N_opt ~ C^a);
* ``loss``: log L_opt(C), the compute-optimal loss at C FLOPs (C = 6 N D). By the envelope theorem
  its gradient is J at (N_opt(C), D_opt(C)): the allocation is a minimum, so moving it does not
  change L_opt to first order.

F depends on the unknown theta, so the criterion is averaged over the bootstrap fits, each a
plausible truth (a pseudo-Bayesian c-optimal design): a candidate's score is the mean over those
fits of log(V_before / V_after) divided by its GPU-hours. The log makes it the expected factor by
which the interval shrinks: a mean of absolute variance reductions would let the few wild resamples
of a small design (E driven to zero, A of 1e30) decide for all. Picks are greedy within the budget,
each pick's information added (a rank-one update) before the rest are scored again; a candidate
within half a grid step in log(D/N) of a cell of the same size already in the design is skipped, so
the design keeps D/N varied instead of piling up where the first fits look informative.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.errors import FitError
from analysis.fit_lnd import LNDFit

Z95 = 1.959963984540054
# weak prior precision on (a, b, e, alpha, beta): sd 10 on the log scales, 1 on the exponents
PRIOR_PRECISION = np.diag([1e-2, 1e-2, 1e-2, 1.0, 1.0])
TARGETS = ("a", "loss")
CRITERIA = ("log", "variance")  # mean log variance reduction (default), or mean variance reduction


def theta_of(E, A, B, alpha, beta) -> np.ndarray:
    """theta rows (log A, log B, log E, alpha, beta) from arrays of law parameters."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.column_stack([np.log(A), np.log(B), np.log(E), alpha, beta]).astype(float)


def jacobian(theta: np.ndarray, N, D) -> np.ndarray:
    """d log L(N, D) / d theta for each theta row and point: shape (S, n, 5)."""
    theta = np.atleast_2d(theta)
    u, v = np.log(np.asarray(N, float)), np.log(np.asarray(D, float))
    z = np.stack([theta[:, 0:1] - theta[:, 3:4] * u, theta[:, 1:2] - theta[:, 4:5] * v,
                  np.broadcast_to(theta[:, 2:3], (theta.shape[0], u.size))], axis=-1)
    w = np.exp(z - z.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    return np.stack([w[..., 0], w[..., 1], w[..., 2], -w[..., 0] * u, -w[..., 1] * v], axis=-1)


def optimum(theta: np.ndarray, flops: float) -> tuple[np.ndarray, np.ndarray]:
    """(N_opt, D_opt) of each theta row at ``flops`` with C = 6 N D (NaN where alpha or beta <= 0)."""
    theta = np.atleast_2d(theta)
    A, B, alpha, beta = np.exp(theta[:, 0]), np.exp(theta[:, 1]), theta[:, 3], theta[:, 4]
    with np.errstate(all="ignore"):
        s = alpha + beta
        G = (alpha * A / (beta * B)) ** (1.0 / s)
        n = G * (flops / 6.0) ** (beta / s)
        d = flops / 6.0 / n
    bad = ~((alpha > 0) & (beta > 0) & np.isfinite(n) & np.isfinite(d) & (n > 0) & (d > 0))
    n[bad], d[bad] = np.nan, np.nan
    return n, d


def target_value(theta: np.ndarray, target: str, flops: float | None = None) -> np.ndarray:
    """g(theta) per row: a = beta / (alpha + beta), or log L_opt(flops)."""
    theta = np.atleast_2d(theta)
    if target == "a":
        with np.errstate(all="ignore"):
            return theta[:, 4] / (theta[:, 3] + theta[:, 4])
    n, d = optimum(theta, flops)
    u, v = np.log(n), np.log(d)
    z = np.stack([theta[:, 0] - theta[:, 3] * u, theta[:, 1] - theta[:, 4] * v, theta[:, 2]], axis=-1)
    return np.logaddexp.reduce(z, axis=-1)


def target_gradient(theta: np.ndarray, target: str, flops: float | None = None) -> np.ndarray:
    """dg/dtheta per row, shape (S, 5); rows where g is undefined are NaN."""
    theta = np.atleast_2d(theta)
    if target == "a":
        al, be = theta[:, 3], theta[:, 4]
        with np.errstate(all="ignore"):
            s2 = (al + be) ** 2
            z = np.zeros_like(al)
            return np.column_stack([z, z, z, -be / s2, al / s2])
    n, d = optimum(theta, flops)
    out = np.full((theta.shape[0], 5), np.nan)
    ok = np.isfinite(n)
    for i in np.flatnonzero(ok):  # envelope theorem: the gradient of L at the optimum, allocation held
        out[i] = jacobian(theta[i], [n[i]], [d[i]])[0, 0]
    return out


def residual_sigma(fit: LNDFit, N, D, loss) -> float:
    """Standard deviation of the log-loss residuals, with n - 5 degrees of freedom (floor 1e-3)."""
    r = np.log(fit.predict(N, D)) - np.log(np.asarray(loss, float))
    dof = max(r.size - 5, 1)
    return float(max(np.sqrt((r @ r) / dof), 1e-3))


@dataclass
class Pick:
    """One chosen candidate: its index, cost, the target's interval expected after it, and why."""

    index: int
    gpu_hours: float
    shrink: float        # expected factor on the interval's width from this pick (geometric mean)
    width_after: float   # expected 95 % width after this pick and those before it
    why: str


@dataclass
class Proposal:
    """A greedy design: the picks in order and what they are expected to do to the target's interval."""

    target: str
    flops: float | None
    estimate: float            # g at the full-data fit (a, or L_opt in loss units)
    width_now: float           # expected 95 % delta-method width of the design before the picks
    picks: list = field(default_factory=list)
    spent: float = 0.0
    budget: float = 0.0
    sigma: float = float("nan")
    n_fits: int = 0            # bootstrap fits (and the full fit) the criterion averaged over
    skipped_close: int = 0     # candidates left out for lying within half a grid step of a cell

    @property
    def width_after(self) -> float:
        return self.picks[-1].width_after if self.picks else self.width_now


def _information(J: np.ndarray, sigma: float) -> np.ndarray:
    """(S, 5, 5) Fisher information of points with Jacobians J (S, n, 5), plus the prior."""
    return np.einsum("sni,snj->sij", J, J) / sigma**2 + PRIOR_PRECISION[None]


def _width(logv: np.ndarray, target: str, estimate: float, criterion: str = "log") -> float:
    """95 % width from the geometric-mean variance over the fits (the arithmetic mean under the
    ``variance`` criterion); for the loss, in loss units around the estimate."""
    sd = float(np.sqrt(np.exp(logv.mean()) if criterion == "log" else np.exp(logv).mean()))
    return 2 * Z95 * sd * (estimate if target == "loss" else 1.0)


class Greedy:
    """One group's design under the criterion: its candidates, the current (F + P)^-1 per fit, and
    what each candidate would do to the target's variance. ``gains()`` then ``take(k)``."""

    def __init__(self, fit: LNDFit, thetas: np.ndarray, design_N, design_D, cand_N, cand_D, cand_cost,
                 target: str = "a", flops: float | None = None, sigma: float = 0.01, min_gap: float = 0.0,
                 criterion: str = "log"):
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
        self.criterion = criterion
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        thetas = np.vstack([np.asarray(fit.theta, float)[None, :],
                            np.asarray(thetas, float).reshape(-1, 5)])
        c = target_gradient(thetas, target, flops)
        keep = np.isfinite(thetas).all(axis=1) & np.isfinite(c).all(axis=1)
        if not keep[0]:
            raise FitError(f"the full fit gives no {target} target (alpha={fit.alpha:.3g}, beta={fit.beta:.3g})")
        self.thetas, self.c, self.sigma, self.min_gap = thetas[keep], c[keep], float(sigma), float(min_gap)
        self.target, self.flops = target, flops
        self.N, self.D = np.asarray(cand_N, float), np.asarray(cand_D, float)
        self.cost = np.asarray(cand_cost, float)
        self.log_ratio = np.log(self.D / self.N)
        self.M = np.linalg.inv(_information(jacobian(self.thetas, design_N, design_D), self.sigma))
        self.J = jacobian(self.thetas, self.N, self.D)
        g = float(target_value(self.thetas[:1], target, flops)[0])
        self.estimate = float(np.exp(g)) if target == "loss" else g
        self.logv = np.log(np.einsum("si,sij,sj->s", self.c, self.M, self.c))
        self.width_now = self.width()
        self.taken_n = list(np.asarray(design_N, float))
        self.taken_r = list(np.log(np.asarray(design_D, float) / np.asarray(design_N, float)))
        close = _too_close(self.N, self.log_ratio, self.taken_n, self.taken_r, self.min_gap)
        self.skipped_close = int(close.sum())
        self.free = ~close
        self._cache = None

    def width(self) -> float:
        return _width(self.logv, self.target, self.estimate, self.criterion)

    def gains(self) -> np.ndarray:
        """Mean over the fits of log(V_now / V_after) for each candidate (-inf where not free)."""
        Mc = np.einsum("sij,sj->si", self.M, self.c)
        MJ = np.einsum("sij,skj->ski", self.M, self.J)
        q = np.einsum("ski,ski->sk", self.J, MJ)                       # j^T M j
        p = np.einsum("si,ski->sk", Mc, self.J)                        # c^T M j
        v = np.exp(self.logv)[:, None]
        # Sherman-Morrison: V_after = V - (c^T M j)^2 / (sigma^2 + j^T M j)
        v_after = np.maximum(v - p**2 / (self.sigma**2 + q), v * 1e-12)
        if self.criterion == "log":
            gain = np.log(v / v_after).mean(axis=0)
        else:  # the mean variance's relative reduction (the plain pseudo-Bayesian c-criterion)
            gain = (v - v_after).mean(axis=0) / v.mean()
        self._cache = (MJ, q, v_after)
        return np.where(self.free, gain, -np.inf)

    def take(self, k: int) -> Pick:
        """Add candidate k to the design (call right after ``gains()``); returns its Pick."""
        MJ, q, v_after = self._cache
        v = np.exp(self.logv)
        gain = float(np.log(v / v_after[:, k]).mean()) if self.criterion == "log" else \
            float(np.log(v.mean() / v_after[:, k].mean()))
        why = _why(self.N[k], self.log_ratio[k], self.taken_n, self.taken_r, self.J[:, k, :], self.c)
        MJk = MJ[:, k, :]
        self.M = self.M - np.einsum("si,sj->sij", MJk, MJk) / (self.sigma**2 + q[:, k])[:, None, None]
        self.logv = np.log(v_after[:, k])
        self.taken_n.append(self.N[k])
        self.taken_r.append(self.log_ratio[k])
        self.free[k] = False
        self.free &= ~_too_close(self.N, self.log_ratio, [self.N[k]], [self.log_ratio[k]], self.min_gap)
        self._cache = None
        return Pick(index=k, gpu_hours=float(self.cost[k]), shrink=float(np.exp(-0.5 * gain)),
                    width_after=self.width(), why=why)


def greedy(states: list, budget: float, max_picks: int | None = None) -> list[tuple[int, Pick]]:
    """Greedy picks across groups sharing ``budget`` GPU-hours: each step takes the (group,
    candidate) with the largest expected log variance reduction per GPU-hour that still fits.
    Returns [(group index, Pick)] in the order taken."""
    out, spent = [], 0.0
    while max_picks is None or len(out) < max_picks:
        best = (-np.inf, None, None)
        for i, st in enumerate(states):
            gain = st.gains()
            score = np.where(st.cost <= budget - spent + 1e-12, gain / st.cost, -np.inf)
            k = int(np.argmax(score))
            if score[k] > best[0] and gain[k] > 0:
                best = (score[k], i, k)
        if best[1] is None:
            break
        i, k = best[1], best[2]
        states[i].gains()  # refresh the cache of the group taken from
        pick = states[i].take(k)
        spent += pick.gpu_hours
        out.append((i, pick))
    return out


def propose(fit: LNDFit, thetas: np.ndarray, design_N, design_D, cand_N, cand_D, cand_cost, budget: float,
            target: str = "a", flops: float | None = None, sigma: float = 0.01, min_gap: float = 0.0,
            max_picks: int | None = None, criterion: str = "log") -> Proposal:
    """Greedy picks among one group's candidates (N, D, GPU-hours) within ``budget`` GPU-hours.

    ``thetas``: bootstrap fits as theta rows (``theta_of``); the full fit is added to them; rows
    with non-finite parameters or target are dropped. ``design_N/D``: cells already in the design
    (finished, or planned and counted as if finished). ``min_gap``: a candidate closer than this in
    log(D/N) to a design cell or pick of the same N is skipped. Each step takes the candidate
    with the largest mean log variance reduction per GPU-hour that still fits the budget.
    Raises FitError when the full fit gives no finite target gradient.
    """
    st = Greedy(fit, thetas, design_N, design_D, cand_N, cand_D, cand_cost, target, flops, sigma, min_gap,
                criterion)
    out = Proposal(target=target, flops=flops, estimate=st.estimate, width_now=st.width_now, budget=float(budget),
                   sigma=st.sigma, n_fits=int(st.thetas.shape[0]), skipped_close=st.skipped_close)
    for _, pick in greedy([st], budget, max_picks):
        out.picks.append(pick)
        out.spent += pick.gpu_hours
    return out


def _too_close(cand_N, log_ratio, taken_n, taken_r, gap) -> np.ndarray:
    """Candidates within ``gap`` in log(D/N) of a taken cell of the same N (relative 1e-6)."""
    out = np.zeros(cand_N.size, dtype=bool)
    for n, r in zip(taken_n, taken_r):
        same = np.abs(cand_N / n - 1.0) < 1e-6
        out |= same & (np.abs(log_ratio - r) < max(gap, 1e-9))
    return out


def _why(n, r, taken_n, taken_r, j, c) -> str:
    """A short reason: where the cell sits against the design, and which parameter it informs most."""
    taken_n, taken_r = np.asarray(taken_n), np.asarray(taken_r)
    parts = []
    if n > taken_n.max() * (1 + 1e-6):
        parts.append("largest N yet")
    elif n < taken_n.min() * (1 - 1e-6):
        parts.append("smallest N yet")
    same = np.abs(taken_n / n - 1) < 1e-6
    if same.any():
        if r > taken_r[same].max():
            parts.append("highest D/N of its size")
        elif r < taken_r[same].min():
            parts.append("lowest D/N of its size")
        else:
            parts.append("between D/N already run")
    else:
        parts.append("new size")
    if r > taken_r.max():
        parts.append("extends D/N up")
    elif r < taken_r.min():
        parts.append("extends D/N down")
    # the shares of E, A/N^alpha and B/D^beta in the predicted loss there (J's first three columns)
    w = np.abs(j[:, :3]).mean(axis=0)
    parts.append("loss shares E/N/D {:.0f}/{:.0f}/{:.0f}%".format(100 * w[2], 100 * w[0], 100 * w[1]))
    return ", ".join(parts)
