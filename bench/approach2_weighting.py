"""Benchmark: Approach 2 weighted by vertex uncertainty against the equal-weight regression.

Data: a known law L(N, D) = 1.8 + 400/N^0.34 + 2000/D^0.37 (a = 0.37/0.71 = 0.521) at six IsoFLOP
budgets 1e18..1e21; per budget and seed the model-size grid is off-centre (its centre a factor
exp(U(-1, 1)) from the true N_opt) and of uneven width (half-width U(0.7, 2.0) in ln N, 4 to 8 runs),
and every loss carries 0.5 % log-normal noise. Budgets without an interior minimum are left out
(as the report does). Over ``--seeds`` seeds it prints the bias (with its Monte Carlo standard
error) and spread of a for both regressions, the coverage of their 95 % intervals, and the same
with the windowed parabolas. The last line printed is one JSON object.

Run from the repo root: .venv/bin/python bench/approach2_weighting.py [--seeds 2000] (about 30 s)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root, in case it is not installed

from analysis.errors import FitError  # noqa: E402
from analysis.isoflop import fit_isoflop  # noqa: E402

E, A, B, ALPHA, BETA = 1.8, 400.0, 2000.0, 0.34, 0.37
A_TRUE = BETA / (ALPHA + BETA)
G_TRUE = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
BUDGETS = np.geomspace(1e18, 1e21, 6)


def grid_runs(rng, noise: float = 0.005):
    """(flops, params, loss) of one synthetic study with off-centre grids of uneven width."""
    C, N, L = [], [], []
    for c in BUDGETS:
        n_star = G_TRUE * (c / 6) ** A_TRUE
        centre = np.log(n_star) + rng.uniform(-1.0, 1.0)
        half = rng.uniform(0.7, 2.0)
        sizes = np.exp(np.linspace(centre - half, centre + half, int(rng.integers(4, 9))))
        d = c / (6 * sizes)
        C += [c] * sizes.size
        N += list(sizes)
        L += list((E + A / sizes**ALPHA + B / d**BETA) * np.exp(rng.normal(0, noise, sizes.size)))
    return np.array(C), np.array(N), np.array(L)


def simulate(seeds: int, window: float | None = None) -> dict:
    """Bias, spread and 95 % coverage of a, weighted and equal-weight, over ``seeds`` studies."""
    got = {"weighted": [], "equal": []}
    cover = {"weighted": [], "equal": []}
    skipped = 0
    for seed in range(seeds):
        C, N, L = grid_runs(np.random.default_rng(seed))
        try:
            fits = {"weighted": fit_isoflop(C, N, L, skip_refused=True, window=window),
                    "equal": fit_isoflop(C, N, L, skip_refused=True, weighted=False, window=window)}
        except FitError:  # fewer than 2 budgets with an interior minimum
            skipped += 1
            continue
        if fits["weighted"].n_budgets < 3:  # two vertices give no interval to measure coverage with
            skipped += 1
            continue
        for name, fit in fits.items():
            got[name].append(fit.a)
            iv = fit.intervals["a"]
            cover[name].append(iv["p2.5"] <= A_TRUE <= iv["p97.5"])
    out = {"studies": len(got["weighted"]), "skipped": skipped}
    for name in got:
        a = np.array(got[name])
        out[f"{name}_bias"] = round(float(a.mean() - A_TRUE), 4)
        out[f"{name}_bias_se"] = round(float(a.std(ddof=1) / np.sqrt(a.size)), 4)  # Monte Carlo error of the bias
        out[f"{name}_spread"] = round(float(a.std(ddof=1)), 4)
        out[f"{name}_rmse"] = round(float(np.sqrt(np.mean((a - A_TRUE) ** 2))), 4)
        out[f"{name}_coverage95"] = round(float(np.mean(cover[name])), 3)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2000)
    args = parser.parse_args(argv)
    full = simulate(args.seeds)
    windowed = simulate(args.seeds, window=4.0)
    print(f"a_true = {A_TRUE:.4f}; all runs: {full}")
    print(f"parabolas on the runs within 4x of each budget's best run: {windowed}")
    result = {"bench": "approach2_weighting", "a_true": round(A_TRUE, 4), "seeds": args.seeds,
              **{k: v for k, v in full.items()},
              **{f"window4_{k}": v for k, v in windowed.items()
                 if ("bias" in k or "spread" in k or "coverage" in k) and not k.endswith("_se")},
              "weighted_less_bias": abs(full["weighted_bias"]) < abs(full["equal_bias"]),
              "weighted_narrower": full["weighted_spread"] < full["equal_spread"]}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
