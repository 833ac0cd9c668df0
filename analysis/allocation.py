"""Compute-optimal allocation implied by L(N, D) = E + A/N**alpha + B/D**beta under C = 6ND.

Minimising L along C = 6ND gives (Hoffmann et al. 2022, eq. 4; exact for any alpha, beta):
    N_opt = G (C/6)**a,   D_opt = G**-1 (C/6)**b,
    a = beta/(alpha+beta), b = alpha/(alpha+beta), G = (alpha A / (beta B))**(1/(alpha+beta)).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from analysis._checks import positive_array
from analysis.errors import FitError


@dataclass(frozen=True)
class Allocation:
    """Compute-optimal N, D, loss and tokens-per-parameter at each budget (arrays or floats)."""

    flops: np.ndarray
    n_opt: np.ndarray
    d_opt: np.ndarray
    loss_opt: np.ndarray
    tokens_per_param: np.ndarray
    a: float
    b: float
    G: float

    def to_dict(self) -> dict:
        """JSON-able dict (arrays become lists)."""
        return {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}


def allocation_exponents(alpha: float, beta: float, A: float, B: float) -> tuple[float, float, float]:
    """Return (a, b, G). Raises FitError unless alpha, beta, A, B are all positive and finite."""
    vals = np.array([alpha, beta, A, B], dtype=float)
    if not (np.isfinite(vals).all() and (vals > 0).all()):
        raise FitError(f"allocation needs positive finite alpha, beta, A, B; got {vals.tolist()}")
    s = alpha + beta
    return beta / s, alpha / s, float((alpha * A / (beta * B)) ** (1.0 / s))


def optimal_allocation(flops, E: float, A: float, B: float, alpha: float, beta: float) -> Allocation:
    """Closed-form N_opt, D_opt (with 6 N_opt D_opt = C exactly) and predicted loss for each budget C."""
    C = positive_array(flops, "flops")
    a, b, G = allocation_exponents(alpha, beta, A, B)
    n = G * (C / 6.0) ** a
    d = (C / 6.0) ** b / G
    loss = E + A / n**alpha + B / d**beta
    scalar = np.ndim(flops) == 0
    pick = (lambda x: float(x[0])) if scalar else (lambda x: x)
    return Allocation(flops=pick(C), n_opt=pick(n), d_opt=pick(d), loss_opt=pick(loss),
                      tokens_per_param=pick(d / n), a=a, b=b, G=G)


def allocation_from_fit(fit, flops) -> Allocation:
    """``optimal_allocation`` for an object with E, A, B, alpha, beta attributes (e.g. LNDFit)."""
    return optimal_allocation(flops, fit.E, fit.A, fit.B, fit.alpha, fit.beta)


def compute_for_model(n_params, E: float, A: float, B: float, alpha: float, beta: float):
    """Inverse of the allocation: the budget C at which ``n_params`` is compute-optimal."""
    N = positive_array(n_params, "n_params")
    a, _, G = allocation_exponents(alpha, beta, A, B)
    C = 6.0 * (N / G) ** (1.0 / a)
    return float(C[0]) if np.ndim(n_params) == 0 else C


def bootstrap_allocation(samples: dict, flops, percentiles=(2.5, 97.5)) -> dict:
    """Percentile bands of N_opt, D_opt, tokens/param and loss at each budget over bootstrap fits.

    ``samples`` holds per-resample arrays E, A, B, alpha, beta, a, b, G (``LNDBootstrap.samples``);
    each resample's own closed-form allocation is evaluated and non-finite resamples are skipped.
    Returns {"n_opt"|"d_opt"|"tokens_per_param"|"loss_opt": {"p2.5": array, "p97.5": array}}
    (arrays over ``flops``; NaN where no resample is finite).
    """
    C = positive_array(flops, "flops")[None, :]
    col = {k: np.asarray(samples[k], dtype=float)[:, None] for k in ("E", "A", "B", "alpha", "beta", "a", "b", "G")}
    with np.errstate(all="ignore"):  # a degenerate resample gives inf/NaN and is skipped below
        n = col["G"] * (C / 6.0) ** col["a"]
        d = (C / 6.0) ** col["b"] / col["G"]
        loss = col["E"] + col["A"] / n ** col["alpha"] + col["B"] / d ** col["beta"]
        values = {"n_opt": n, "d_opt": d, "tokens_per_param": d / n, "loss_opt": loss}
    out = {}
    for name, arr in values.items():
        arr = np.where(np.isfinite(arr) & (arr > 0), arr, np.nan)
        ok = np.isfinite(arr).any(axis=0)
        out[name] = {f"p{p:g}": np.where(ok, np.nanpercentile(np.where(ok[None, :], arr, 0.0), p, axis=0), np.nan)
                     for p in percentiles}
    return out
