"""The proposal criterion against finite differences and brute force (analysis.propose)."""
import itertools

import numpy as np
import pytest

from analysis.fit_lnd import LNDFit, predict_log_loss
from analysis.propose import (PRIOR_PRECISION, Greedy, greedy, jacobian, optimum, propose, target_gradient,
                              target_value, theta_of)

THETA = theta_of(1.69, 406.4, 410.7, 0.34, 0.28)[0]
FIT = LNDFit.from_theta(THETA, 0.0, 10)


def _fd(f, theta, h=1e-6):
    return np.array([(f(theta + h * e) - f(theta - h * e)) / (2 * h) for e in np.eye(5)])


def test_jacobian_matches_finite_differences():
    N, D = np.array([1e7, 3e8, 2e9]), np.array([5e9, 1e10, 4e11])
    J = jacobian(THETA, N, D)[0]
    fd = _fd(lambda t: predict_log_loss(t, np.log(N), np.log(D))[0], THETA).T
    assert np.abs(J - fd).max() < 1e-8


@pytest.mark.parametrize("target", ["a", "loss"])
def test_target_gradient_matches_finite_differences(target):
    g = target_gradient(THETA, target, 1e22)[0]
    fd = _fd(lambda t: target_value(t, target, 1e22)[0], THETA)
    assert np.abs(g - fd).max() < 1e-7


def test_optimum_is_the_brute_force_minimum_along_the_isoflop_line():
    C = 1e21
    n, d = optimum(THETA, C)
    grid = np.geomspace(n[0] / 10, n[0] * 10, 200001)
    loss = np.exp(predict_log_loss(THETA, np.log(grid), np.log(C / (6 * grid)))[0])
    assert abs(grid[np.argmin(loss)] / n[0] - 1) < 1e-4
    assert abs(6 * n[0] * d[0] / C - 1) < 1e-12
    assert target_value(THETA, "a")[0] == pytest.approx(0.28 / 0.62)


def _variance(theta, c, N, D, sigma):
    J = jacobian(theta, N, D)[0]
    F = J.T @ J / sigma**2 + PRIOR_PRECISION
    return c @ np.linalg.solve(F, c)


@pytest.mark.parametrize("criterion", ["log", "variance"])
def test_greedy_variance_after_matches_direct_inverse_and_first_pick_is_brute_force_best(criterion):
    rng = np.random.default_rng(0)
    design_N = np.repeat([2e7, 6e7, 2e8], 2)
    design_D = np.array([4e8, 2e9, 1e9, 6e9, 3e9, 2e10])
    cand_N = np.repeat(np.geomspace(2e7, 2e9, 5), 4)
    cand_D = cand_N * np.tile([2.0, 10.0, 50.0, 200.0], 5)
    cost = 6 * cand_N * cand_D / 1e18
    thetas = THETA + rng.normal(0, [0.1, 0.1, 0.01, 0.01, 0.01], size=(5, 5))
    sigma = 0.01
    st = Greedy(FIT, thetas, design_N, design_D, cand_N, cand_D, cost, "a", None, sigma, criterion=criterion)
    gains = st.gains()
    # brute force: each candidate's variance after, from the inverse of the whole information matrix
    brute = []
    for k in range(cand_N.size):
        before, after = [], []
        for th, c in zip(st.thetas, st.c):
            before.append(_variance(th, c, design_N, design_D, sigma))
            after.append(_variance(th, c, np.append(design_N, cand_N[k]), np.append(design_D, cand_D[k]), sigma))
        before, after = np.array(before), np.array(after)
        brute.append(np.mean(np.log(before / after)) if criterion == "log" else
                     np.mean(before - after) / np.mean(before))
    assert np.allclose(gains, brute, rtol=1e-6, atol=1e-10)
    assert int(np.argmax(gains / cost)) == int(np.argmax(np.array(brute) / cost))


def test_budget_is_respected_and_picks_are_greedy_and_spread_in_d_over_n():
    design_N = np.repeat([2e7, 6e7, 2e8], 2)
    design_D = np.array([4e8, 2e9, 1e9, 6e9, 3e9, 2e10])
    cand_N = np.repeat(np.geomspace(2e7, 2e9, 5), 6)
    ratios = np.geomspace(1, 300, 6)
    cand_D = cand_N * np.tile(ratios, 5)
    cost = 6 * cand_N * cand_D / 1e18
    budget = 0.3 * cost.sum()
    gap = 0.5 * np.log(300) / 5
    prop = propose(FIT, np.empty((0, 5)), design_N, design_D, cand_N, cand_D, cost, budget, sigma=0.01,
                   min_gap=gap)
    assert prop.picks and prop.spent <= budget * (1 + 1e-9)
    idx = [p.index for p in prop.picks]
    assert len(set(idx)) == len(idx)
    widths = [prop.width_now] + [p.width_after for p in prop.picks]
    assert all(b <= a + 1e-15 for a, b in zip(widths, widths[1:]))
    # no two picks of the same size within half a grid step in log(D/N)
    for i, j in itertools.combinations(idx, 2):
        if cand_N[i] == cand_N[j]:
            assert abs(np.log(cand_D[i] / cand_D[j])) >= gap


def test_groups_share_one_budget():
    design_N = np.repeat([2e7, 6e7, 2e8], 2)
    design_D = np.array([4e8, 2e9, 1e9, 6e9, 3e9, 2e10])
    cand_N = np.repeat(np.geomspace(2e7, 2e9, 4), 3)
    cand_D = cand_N * np.tile([3.0, 30.0, 300.0], 4)
    cost = 6 * cand_N * cand_D / 1e18
    states = [Greedy(FIT, np.empty((0, 5)), design_N, design_D, cand_N, cand_D, cost, "a", None, 0.01)
              for _ in range(2)]
    budget = 0.2 * cost.sum()
    picks = greedy(states, budget)
    assert sum(p.gpu_hours for _, p in picks) <= budget * (1 + 1e-9)
    # two identical groups: the best cell of one is as good as the other's, so both get cells
    assert {i for i, _ in picks} == {0, 1}
