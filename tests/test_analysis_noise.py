"""Estimators with their noise, against known values, brute force and simulation: Wilson and Newcombe
intervals, the weighted Q(C) law and its refusal at chance, the IsoFLOP vertex's delta-method variance,
and the weighted Approach-2 regression."""

import numpy as np
import pytest

from analysis.accuracy import (NO_TREND, above_chance, difference_interval, fit_metric_trend,
                               wilson_interval)
from analysis.isoflop import fit_isoflop, isoflop_vertex

# ----------------------------------------------------------------------------- accuracies


def test_wilson_interval_matches_published_values_and_the_closed_form():
    # Newcombe (1998), Stat. Med. 17:857, single proportion example 81/263: Wilson 0.2553 - 0.3662
    lo, hi = wilson_interval(81 / 263, 263)
    assert (lo[0], hi[0]) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    p, n, z = 0.55, 100, 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = wilson_interval([p, 0.7], [n, np.nan])
    assert (lo[0], hi[0]) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert np.isnan(lo[1]) and np.isnan(hi[1])  # unknown pair count: no interval


def test_newcombe_difference_matches_the_published_example():
    # Newcombe (1998), Stat. Med. 17:873, example (a) 56/70 - 48/80, method 10: 0.0524 to 0.3339
    d, lo, hi = difference_interval(56 / 70, 70, 48 / 80, 80)
    assert d == pytest.approx(0.2) and (lo, hi) == pytest.approx((0.0524, 0.3339), abs=5e-5)


def test_above_chance_needs_the_whole_interval_above_half():
    assert list(above_chance([0.55, 0.62, 0.62], [100, 100, np.nan])) == [False, True, False]


def binomial_points(rng, k, gamma, budgets, n):
    p = k * budgets**gamma
    return rng.binomial(n, p) / n


def test_accuracies_at_chance_give_no_law():
    rng = np.random.default_rng(0)
    C = np.geomspace(1e12, 1e14, 4)
    laws = [fit_metric_trend(C, binomial_points(rng, 0.5, 0.0, C, 100), np.full(4, 100)) for _ in range(200)]
    called = sum(t.law for t in laws)
    print(f"at chance, 100 pairs, 4 budgets: a law was called in {called} of 200 draws")
    assert called <= 10  # 5 % false trends at most, up to the simulation's own noise
    assert all(t.verdict.startswith(NO_TREND) for t in laws if not t.law)


def test_accuracies_rising_with_log_c_recover_gamma_within_the_interval():
    rng = np.random.default_rng(1)
    C = np.geomspace(1e18, 1e21, 5)
    k, gamma = 0.19, 0.026  # SIMS Fig. 1 interleaved sSC: 0.55 .. 0.65 over these budgets
    fits = [fit_metric_trend(C, binomial_points(rng, k, gamma, C, 3000), np.full(5, 3000)) for _ in range(400)]
    coverage = np.mean([f.gamma_lo <= gamma <= f.gamma_hi for f in fits])
    print(f"gamma {gamma}: 95% interval coverage {coverage:.3f} over 400 draws of 3000 pairs x 5 budgets; "
          f"law called in {np.mean([f.law for f in fits]):.2f}")
    assert 0.92 <= coverage <= 0.98
    one = fits[0]
    assert one.law and one.gamma_lo <= gamma <= one.gamma_hi and "rises" in one.verdict


def test_weighted_metric_law_is_the_brute_force_weighted_least_squares():
    C = np.array([1e18, 3e18, 1e19, 1e20])
    Q = np.array([0.52, 0.57, 0.58, 0.66])
    n = np.array([100, 400, 250, 1000])
    fit = fit_metric_trend(C, Q, n)
    p = (np.round(Q * n) + 0.5) / (n + 1)
    W = np.diag(n * p / (1 - p))
    X = np.column_stack([np.ones(4), np.log(C)])
    beta = np.linalg.solve(X.T @ W @ X, X.T @ W @ np.log(Q))
    assert (np.log(fit.k), fit.gamma) == pytest.approx(tuple(beta), rel=1e-9)
    r = np.log(Q) - X @ beta
    chi2 = float(r @ W @ r)
    se = np.sqrt(np.linalg.inv(X.T @ W @ X)[1, 1] * max(1.0, chi2 / 2))
    assert fit.gamma_se == pytest.approx(se, rel=1e-9) and fit.chi2 == pytest.approx(chi2, rel=1e-9)


# ----------------------------------------------------------------------------- IsoFLOP vertices


def test_vertex_variance_matches_monte_carlo():
    """The delta-method variance of ln N_opt against the spread of vertices refitted to fresh noise."""
    rng = np.random.default_rng(2)
    N = np.geomspace(1e8, 4e9, 6)  # off-centre: the minimum sits in the lower third
    x = np.log(N)
    truth = 2.5 + 0.03 * (x - np.log(4e8)) ** 2
    sigma = 0.002
    base = isoflop_vertex(N, truth, 1e19)
    draws = []
    for _ in range(4000):
        try:
            draws.append(np.log(isoflop_vertex(N, truth + rng.normal(0, sigma, N.size), 1e19).n_opt))
        except ValueError:
            pass
    mc = np.var(draws)
    delta = sigma**2 * base.vertex_var_unscaled
    print(f"vertex variance: delta method {delta:.3g}, Monte Carlo {mc:.3g} over {len(draws)} fits")
    assert delta == pytest.approx(mc, rel=0.1)
    assert base.var_unscaled_at(np.log(base.n_opt)) == pytest.approx(base.vertex_var_unscaled, rel=1e-9)


def offcentre_runs(seed, noise=0.005):
    """Off-centre, uneven IsoFLOP grids under a known law (a = 0.521), as in bench/approach2_weighting.py."""
    rng = np.random.default_rng(seed)
    E, A, B, al, be = 1.8, 400.0, 2000.0, 0.34, 0.37
    a_true = be / (al + be)
    G = (al * A / (be * B)) ** (1 / (al + be))
    C, N, L = [], [], []
    for c in np.geomspace(1e18, 1e21, 6):
        centre = np.log(G * (c / 6) ** a_true) + rng.uniform(-1, 1)
        half = rng.uniform(0.7, 2.0)
        sizes = np.exp(np.linspace(centre - half, centre + half, int(rng.integers(4, 9))))
        C += [c] * sizes.size
        N += list(sizes)
        L += list((E + A / sizes**al + B / (c / (6 * sizes)) ** be) * np.exp(rng.normal(0, noise, sizes.size)))
    return a_true, np.array(C), np.array(N), np.array(L)


def test_weighted_approach2_is_tighter_and_covers_on_offcentre_grids():
    a_w, a_e, cover = [], [], []
    for seed in range(120):
        a_true, C, N, L = offcentre_runs(seed)
        w = fit_isoflop(C, N, L, skip_refused=True)
        e = fit_isoflop(C, N, L, skip_refused=True, weighted=False)
        if w.n_budgets < 3:
            continue
        a_w.append(w.a)
        a_e.append(e.a)
        cover.append(w.intervals["a"]["p2.5"] <= a_true <= w.intervals["a"]["p97.5"])
    a_w, a_e = np.array(a_w), np.array(a_e)
    print(f"{len(cover)} studies: weighted a bias {a_w.mean() - a_true:+.4f} sd {a_w.std():.4f}; "
          f"equal-weight bias {a_e.mean() - a_true:+.4f} sd {a_e.std():.4f}; weighted 95% coverage "
          f"{np.mean(cover):.3f}")
    assert a_w.std() < 0.9 * a_e.std()
    assert abs(a_w.mean() - a_true) < 0.01
    assert 0.9 <= np.mean(cover) <= 0.99


def fixed_ladder_runs(seed, noise=0.0075):
    """One ladder of eight sizes 3e7..4e9 for every budget 1e18..1e21 (0-2 rungs skipped at random),
    under Chinchilla's law (a = 0.28/0.62): N_opt crosses the ladder, so the grids are off-centre in a
    C-correlated way, as in bench/approach2_weighting.py."""
    rng = np.random.default_rng(seed)
    E, A, B, al, be = 1.69, 406.4, 410.7, 0.34, 0.28
    ladder = np.geomspace(3e7, 4e9, 8)
    C, N, L = [], [], []
    for c in np.geomspace(1e18, 1e21, 7):
        sizes = np.delete(ladder, rng.choice(ladder.size, size=int(rng.integers(0, 3)), replace=False))
        C += [c] * sizes.size
        N += list(sizes)
        L += list((E + A / sizes**al + B / (c / (6 * sizes)) ** be) * np.exp(rng.normal(0, noise, sizes.size)))
    return be / (al + be), np.array(C), np.array(N), np.array(L)


def test_weighted_approach2_has_less_bias_on_a_fixed_ladder():
    # the parabola pulls each vertex toward its grid's centre; on a fixed ladder that pull is
    # correlated with C and biases the equal-weight slope low; the weights count the off-centre,
    # flat vertices less
    a_w, a_e, cover = [], [], []
    for seed in range(100):
        a_true, C, N, L = fixed_ladder_runs(seed)
        w = fit_isoflop(C, N, L, skip_refused=True)
        e = fit_isoflop(C, N, L, skip_refused=True, weighted=False)
        a_w.append(w.a)
        a_e.append(e.a)
        cover.append(w.intervals["a"]["p2.5"] <= a_true <= w.intervals["a"]["p97.5"])
    a_w, a_e = np.array(a_w), np.array(a_e)
    print(f"fixed ladder, {len(cover)} studies: weighted a bias {a_w.mean() - a_true:+.4f} sd {a_w.std():.4f}; "
          f"equal-weight bias {a_e.mean() - a_true:+.4f} sd {a_e.std():.4f}; weighted 95% coverage {np.mean(cover):.3f}")
    assert abs(a_w.mean() - a_true) < abs(a_e.mean() - a_true) - 0.005
    assert a_w.std() < a_e.std()
    assert 0.88 <= np.mean(cover) <= 0.99


def test_weighted_regression_is_the_brute_force_weighted_least_squares():
    a_true, C, N, L = offcentre_runs(3)
    fit = fit_isoflop(C, N, L, skip_refused=True)
    # brute force: each budget's parabola by the normal equations, sigma^2 pooled, the vertex
    # variance at the fitted line, then weighted least squares by explicit sums
    rows = []
    for c in np.unique(C):
        m = C == c
        x, y = np.log(N[m]), L[m]
        V = np.column_stack([x**2, x, np.ones_like(x)])
        coef = np.linalg.solve(V.T @ V, V.T @ y)
        xv = -coef[1] / (2 * coef[0])
        if x.min() <= xv <= x.max() and coef[0] > 0:
            rows.append((np.log(c), xv, coef[0], np.linalg.inv(V.T @ V), np.sum((V @ coef - y) ** 2), m.sum() - 3))
    assert len(rows) == fit.n_budgets
    lc = np.array([r[0] for r in rows])
    xv = np.array([r[1] for r in rows])
    s2 = sum(r[4] for r in rows) / sum(r[5] for r in rows)

    def var_at(xs):
        return np.array([(np.array([2 * xi, 1, 0]) @ r[3] @ np.array([2 * xi, 1, 0])) / (4 * r[2] ** 2)
                         for xi, r in zip(xs, rows)])

    def wls(w):
        sw, sx, sy = w.sum(), (w * lc).sum(), (w * xv).sum()
        sxx, sxy = (w * lc * lc).sum(), (w * lc * xv).sum()
        slope = (sw * sxy - sx * sy) / (sw * sxx - sx * sx)
        return slope, (sy - slope * sx) / sw, sw / (sw * sxx - sx * sx)

    u = np.array([(lambda g: g @ r[3] @ g)(np.array([-xi / r[2], -1 / (2 * r[2]), 0])) for xi, r in zip(xv, rows)])
    for _ in range(3):
        a, b, _ = wls(1 / u)
        u = var_at(b + a * lc)
    a, b, var_a = wls(1 / (s2 * u))
    assert fit.a == pytest.approx(a, abs=1e-9) and np.log(fit.k) == pytest.approx(b, abs=1e-9)
    chi2 = np.sum((xv - b - a * lc) ** 2 / (s2 * u))
    scale = max(1.0, chi2 / (len(rows) - 2)) if chi2 > len(rows) - 2 else 1.0
    assert fit.a_se == pytest.approx(np.sqrt(var_a * scale), rel=1e-9)
