"""Benchmark: which weights for Approach 2's vertex regression, on the fixed-ladder design.

The studies are those of ``bench/approach2_weighting.py``'s fixed ladder (Chinchilla's law, one
ladder of eight sizes 3e7..4e9 for seven budgets 1e18..1e21, 0-2 rungs skipped per budget). Each
study's vertices are regressed on ln C with these weights (1/variance):

- ``equal``: ordinary least squares;
- ``line`` (the estimator, ``analysis.isoflop``): the delta-method variance with sigma^2 pooled over
  the budgets, evaluated where the regression line puts each vertex (three reweighting passes);
- ``own``: the same variance evaluated at each budget's own vertex;
- ``lof_line``: sigma^2 replaced by each budget's own residual variance rss/dof (the parabola's misfit,
  which an off-centre vertex on a non-parabolic profile shows), at the line;
- ``lofmax_line``: the larger of the budget's own and the pooled residual variance, at the line;
- ``lofshrunk_line``: the budget's own residual variance shrunk toward the pooled one (3 pseudo-dof).

Intervals as the estimator makes them (pooled dof, or inflated by the vertices' scatter with t(m-2)).
At 0.75 % noise and at negligible noise (1e-5, where only the parabolas' misfit remains) it prints the
bias, spread and 95 % coverage of a per variant. The last line printed is one JSON object.

Run from the repo root: .venv/bin/python bench/approach2_weight_variants.py [--seeds 1000] (about 1 min)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root, in case it is not installed
sys.path.insert(0, str(Path(__file__).resolve().parent))

from analysis.errors import FitError  # noqa: E402
from analysis.isoflop import IRLS_STEPS, fit_isoflop, group_budgets, isoflop_vertex  # noqa: E402
from approach2_weighting import DESIGNS, ladder_runs  # noqa: E402

A_TRUE = DESIGNS["fixed_ladder"][1]
VARIANTS = ("equal", "line", "own", "lof_line", "lofmax_line", "lofshrunk_line")


def _wls(x, y, var, dof_pool, known=True):
    (a, _), cov = np.polyfit(x, y, 1, w=1 / np.sqrt(var), cov="unscaled")
    m = x.size
    chi2 = float(np.sum((y - np.polyval(np.polyfit(x, y, 1, w=1 / np.sqrt(var)), x)) ** 2 / var))
    if known and dof_pool > 0 and not chi2 > m - 2:
        scale, q = 1.0, stats.t.ppf(0.975, dof_pool)
    else:
        scale, q = chi2 / (m - 2), stats.t.ppf(0.975, m - 2)
    return float(a), float(np.sqrt(cov[0, 0] * scale)), float(q)


def variant_fits(profiles) -> dict:
    """a, its standard error and t quantile under each weighting."""
    x = np.log([p.flops for p in profiles])
    y = np.log([p.n_opt for p in profiles])
    dof_pool = sum(p.dof for p in profiles)
    s2 = sum(p.rss for p in profiles) / dof_pool
    dof = np.array([p.dof for p in profiles], float)
    own_s2 = np.array([p.rss / p.dof if p.dof > 0 else s2 for p in profiles])
    u_own = np.array([p.vertex_var_unscaled for p in profiles])

    def at_line(scale):
        u = u_own
        for _ in range(IRLS_STEPS):
            a0, b0 = np.polyfit(x, y, 1, w=1 / np.sqrt(scale * u))
            u = np.array([p.var_unscaled_at(b0 + a0 * xi) for p, xi in zip(profiles, x)])
        return u

    a, b = np.polyfit(x, y, 1)
    m = x.size
    se = np.sqrt(np.sum((y - b - a * x) ** 2) / (m - 2) / np.sum((x - x.mean()) ** 2))
    out = {"equal": (float(a), float(se), float(stats.t.ppf(0.975, m - 2)))}
    out["line"] = _wls(x, y, s2 * at_line(np.ones(m)), dof_pool)
    out["own"] = _wls(x, y, s2 * u_own, dof_pool)
    for name, scale in (("lof_line", own_s2), ("lofmax_line", np.maximum(own_s2, s2)),
                        ("lofshrunk_line", (dof * own_s2 + 3 * s2) / (dof + 3))):
        out[name] = _wls(x, y, scale * at_line(scale), dof_pool)
    return out


def simulate(seeds: int, noise: float) -> dict:
    got = {v: [] for v in VARIANTS}
    cover = {v: [] for v in VARIANTS}
    for seed in range(seeds):
        C, N, L = ladder_runs(np.random.default_rng(seed), noise=noise)
        labels = group_budgets(C)
        profiles = []
        for g in range(labels.max() + 1):
            idx = labels == g
            try:
                profiles.append(isoflop_vertex(N[idx], L[idx], float(np.exp(np.log(C[idx]).mean()))))
            except FitError:
                pass
        if len(profiles) < 3 or sum(p.dof for p in profiles) == 0:
            continue
        fits = variant_fits(profiles)
        if seed < 20:  # the ``line`` variant is the estimator itself
            assert abs(fits["line"][0] - fit_isoflop(C, N, L, skip_refused=True).a) < 1e-9
        for v, (a, se, q) in fits.items():
            got[v].append(a)
            cover[v].append(abs(a - A_TRUE) <= q * se)
    out = {"studies": len(got["equal"])}
    for v in VARIANTS:
        a = np.array(got[v])
        out[f"{v}_bias"] = round(float(a.mean() - A_TRUE), 4)
        out[f"{v}_bias_se"] = round(float(a.std(ddof=1) / np.sqrt(a.size)), 4)
        out[f"{v}_spread"] = round(float(a.std(ddof=1)), 4)
        out[f"{v}_coverage95"] = round(float(np.mean(cover[v])), 3)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000)
    args = parser.parse_args(argv)
    result = {"bench": "approach2_weight_variants", "a_true": round(A_TRUE, 4), "seeds": args.seeds}
    for prefix, noise in (("", 0.0075), ("noisefree_", 1e-5)):
        res = simulate(args.seeds if noise > 1e-4 else min(args.seeds, 200), noise)
        print(f"noise {noise:g}: {res}")
        result.update({f"{prefix}{k}": v for k, v in res.items()})
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
