"""Benchmark: Approach 2 weighted by vertex uncertainty against the equal-weight regression.

Two designs, each over ``--seeds`` synthetic studies with log-normal noise on every loss; budgets
without an interior minimum are left out (as the report does), and a study with fewer than three
budgets left is skipped (two vertices give no interval).

- random offsets: L(N, D) = 1.8 + 400/N^0.34 + 2000/D^0.37 (a = 0.37/0.71 = 0.521) at six budgets
  1e18..1e21; per budget the model-size grid is off-centre by a random factor exp(U(-1, 1)) from
  the true N_opt and of random half-width U(0.7, 2.0) in ln N (4 to 8 runs), 0.5 % noise. The
  offsets are independent of C, so the parabolas' vertex biases mostly average out of the slope.
- fixed ladder (the realistic case): Chinchilla's law L = 1.69 + 406.4/N^0.34 + 410.7/D^0.28
  (a = 0.28/0.62 = 0.452) at seven budgets 1e18..1e21, every budget trained on one ladder of eight
  model sizes 3e7..4e9 (as a model family fixes them) with 0 to 2 of its rungs skipped at random
  per budget (grids of uneven width), 0.75 % noise. N_opt moves across the fixed ladder from
  8e7 to 1.8e9, so the smallest budgets have their optimum near the small end of the grid and the
  largest near the big end: off-centre in a C-correlated way. A parabola in ln N fitted to the
  true (skewed) IsoFLOP profile pulls each vertex toward its grid's centre, so the equal-weight
  slope is biased low; the weights (each vertex's delta-method variance, taken at the regression
  line) count the off-centre vertices less.

For each design it prints the bias of a (with its Monte Carlo standard error), the mean paired
difference weighted - equal (with its standard error), the spread and rmse of a, and the coverage
of the 95 % intervals of both regressions; then the same with the windowed parabolas (``window=4``).
The last line printed is one JSON object.

Run from the repo root: .venv/bin/python bench/approach2_weighting.py [--seeds 2000] (about 1 min)
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

CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al. 2022, Approach 3
LADDER = np.geomspace(3e7, 4e9, 8)
LADDER_BUDGETS = np.geomspace(1e18, 1e21, 7)
LADDER_NOISE = 0.0075


def law_loss(sizes, c, E, A, B, alpha, beta):
    """L(N, D) with D = C / (6 N)."""
    return E + A / sizes**alpha + B / (c / (6 * sizes)) ** beta


def grid_runs(rng, noise: float = 0.005):
    """(flops, params, loss) of one synthetic study with off-centre grids of uneven width."""
    C, N, L = [], [], []
    for c in BUDGETS:
        n_star = G_TRUE * (c / 6) ** A_TRUE
        centre = np.log(n_star) + rng.uniform(-1.0, 1.0)
        half = rng.uniform(0.7, 2.0)
        sizes = np.exp(np.linspace(centre - half, centre + half, int(rng.integers(4, 9))))
        C += [c] * sizes.size
        N += list(sizes)
        L += list(law_loss(sizes, c, E, A, B, ALPHA, BETA) * np.exp(rng.normal(0, noise, sizes.size)))
    return np.array(C), np.array(N), np.array(L)


def ladder_runs(rng, noise: float = LADDER_NOISE, law: dict = CHINCHILLA):
    """(flops, params, loss) of one study on the fixed ladder, 0-2 rungs skipped per budget."""
    C, N, L = [], [], []
    for c in LADDER_BUDGETS:
        skip = rng.choice(LADDER.size, size=int(rng.integers(0, 3)), replace=False)
        sizes = np.delete(LADDER, skip)
        C += [c] * sizes.size
        N += list(sizes)
        L += list(law_loss(sizes, c, **law) * np.exp(rng.normal(0, noise, sizes.size)))
    return np.array(C), np.array(N), np.array(L)


DESIGNS = {"random_offsets": (grid_runs, A_TRUE),
           "fixed_ladder": (ladder_runs, CHINCHILLA["beta"] / (CHINCHILLA["alpha"] + CHINCHILLA["beta"]))}


def simulate(seeds: int, window: float | None = None, design: str = "random_offsets") -> dict:
    """Bias, spread and 95 % coverage of a, weighted and equal-weight, over ``seeds`` studies."""
    make, a_true = DESIGNS[design]
    got = {"weighted": [], "equal": []}
    cover = {"weighted": [], "equal": []}
    skipped = 0
    for seed in range(seeds):
        C, N, L = make(np.random.default_rng(seed))
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
            cover[name].append(iv["p2.5"] <= a_true <= iv["p97.5"])
    out = {"studies": len(got["weighted"]), "skipped": skipped}
    for name in got:
        a = np.array(got[name])
        out[f"{name}_bias"] = round(float(a.mean() - a_true), 4)
        out[f"{name}_bias_se"] = round(float(a.std(ddof=1) / np.sqrt(a.size)), 4)  # Monte Carlo error of the bias
        out[f"{name}_spread"] = round(float(a.std(ddof=1)), 4)
        out[f"{name}_rmse"] = round(float(np.sqrt(np.mean((a - a_true) ** 2))), 4)
        out[f"{name}_coverage95"] = round(float(np.mean(cover[name])), 3)
    diff = np.array(got["weighted"]) - np.array(got["equal"])  # same studies: the paired difference
    out["weighted_minus_equal"] = round(float(diff.mean()), 4)
    out["weighted_minus_equal_se"] = round(float(diff.std(ddof=1) / np.sqrt(diff.size)), 4)
    return out


def verdicts(res: dict) -> dict:
    """Less bias (|bias| smaller by more than two Monte Carlo standard errors of the paired
    difference) and a narrower spread."""
    less = (abs(res["weighted_bias"]) < abs(res["equal_bias"])
            and abs(abs(res["weighted_bias"]) - abs(res["equal_bias"])) > 2 * res["weighted_minus_equal_se"])
    return {"weighted_less_bias": bool(less), "weighted_narrower": res["weighted_spread"] < res["equal_spread"]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2000)
    args = parser.parse_args(argv)
    result = {"bench": "approach2_weighting", "seeds": args.seeds}
    for prefix, design in (("", "random_offsets"), ("fixed_ladder_", "fixed_ladder")):
        full = simulate(args.seeds, design=design)
        windowed = simulate(args.seeds, window=4.0, design=design)
        a_true = DESIGNS[design][1]
        print(f"{design}: a_true = {a_true:.4f}; all runs: {full}")
        print(f"{design}: parabolas on the runs within 4x of each budget's best run: {windowed}")
        result.update({f"{prefix}a_true": round(a_true, 4), **{f"{prefix}{k}": v for k, v in full.items()},
                       **{f"{prefix}window4_{k}": v for k, v in windowed.items()
                          if ("bias" in k or "spread" in k or "coverage" in k) and not k.endswith("_se")},
                       **{f"{prefix}{k}": v for k, v in verdicts(full).items()}})
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
