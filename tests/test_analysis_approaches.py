"""Approach 1 (envelope), Approach 2 (IsoFLOP) and the compute-only laws on synthetic data."""

import numpy as np
import pandas as pd
import pytest

from analysis.compute_laws import compute_frontier, fit_compute_laws, fit_loss_compute, fit_power_law
from analysis.envelope import fit_envelope, loss_envelope
from analysis.isoflop import fit_isoflop, group_budgets
from analysis.reference import METRIC_LAWS, metric_laws_for

E, A, B, ALPHA, BETA = 1.8, 400.0, 2000.0, 0.28, 0.40  # alpha != beta: a = 0.588
A_TRUE = BETA / (ALPHA + BETA)
G_TRUE = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))


def law(N, D):
    return E + A / N**ALPHA + B / D**BETA


def isoflop_runs(noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for C in np.geomspace(1e18, 1e21, 7):
        n_star = G_TRUE * (C / 6) ** A_TRUE
        for N in n_star * np.geomspace(1 / 6, 6, 9):
            D = C / (6 * N)
            rows.append((C * rng.uniform(0.99, 1.01), N, law(N, D) * np.exp(rng.normal(0, noise))))
    return np.array(rows).T


def test_budget_grouping_tolerates_small_flop_differences():
    labels = group_budgets([1e18, 1.01e18, 0.995e18, 1e19, 1.02e19, 1e20])
    assert list(labels) == [0, 0, 0, 1, 1, 2]


def test_isoflop_recovers_the_n_opt_exponent():
    C, N, L = isoflop_runs()
    fit = fit_isoflop(C, N, L)
    assert fit.n_budgets == 7
    assert fit.a == pytest.approx(A_TRUE, abs=0.01)
    assert fit.b == pytest.approx(1 - A_TRUE, abs=0.01)
    for p in fit.profiles:  # each vertex lands near the true optimum
        assert p.n_opt == pytest.approx(G_TRUE * (p.flops / 6) ** A_TRUE, rel=0.1)
        assert p.d_opt * p.n_opt * 6 == pytest.approx(p.flops)
    assert fit.n_opt(1e20) == pytest.approx(G_TRUE * (1e20 / 6) ** A_TRUE, rel=0.1)


def test_isoflop_bootstrap_interval_covers_the_exponent():
    C, N, L = isoflop_runs(noise=0.002, seed=4)
    fit = fit_isoflop(C, N, L, n_bootstrap=100, seed=1)
    iv = fit.bootstrap_intervals["a"]
    assert fit.n_bootstrap == 100
    assert fit.n_bootstrap - fit.n_bootstrap_failed >= 50
    assert iv["p2.5"] <= iv["p10"] <= iv["p90"] <= iv["p97.5"]
    assert iv["p2.5"] - 0.01 <= A_TRUE <= iv["p97.5"] + 0.01
    assert set(fit.bootstrap_intervals) == {"a", "b", "k"} == set(fit.intervals)


def training_curves():
    curves = []
    for N in np.geomspace(3e7, 3e10, 31):
        tokens = np.geomspace(1e5, 1e14, 400)
        curves.append({"run": f"n{N:.3g}", "params": N, "flops": 6 * N * tokens, "loss": law(N, tokens)})
    return curves


def test_envelope_recovers_the_n_opt_exponent():
    # budgets whose true optimum lies well inside the sampled sizes (3e7 .. 3e10)
    c_lo, c_hi = (6 * (n / G_TRUE) ** (1 / A_TRUE) for n in (1e8, 1e10))
    fit = fit_envelope(training_curves(), n_grid=300, flops_min=c_lo, flops_max=c_hi)
    assert fit.n_sizes >= 10
    assert fit.a == pytest.approx(A_TRUE, abs=0.03)
    env = loss_envelope(training_curves(), n_grid=50)
    # the envelope is never above any single curve
    curve = training_curves()[10]
    inside = (env.flops >= curve["flops"][0]) & (env.flops <= curve["flops"][-1])
    mine = np.interp(np.log(env.flops[inside]), np.log(curve["flops"]), curve["loss"])
    assert (env.loss[inside] <= mine + 1e-12).all()


def test_loss_compute_law_recovered_exactly():
    C = np.geomspace(1e18, 1e21, 8)
    L = 1.6 + 30.0 * C**-0.08
    fit = fit_loss_compute(C, L)
    assert fit.E == pytest.approx(1.6, rel=1e-6)
    assert fit.k == pytest.approx(30.0, rel=1e-5)
    assert fit.gamma == pytest.approx(0.08, rel=1e-6)
    assert fit.predict(1e22) == pytest.approx(1.6 + 30.0 * 1e22**-0.08, rel=1e-6)


def test_metric_power_law_recovers_sims_figure1():
    law_ssc = METRIC_LAWS["sims_interleaved_ssc"]
    C = np.array([2.2e18, 5.0e18, 2.0e19, 6.0e19, 2.0e20, 6.9e20])
    fit = fit_power_law(C, law_ssc.predict(C))
    assert fit.k == pytest.approx(0.19, rel=1e-9)
    assert fit.gamma == pytest.approx(0.026, rel=1e-9)
    assert fit.solve_for_flops(law_ssc.predict(1e21)) == pytest.approx(1e21, rel=1e-9)
    assert {x.setup for x in metric_laws_for("tsc")} == {"interleaved", "textless", "text"}


def test_frontier_and_per_group_laws():
    rows = []
    for setup, k, g in [("interleaved", 0.19, 0.026), ("textless", 0.26, 0.017)]:
        for C in np.geomspace(1e18, 1e21, 6):
            for worse in (1.0, 0.9, 0.8):  # three runs per budget; only the best is on the frontier
                rows.append(dict(setup=setup, flops=C, ssc=k * C**g * worse,
                                 loss=(1.5 + 20 * C**-0.07) / worse))
    frame = pd.DataFrame(rows)
    c, v, idx = compute_frontier(frame.flops, frame.ssc, higher_is_better=True)
    assert len(c) == 6 and len(idx) == 6  # both setups share budgets here: one winner per budget
    laws = fit_compute_laws(frame, group_col="setup", metric_cols=["ssc"])
    assert laws["interleaved"]["ssc"].gamma == pytest.approx(0.026, rel=1e-9)
    assert laws["textless"]["ssc"].k == pytest.approx(0.26, rel=1e-9)
    assert laws["interleaved"]["loss"].gamma == pytest.approx(0.07, rel=1e-5)
