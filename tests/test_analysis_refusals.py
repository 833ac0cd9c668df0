"""Every fit refuses, with a typed error naming why, instead of fitting nonsense."""

import numpy as np
import pytest

from analysis.compute_laws import fit_loss_compute, fit_power_law
from analysis.envelope import fit_envelope
from analysis.errors import (
    FitError,
    NoInteriorMinimum,
    NonFiniteLoss,
    NonPositiveInput,
    OneDataSize,
    OneModelSize,
    TooFewPoints,
)
from analysis.fit_lnd import bootstrap_lnd, fit_lnd
from analysis.isoflop import fit_isoflop, isoflop_vertex


def law(N, D):
    return 1.8 + 400 / N**0.34 + 2000 / D**0.37


def points():
    N = np.repeat(np.geomspace(1e8, 1e10, 4), 3)
    D = N * np.tile([10.0, 30.0, 90.0], 4)
    return N, D, law(N, D)


def test_all_refusals_are_value_errors():
    for cls in (TooFewPoints, OneModelSize, OneDataSize, NoInteriorMinimum, NonFiniteLoss, NonPositiveInput):
        assert issubclass(cls, FitError) and issubclass(cls, ValueError)


def test_too_few_points():
    N, D, L = points()
    with pytest.raises(TooFewPoints, match="need at least 6"):
        fit_lnd(N[:5], D[:5], L[:5])


def test_one_model_size():
    N, D, L = points()
    n1 = np.full_like(N, 1e9)
    with pytest.raises(OneModelSize, match="one model size"):
        fit_lnd(n1, D, law(n1, D))
    with pytest.raises(OneModelSize):
        fit_isoflop(6 * n1 * D, n1, law(n1, D))


def test_one_token_count():
    N, D, L = points()
    d1 = np.full_like(D, 2e10)
    with pytest.raises(OneDataSize, match="one token count"):
        fit_lnd(N, d1, law(N, d1))


@pytest.mark.parametrize("bad", [np.nan, np.inf, 0.0, -1.0])
def test_non_finite_loss(bad):
    N, D, L = points()
    L = L.copy()
    L[4] = bad
    with pytest.raises(NonFiniteLoss, match="entry 4"):
        fit_lnd(N, D, L)
    with pytest.raises(NonFiniteLoss):
        bootstrap_lnd(N, D, L, n_resamples=2)


def test_non_positive_sizes():
    N, D, L = points()
    N = N.copy()
    N[0] = -5
    with pytest.raises(NonPositiveInput, match="N \\(parameters\\)"):
        fit_lnd(N, D, L)


def test_no_interior_minimum_when_vertex_outside_range():
    n = np.geomspace(1e8, 1e9, 5)
    loss = 3.0 - 0.1 * np.log(n) + 0.001 * np.log(n) ** 2  # vertex far beyond 1e9
    with pytest.raises(NoInteriorMinimum, match="outside the sampled range"):
        isoflop_vertex(n, loss, 1e19)


def test_no_interior_minimum_when_parabola_opens_down():
    n = np.geomspace(1e8, 1e9, 5)
    x = np.log(n)
    loss = 3.0 - (x - x.mean()) ** 2 * 0.05
    with pytest.raises(NoInteriorMinimum, match="opens downward"):
        isoflop_vertex(n, loss, 1e19)


def test_isoflop_needs_three_sizes_and_two_budgets():
    with pytest.raises(TooFewPoints):
        isoflop_vertex([1e8, 2e8], [3.0, 2.9], 1e19)
    n = np.geomspace(1e8, 1e9, 5)
    x = np.log(n)
    with pytest.raises(TooFewPoints, match="compute budgets"):
        fit_isoflop(np.full(5, 1e19), n, 2.0 + (x - x.mean()) ** 2)


def test_envelope_with_one_winning_size():
    f = np.geomspace(1e15, 1e18, 20)
    curves = [
        {"run": "small", "params": 1e7, "flops": f, "loss": 3.0 + 0 * f},
        {"run": "big", "params": 1e8, "flops": f, "loss": 2.0 + 0 * f},
    ]
    with pytest.raises(OneModelSize, match="best at every FLOP"):
        fit_envelope(curves)


def test_compute_laws_refuse():
    with pytest.raises(TooFewPoints):
        fit_loss_compute([1e18, 1e19, 1e20], [3.0, 2.8, 2.6])
    with pytest.raises(NonFiniteLoss):
        fit_power_law([1e18, 1e19], [0.5, np.nan])
