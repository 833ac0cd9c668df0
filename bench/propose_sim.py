"""Does `propose` reach the full grid's interval for less compute? Simulated studies on known laws.

Each study: a family of 10 model sizes (20M-4B parameters), an IsoFLOP full grid (7 budgets 1e18-3e20,
tokens per parameter kept within [1, 500]: 37 cells), losses drawn from a known L(N, D) with 1 % log-normal
noise (sigma = 0.01 on log L: the seed-to-seed and tuning scatter of small LM runs, order of
magnitude; --noise to change). Starting from the full grid's two smallest budgets (the seed design),
three strategies add cells round by round from the same candidates (each size at 12 tokens-per-
parameter values log-spaced in [1, 500], up to the full grid's largest budget), refit and stop when the
95 % bootstrap width of the target is at most the full grid's at two fits in a row (one lucky bootstrap
does not count; the compute recorded is the first of the two). The full grid's width is the median over
7 noise draws of its own bootstrap width (same noise, same fitting budget): one draw's width varies
about 2x from draw to draw, and a strategy is held to the typical full grid, not a lucky one:

* propose: analysis.propose, greedy within the round's GPU-hours, for the target being measured;
* random: candidates in a random order;
* cheapest: candidates by cost.

A round adds max(20 % of the compute spent so far, 2 % of the full grid's) (--step); the compute
recorded is that at the end of a round, so it can be up to one round late. A strategy that has not
reached the width at 2x the full grid's compute is recorded as 2.0 (censored, counted in `censored`).
A narrow interval can be wrong: `covering_ratio` also asks both intervals to cover the true value,
`error_at_reach` is the estimate's error where each strategy stopped, beside the full grid's own
(`full_grid_error`, `full_grid_coverage` over its 7 draws). Targets: the allocation exponent a, and
the compute-optimal loss at 10x the largest budget. Cost: 6 N D (the ratio does not depend on the GPU).

Fitting budget (cheaper than `report`'s, stated): Approach 3 from the previous fit plus the 32
lowest-objective Chinchilla grid starts (not 256), 2 polished end points (not 4), 60 bootstrap
resamples (not 200) each started from the fit and 2 grid starts (not 3); the full grid's reference
uses the same budget. The criterion averages over
at most 40 of the bootstrap fits.

Prints one JSON line: compute_ratio (propose, target a, mean over laws x seeds), its spread, the
same for random and cheapest-first, the loss target's ratios, and the checks above. About 2-3 minutes
on two cores with the defaults (3 seeds per law).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.allocation import optimal_allocation  # noqa: E402
from analysis.fit_lnd import bootstrap_lnd, chinchilla_grid, fit_lnd, objective  # noqa: E402
from analysis.propose import propose, residual_sigma, theta_of  # noqa: E402

LAWS = {  # (E, A, B, alpha, beta)
    "chinchilla": (1.69, 406.4, 410.7, 0.34, 0.28),        # Hoffmann et al. 2022, alpha != beta
    "equal": (1.80, 600.0, 1200.0, 0.30, 0.30),            # alpha = beta
}
SIZES = np.geomspace(2e7, 4e9, 10)
BUDGETS = np.geomspace(1e18, 3e20, 7)
RATIO_LIMITS = (1.0, 500.0)
K_CANDIDATES = 12
CAP = 2.0
N_BOOT = 60
N_CRITERION = 40
CRITERION = {"a": "log", "loss": "log"}
STEP = [0.2, 0.02]  # a round adds max(STEP[0] x the compute spent, STEP[1] x the full grid's)


def true_loss(law, N, D):
    E, A, B, al, be = law
    return E + A / N**al + B / D**be


def full_grid():
    cells = [(n, c / (6 * n)) for c in BUDGETS for n in SIZES]
    return [(n, d) for n, d in cells if RATIO_LIMITS[0] <= d / n <= RATIO_LIMITS[1]]


def candidates():
    """Each size at K tokens-per-parameter values, within the full grid's compute range."""
    r = np.geomspace(*RATIO_LIMITS, K_CANDIDATES)
    cells = np.array([(n, x * n) for n in SIZES for x in r])
    return cells[6 * cells[:, 0] * cells[:, 1] <= BUDGETS.max() * 1.001]


class Fitter:
    """Approach 3 with warm starts and a small bootstrap; widths of a and of L_opt(C_target)."""

    def __init__(self, seed: int):
        self.prev = None
        self.grid = chinchilla_grid()
        self.seed = seed

    def __call__(self, N, D, L, c_target):
        lN, lD, lL = np.log(N), np.log(D), np.log(L)
        best = self.grid[np.argsort(objective(self.grid, lN, lD, lL), kind="stable")[:32]]
        starts = best if self.prev is None else np.vstack([self.prev[None, :], best])
        fit = fit_lnd(N, D, L, starts=starts, n_newton=starts.shape[0], n_polish=2)
        self.prev = np.asarray(fit.theta)
        boot = bootstrap_lnd(N, D, L, fit=fit, n_resamples=N_BOOT, seed=self.seed, n_grid_seeds=2)
        s = boot.samples
        thetas = theta_of(s["E"], s["A"], s["B"], s["alpha"], s["beta"])
        ok = np.isfinite(thetas).all(axis=1)
        a = s["a"][np.isfinite(s["a"])]
        with np.errstate(all="ignore"):
            G = s["G"]
            n_opt = G * (c_target / 6) ** s["a"]
            d_opt = c_target / 6 / n_opt
            lopt = s["E"] + s["A"] / n_opt ** s["alpha"] + s["B"] / d_opt ** s["beta"]
        lopt = lopt[np.isfinite(lopt)]
        width = {"a": _width(a), "loss": _width(lopt)}
        interval = {"a": _interval(a), "loss": _interval(lopt)}
        return fit, thetas[ok], width, interval


def _interval(x):
    return (float(np.percentile(x, 2.5)), float(np.percentile(x, 97.5))) if x.size > 10 else (-np.inf, np.inf)


def _width(x):
    return float(np.percentile(x, 97.5) - np.percentile(x, 2.5)) if x.size > 10 else float("inf")


def cost_of(N, D):
    return 6.0 * np.asarray(N) * np.asarray(D)


def run_strategy(strategy, target, law, seed_cells, ref_width, full_cost, c_target, rng, noise, fitter_seed,
                 targets=("a", "loss")):
    """Compute (as a fraction of the full grid's) at which each target's width reaches the reference."""
    cand = candidates()
    taken = np.zeros(len(cand), dtype=bool)
    N = np.array([c[0] for c in seed_cells])
    D = np.array([c[1] for c in seed_cells])
    L = true_loss(law, N, D) * np.exp(noise * rng.standard_normal(N.size))
    spent = float(cost_of(N, D).sum())
    fitter = Fitter(fitter_seed)
    order = rng.permutation(len(cand)) if strategy == "random" else np.argsort(cost_of(cand[:, 0], cand[:, 1]))
    reached, errors, covered, cells = {}, {}, {}, {}
    last = {t: None for t in targets}       # (spent, error, covers) of the previous fit when it was narrow enough
    truth = _truth(law, c_target)
    log_gap = 0.5 * np.log(RATIO_LIMITS[1] / RATIO_LIMITS[0]) / (K_CANDIDATES - 1)
    while True:
        fit, thetas, width, interval = fitter(N, D, L, c_target)
        for t in targets:
            lo, hi = interval[t]
            now = (spent / full_cost, _error(fit, law, t, c_target), lo <= truth[t] <= hi, N.size)
            if width[t] > ref_width[t]:
                last[t] = None
                continue
            # reached: narrow enough at two fits in a row (one lucky bootstrap does not count);
            # the compute is the first of the two
            if last[t] is not None and t not in reached:
                reached[t], errors[t], cells[t] = last[t][0], last[t][1], last[t][3]
            if last[t] is not None and t not in covered and last[t][2] and now[2]:
                covered[t] = last[t][0]
            last[t] = now if last[t] is None else last[t]
        if len(covered) == len(targets) or spent >= CAP * full_cost or taken.all():
            break
        step = max(STEP[0] * spent, STEP[1] * full_cost)
        free = np.flatnonzero(~taken)
        if strategy == "propose":
            costs = cost_of(cand[free, 0], cand[free, 1])
            sigma = residual_sigma(fit, N, D, L)
            picks = []
            budget = step
            while not picks:
                prop = propose(fit, thetas[:N_CRITERION], N, D, cand[free, 0], cand[free, 1], costs, budget,
                               target=target, flops=c_target, sigma=sigma, min_gap=log_gap,
                               criterion=CRITERION[target])
                picks = [free[p.index] for p in prop.picks]
                budget *= 2
                if budget > 100 * full_cost:
                    break
            if not picks:
                break
        else:
            picks, s = [], 0.0
            for i in order:
                if taken[i]:
                    continue
                picks.append(i)
                s += cost_of(*cand[i])
                if s >= step:
                    break
        picks = np.array(picks)
        taken[picks] = True
        n_new, d_new = cand[picks, 0], cand[picks, 1]
        N, D = np.concatenate([N, n_new]), np.concatenate([D, d_new])
        L = np.concatenate([L, true_loss(law, n_new, d_new) * np.exp(noise * rng.standard_normal(n_new.size))])
        spent += float(cost_of(n_new, d_new).sum())
    errors = {t: (errors[t], cells[t]) for t in errors}
    return {t: reached.get(t, CAP) for t in targets}, errors, {t: covered.get(t, CAP) for t in targets}


def _truth(law, c_target):
    E, A, B, al, be = law
    return {"a": be / (al + be), "loss": optimal_allocation(c_target, E, A, B, al, be).loss_opt}


def _error(fit, law, target, c_target):
    """|estimate - truth| of the point fit: a, or the relative error of L_opt(c_target)."""
    E, A, B, al, be = law
    if target == "a":
        return abs(fit.a - be / (al + be))
    true = optimal_allocation(c_target, E, A, B, al, be).loss_opt
    got = optimal_allocation(c_target, fit.E, fit.A, fit.B, fit.alpha, fit.beta).loss_opt
    return abs(got / true - 1)


_REF = {}
N_REF = 7


def reference_width(law_name, noise):
    """The full grid's 95 % width on each target: the median over N_REF noise draws (one draw's
    bootstrap width varies by 2x between draws; a strategy is held to the typical full grid), with
    the full grid's mean error and how often its interval covered the truth."""
    if law_name in _REF:
        return _REF[law_name]
    law = LAWS[law_name]
    grid = np.array(full_grid())
    N, D = grid[:, 0], grid[:, 1]
    c_target = 10 * BUDGETS.max()
    truth = _truth(law, c_target)
    widths, errors, covers = {"a": [], "loss": []}, {"a": [], "loss": []}, {"a": [], "loss": []}
    for r in range(N_REF):
        rng = np.random.default_rng(10_000 + r + (0 if law_name == "chinchilla" else 500))
        L = true_loss(law, N, D) * np.exp(noise * rng.standard_normal(N.size))
        fit, _, width, interval = Fitter(r)(N, D, L, c_target)
        for t in widths:
            widths[t].append(width[t])
            errors[t].append(_error(fit, law, t, c_target))
            covers[t].append(interval[t][0] <= truth[t] <= interval[t][1])
    _REF[law_name] = {t: float(np.median(widths[t])) for t in widths}
    FULL_STATS[law_name] = {"widths": widths, "error": {t: float(np.mean(errors[t])) for t in errors},
                            "coverage": {t: float(np.mean(covers[t])) for t in covers}}
    return _REF[law_name]


FULL_STATS = {}


def one_study(law_name, seed, noise, targets=("a", "loss"), baselines=True):
    law = LAWS[law_name]
    rng = np.random.default_rng(1000 * seed + (0 if law_name == "chinchilla" else 1))
    grid = full_grid()
    N = np.array([c[0] for c in grid])
    D = np.array([c[1] for c in grid])
    full_cost = float(cost_of(N, D).sum())
    c_target = 10 * BUDGETS.max()
    ref = reference_width(law_name, noise)
    small = BUDGETS[:2]
    seed_cells = [(n, d) for n, d in grid if 6 * n * d <= small[-1] * 1.001]
    out = {"law": law_name, "seed": seed, "full_cells": len(grid), "seed_cells": len(seed_cells),
           "seed_fraction": float(cost_of(*np.array(seed_cells).T).sum() / full_cost), "ref_width": ref}
    streams = dict(zip(("a", "loss", "random", "cheapest"), rng.integers(1 << 31, size=4)))
    for t in targets:
        r, err, cov = run_strategy("propose", t, law, seed_cells, ref, full_cost, c_target,
                                   np.random.default_rng(streams[t]), noise, seed, targets=(t,))
        out[f"propose_{t}"], out[f"propose_{t}_covering"] = r[t], cov[t]
        out[f"propose_{t}_error"], out[f"propose_{t}_cells"] = err.get(t, (None, None))
    for strategy in ("random", "cheapest") if baselines else ():
        r, err, cov = run_strategy(strategy, None, law, seed_cells, ref, full_cost, c_target,
                                   np.random.default_rng(streams[strategy]), noise, seed)
        out[f"{strategy}_a"], out[f"{strategy}_loss"] = r["a"], r["loss"]
        out[f"{strategy}_a_covering"], out[f"{strategy}_loss_covering"] = cov["a"], cov["loss"]
        for t in ("a", "loss"):
            out[f"{strategy}_{t}_error"], out[f"{strategy}_{t}_cells"] = err.get(t, (None, None))
    return out


def summary(rows, key):
    x = np.array([r[key] for r in rows])
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
            "min": float(x.min()), "max": float(x.max()), "censored": int((x >= CAP).sum())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--noise", type=float, default=0.01, help="sd of log loss (default 0.01)")
    ap.add_argument("--laws", nargs="+", default=list(LAWS))
    ap.add_argument("--criterion", choices=["log", "variance"], help="criterion for both targets (default log)")
    ap.add_argument("--targets", nargs="+", default=["a", "loss"], help="targets `propose` is run for")
    ap.add_argument("--no-baselines", action="store_true", help="skip random and cheapest-first")
    ap.add_argument("--step", type=float, nargs=2, default=STEP, help="round size (default 0.2 0.02)")
    args = ap.parse_args()
    STEP[:] = args.step
    if args.criterion:
        CRITERION.update(a=args.criterion, loss=args.criterion)
    t0 = time.time()
    rows = []
    for law in args.laws:
        for seed in range(args.seeds):
            r = one_study(law, seed, args.noise, args.targets, not args.no_baselines)
            rows.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    keys = [f"{st}_{t}" for t in ("a", "loss") for st in ("propose", "random", "cheapest")]
    s = {k: summary(rows, k) for k in keys if k in rows[0]}
    cov = {k: summary(rows, k + "_covering")["mean"] for k in keys if k + "_covering" in rows[0]}
    err = {k: float(np.nanmean([r[k + "_error"] if r.get(k + "_error") is not None else np.nan for r in rows]))
           for k in keys if k + "_error" in rows[0]}
    n_cells = {k: float(np.nanmean([r[k + "_cells"] if r.get(k + "_cells") is not None else np.nan for r in rows]))
               for k in keys if k + "_cells" in rows[0]}
    if len(s) < 6:  # an experiment (--targets / --no-baselines)
        print(json.dumps({"bench": "propose_sim", "partial": True, "criterion": CRITERION,
                          "ratios": s, "covering": cov, "error_at_reach": err}))
        return
    print(json.dumps({
        "bench": "propose_sim", "laws": args.laws, "seeds": args.seeds, "noise": args.noise, "cap": CAP,
        "criterion": CRITERION,
        "compute_ratio": s["propose_a"]["mean"], "compute_ratio_std": s["propose_a"]["std"],
        "compute_ratio_range": [s["propose_a"]["min"], s["propose_a"]["max"]],
        "random_ratio": s["random_a"]["mean"], "random_ratio_std": s["random_a"]["std"],
        "cheapest_ratio": s["cheapest_a"]["mean"], "cheapest_ratio_std": s["cheapest_a"]["std"],
        "loss_compute_ratio": s["propose_loss"]["mean"], "loss_compute_ratio_std": s["propose_loss"]["std"],
        "loss_random_ratio": s["random_loss"]["mean"], "loss_cheapest_ratio": s["cheapest_loss"]["mean"],
        "censored": {k: v["censored"] for k, v in s.items()},
        # the same, counting a width as reached only when its interval also covers the true value
        "covering_ratio": cov,
        # mean |estimate - truth| where each strategy stopped (a; relative for the loss), and the full grid's
        "error_at_reach": err,
        # cells trained (seed design included) where each strategy stopped; the full grid has 37
        "cells_at_reach": n_cells,
        "full_grid_width": {law: _REF[law] for law in args.laws},
        "full_grid_width_range": {law: {t: [min(v), max(v)] for t, v in FULL_STATS[law]["widths"].items()}
                                  for law in args.laws},
        "full_grid_error": {law: FULL_STATS[law]["error"] for law in args.laws},
        "full_grid_coverage": {law: FULL_STATS[law]["coverage"] for law in args.laws},
        "target_compute_ratio_max": 0.5, "seed_fraction": float(np.mean([r["seed_fraction"] for r in rows])),
        "seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
