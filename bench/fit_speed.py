"""Benchmark: full 4,500-start Approach-3 fit on 240 points, batched vs the per-start scipy loop.

Data: 240 points from the Epoch AI law (E=1.817, A=482.01, B=2085.43, alpha=0.348,
beta=0.366) with 1 % log-normal noise; 30 model sizes over ~2.4 decades (70M-16B), 8 token
counts per size (2 to 200 tokens per parameter). The batched fit is timed as the best of
``--repeats`` runs; the baseline (one scipy L-BFGS-B run per grid start, same objective and
analytic gradient) runs once. The last line printed is one JSON object.

Run from the repo root: .venv/bin/python bench/fit_speed.py [--repeats 3] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root, in case it is not installed

from analysis.fit_lnd import fit_lnd, scipy_loop_fit  # noqa: E402
from analysis.reference import EPOCH  # noqa: E402

TARGET_SECONDS = 2.0


def epoch_points(seed: int = 0, noise: float = 0.01):
    """240 (N, D, loss) points from the Epoch law with multiplicative log-normal noise."""
    rng = np.random.default_rng(seed)
    sizes = np.geomspace(7e7, 1.6e10, 30)
    N = np.repeat(sizes, 8)
    D = N * np.tile(np.geomspace(2, 200, 8), 30) * rng.uniform(0.9, 1.1, N.size)
    L = EPOCH.predict(N, D) * np.exp(rng.normal(0.0, noise, N.size))
    return N, D, L


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-baseline", action="store_true", help="do not run the ~40 s scipy loop")
    args = ap.parse_args(argv)

    N, D, L = epoch_points(args.seed)
    times, fit = [], None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fit = fit_lnd(N, D, L)
        times.append(time.perf_counter() - t0)
    out = {"bench": "fit_speed", "seconds": round(min(times), 3), "target_seconds": TARGET_SECONDS,
           "n_points": int(N.size), "n_starts": 4500, "objective": fit.objective,
           "alpha": round(fit.alpha, 5), "beta": round(fit.beta, 5)}
    if not args.skip_baseline:
        t0 = time.perf_counter()
        ref = scipy_loop_fit(N, D, L)
        out["baseline_seconds"] = round(time.perf_counter() - t0, 2)
        out["baseline_objective"] = ref.objective
        # positive: the batched fit is worse than brute force; the target is <= 1e-9
        out["objective_rel_diff"] = (fit.objective - ref.objective) / ref.objective
        out["speedup"] = round(out["baseline_seconds"] / out["seconds"], 1)
    out["meets_target"] = out["seconds"] <= TARGET_SECONDS and out.get("objective_rel_diff", 0.0) <= 1e-9
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
