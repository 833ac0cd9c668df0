"""Approach-3 fit: parameter recovery, agreement with the brute-force scipy loop, bootstrap coverage."""

import numpy as np
import pytest

from analysis.allocation import optimal_allocation
from analysis.fit_lnd import (
    LNDFit,
    bootstrap_lnd,
    chinchilla_grid,
    fit_lnd,
    objective,
    objective_and_grad,
    scipy_loop_fit,
)

TRUTH = dict(E=1.8, A=400.0, B=2000.0, alpha=0.34, beta=0.37)


def law(N, D, E=1.8, A=400.0, B=2000.0, alpha=0.34, beta=0.37):
    return E + A / N**alpha + B / D**beta


def grid_points(n_sizes=8, n_tokens=6):
    """Model sizes over ~2 decades, several token counts (5 to 200 tokens/param) per size."""
    sizes = np.geomspace(7e7, 1e10, n_sizes)
    ratios = np.geomspace(5, 200, n_tokens)
    N = np.repeat(sizes, n_tokens)
    D = N * np.tile(ratios, n_sizes)
    return N, D


def test_grid_is_chinchillas_4500_starts():
    g = chinchilla_grid()
    assert g.shape == (4500, 5)
    assert sorted(set(g[:, 3])) == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert sorted(set(g[:, 2])) == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert sorted(set(g[:, 0])) == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]


def test_noise_free_fit_recovers_every_parameter():
    N, D = grid_points()
    fit = fit_lnd(N, D, law(N, D))
    for name, true in TRUTH.items():
        assert getattr(fit, name) == pytest.approx(true, rel=1e-6), name
    assert fit.a == pytest.approx(0.37 / 0.71, rel=1e-6)
    assert fit.b == pytest.approx(0.34 / 0.71, rel=1e-6)
    assert fit.G == pytest.approx((0.34 * 400 / (0.37 * 2000)) ** (1 / 0.71), rel=1e-5)
    assert fit.n_points == N.size
    assert fit.objective < 1e-12
    assert np.allclose(fit.predict(N, D), law(N, D), rtol=1e-6)


def test_objective_is_sum_of_huber_not_mean():
    N, D = grid_points()
    rng = np.random.default_rng(1)
    L = law(N, D) * np.exp(rng.normal(0, 0.01, N.size))
    theta = np.array([np.log(400.0), np.log(2000.0), np.log(1.8), 0.34, 0.37])
    r = np.log(law(N, D)) - np.log(L)
    from scipy.special import huber

    expected = huber(1e-3, r).sum()
    assert objective(theta, np.log(N), np.log(D), np.log(L))[0] == pytest.approx(expected, rel=1e-12)
    assert objective_and_grad(theta, np.log(N), np.log(D), np.log(L))[0] == pytest.approx(expected, rel=1e-12)


def test_analytic_gradient_matches_finite_differences():
    N, D = grid_points()
    rng = np.random.default_rng(2)
    u, v = np.log(N), np.log(D)
    y = np.log(law(N, D) * np.exp(rng.normal(0, 0.02, N.size)))
    theta = np.array([5.5, 8.0, 0.4, 0.3, 0.4])
    _, g = objective_and_grad(theta, u, v, y)
    for k in range(5):
        e = np.zeros(5)
        e[k] = 1e-7
        fd = (objective_and_grad(theta + e, u, v, y)[0] - objective_and_grad(theta - e, u, v, y)[0]) / 2e-7
        assert fd == pytest.approx(g[k], rel=1e-4, abs=1e-9)


def test_batched_fit_reaches_the_brute_force_best():
    # brute force over every 45th grid start (100 starts) keeps this test fast; the benchmark
    # bench/fit_speed.py compares the full 4,500-start grid on 240 points
    N, D = grid_points(n_sizes=8, n_tokens=5)
    rng = np.random.default_rng(3)
    L = law(N, D) * np.exp(rng.normal(0, 0.02, N.size))
    starts = chinchilla_grid()[::45]
    fast = fit_lnd(N, D, L, starts=starts)
    slow = scipy_loop_fit(N, D, L, starts=starts)
    assert fast.objective <= slow.objective * (1 + 1e-9)


def test_bootstrap_interval_covers_truth_with_noise():
    N, D = grid_points(n_sizes=10, n_tokens=8)
    rng = np.random.default_rng(0)
    L = law(N, D) * np.exp(rng.normal(0, 0.005, N.size))
    fit = fit_lnd(N, D, L)
    boot = bootstrap_lnd(N, D, L, fit=fit, n_resamples=80, seed=1)
    assert boot.n_failed == 0
    for name, true in {**TRUTH, "a": 0.37 / 0.71, "b": 0.34 / 0.71}.items():
        iv = boot.intervals[name]
        assert iv["p2.5"] <= iv["p10"] <= iv["p90"] <= iv["p97.5"]
        assert iv["p2.5"] <= true <= iv["p97.5"], (name, iv)
    assert set(boot.intervals) == {"E", "A", "B", "alpha", "beta", "a", "b", "G"}


def test_fit_to_dict_is_json_ready():
    import json

    N, D = grid_points()
    fit = fit_lnd(N, D, law(N, D))
    d = fit.to_dict()
    json.dumps(d)
    for key in ("E", "A", "B", "alpha", "beta", "a", "b", "G", "objective", "n_points"):
        assert key in d


def test_from_theta_matches_allocation_module():
    fit = LNDFit.from_theta([np.log(406.4), np.log(410.7), np.log(1.69), 0.34, 0.28], 0.0, 10)
    alloc = optimal_allocation(1e21, fit.E, fit.A, fit.B, fit.alpha, fit.beta)
    assert alloc.G == pytest.approx(fit.G, rel=1e-12)
    assert alloc.a == pytest.approx(fit.a, rel=1e-12)
