"""Approach 1: the minimum-loss envelope over training curves, then N_opt = k C**a.

Each run contributes its training curve (FLOPs so far, loss). At log-spaced FLOP values the
envelope is the lowest loss any run reaches there (curves interpolated linearly in log FLOPs,
never extrapolated); the model size of that run is N_opt(C). A power law fitted to those
(C, N_opt) pairs in log space gives a; D_opt = C / (6 N_opt) gives b = 1 - a
(Hoffmann et al. 2022, Approach 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis._checks import at_least, loss_array, positive_array
from analysis.errors import OneModelSize


@dataclass(frozen=True)
class Curve:
    """One run's training curve: model size and cumulative (flops, loss) pairs."""

    run: str
    params: float
    flops: np.ndarray
    loss: np.ndarray


def as_curves(curves) -> list[Curve]:
    """Accept Curve objects, dicts with keys run/params/flops/loss, or {run: (params, flops, loss)}."""
    if isinstance(curves, dict):
        curves = [Curve(str(k), *v) if not isinstance(v, Curve) else v for k, v in curves.items()]
    out = []
    for c in curves:
        if isinstance(c, dict):
            c = Curve(str(c.get("run", len(out))), c["params"], c["flops"], c["loss"])
        flops = positive_array(c.flops, f"flops of run {c.run}")
        loss = loss_array(c.loss, f"loss of run {c.run}")
        if flops.size != loss.size:
            raise ValueError(f"run {c.run}: {flops.size} flops values but {loss.size} losses")
        order = np.argsort(flops)
        out.append(Curve(c.run, float(positive_array([c.params], f"params of run {c.run}")[0]),
                         flops[order], loss[order]))
    return out


@dataclass
class Envelope:
    """The envelope on a FLOP grid: best loss, its run's size and the run's name at each C."""

    flops: np.ndarray
    loss: np.ndarray
    params: np.ndarray
    runs: list


def loss_envelope(curves, n_grid: int = 200) -> Envelope:
    """Minimum loss over runs at ``n_grid`` log-spaced FLOP values spanning all curves.

    Grid points no curve covers are dropped (no extrapolation).
    """
    cs = as_curves(curves)
    at_least(len(cs), 2, "an envelope needs training curves")
    lo = min(c.flops[0] for c in cs)
    hi = max(c.flops[-1] for c in cs)
    grid = np.exp(np.linspace(np.log(lo), np.log(hi), n_grid))
    lg = np.log(grid)
    table = np.full((len(cs), grid.size), np.inf)
    for i, c in enumerate(cs):
        if c.flops.size < 2:
            continue
        lf = np.log(c.flops)
        inside = (lg >= lf[0]) & (lg <= lf[-1])
        table[i, inside] = np.interp(lg[inside], lf, c.loss)
    covered = np.isfinite(table).any(axis=0)
    best = np.argmin(table[:, covered], axis=0)
    return Envelope(flops=grid[covered], loss=table[best, np.flatnonzero(covered)],
                    params=np.array([cs[i].params for i in best]), runs=[cs[i].run for i in best])


@dataclass
class EnvelopeFit:
    """N_opt = k C**a and D_opt = k_d C**b fitted to the envelope."""

    a: float
    k: float
    b: float
    k_d: float
    envelope: Envelope = field(repr=False)
    n_sizes: int = 0

    def n_opt(self, flops):
        """Compute-optimal parameter count at each budget."""
        return self.k * np.asarray(flops, dtype=float) ** self.a

    def to_dict(self) -> dict:
        """JSON-able summary (without the envelope arrays)."""
        return {"a": self.a, "k": self.k, "b": self.b, "k_d": self.k_d, "n_sizes": self.n_sizes,
                "n_grid": int(self.envelope.flops.size)}


def fit_envelope(curves, n_grid: int = 200, flops_min: float | None = None,
                 flops_max: float | None = None) -> EnvelopeFit:
    """Approach 1: fit log N_opt = log k + a log C over the envelope's grid points.

    ``flops_min``/``flops_max`` restrict the fit to budgets where the sampled model sizes
    bracket the optimum (near the ends of the FLOP range the smallest or largest run wins
    only because nothing else reaches there, which flattens the slope).
    Raises OneModelSize when one model size wins the whole envelope (the slope is then
    undetermined), TooFewPoints for fewer than two curves.
    """
    env = loss_envelope(curves, n_grid)
    keep = np.ones(env.flops.size, dtype=bool)
    if flops_min is not None:
        keep &= env.flops >= flops_min
    if flops_max is not None:
        keep &= env.flops <= flops_max
    at_least(int(keep.sum()), 2, "envelope grid points inside the FLOP range")
    env = Envelope(flops=env.flops[keep], loss=env.loss[keep], params=env.params[keep],
                   runs=[r for r, k in zip(env.runs, keep) if k])
    sizes = np.unique(env.params)
    if sizes.size < 2:
        raise OneModelSize(
            f"model size {sizes[0]:.4g} is best at every FLOP value; the envelope cannot give N_opt(C)"
        )
    a, logk = np.polyfit(np.log(env.flops), np.log(env.params), 1)
    k = float(np.exp(logk))
    return EnvelopeFit(a=float(a), k=k, b=1.0 - float(a), k_d=1.0 / (6.0 * k), envelope=env, n_sizes=int(sizes.size))
