"""What to train at a compute budget: the compute-optimal N and D of a fitted L(N, D), and the
nearest available model of each family with the tokens the budget then buys.

Pure functions over a fitted law (anything with E, A, B, alpha, beta and ``predict``) and,
optionally, its bootstrap samples.
"""

from __future__ import annotations

import numpy as np

from analysis.allocation import allocation_from_fit, bootstrap_allocation
from analysis.errors import InputError

PERCENTILES = (2.5, 97.5)


def _band(values) -> dict:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return {f"p{p:g}": (float(np.percentile(v, p)) if v.size else None) for p in PERCENTILES}


def nearest_member(members: list[dict], n_opt: float, params_key: str) -> dict:
    """The member whose ``params_key`` count is nearest ``n_opt`` in log space (ties: the smaller)."""
    usable = [m for m in members if isinstance(m.get(params_key), (int, float)) and m[params_key] > 0]
    if not usable:
        raise InputError(f"no member has a positive {params_key!r} (each needs family, member, {params_key})")
    return min(usable, key=lambda m: (abs(np.log(m[params_key]) - np.log(n_opt)), m[params_key]))


def recommend_at_budget(fit, budget: float, members: list[dict] = (), params_key: str = "params_total",
                        samples: dict | None = None) -> dict:
    """Compute-optimal allocation of ``budget`` FLOPs under ``fit`` and the nearest member per family.

    Returns {"budget", "n_opt", "d_opt", "tokens_per_param", "loss", "intervals": {name: {p2.5,
    p97.5}} (from ``samples``, the bootstrap fits; empty without), "members": {family: {"member",
    "params", "tokens" = budget / (6 params), "tokens_per_param", "predicted_loss" (+ its band),
    "n_opt_ratio" = params / n_opt}}}. ``params_key`` names the member count that plays N (the
    same convention as the fit's N).
    """
    if not (np.isfinite(budget) and budget > 0):
        raise InputError(f"budget must be a positive number of FLOPs, got {budget!r}")
    al = allocation_from_fit(fit, float(budget))
    out = {"budget": float(budget), "n_opt": float(al.n_opt), "d_opt": float(al.d_opt),
           "tokens_per_param": float(al.tokens_per_param), "loss": float(al.loss_opt), "intervals": {},
           "members": {}}
    if samples is not None:
        bands = bootstrap_allocation(samples, [float(budget)])
        out["intervals"] = {("loss" if k == "loss_opt" else k): {p: float(v[0]) for p, v in band.items()}
                            for k, band in bands.items()}
    families = list(dict.fromkeys(str(m.get("family")) for m in members))
    for family in families:
        mine = [m for m in members if str(m.get("family")) == family]
        best = nearest_member(mine, al.n_opt, params_key)
        n = float(best[params_key])
        d = float(budget) / (6.0 * n)
        entry = {"member": best.get("member"), "params": n, "params_key": params_key, "tokens": d,
                 "tokens_per_param": d / n, "predicted_loss": float(fit.predict(n, d)), "n_opt_ratio": n / al.n_opt}
        if samples is not None:
            s = {k: np.asarray(samples[k], float) for k in ("E", "A", "B", "alpha", "beta")}
            with np.errstate(all="ignore"):
                losses = s["E"] + s["A"] / n ** s["alpha"] + s["B"] / d ** s["beta"]
            entry["predicted_loss_interval"] = _band(losses)
        out["members"][family] = entry
    return out
