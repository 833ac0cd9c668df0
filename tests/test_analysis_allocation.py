"""Closed-form compute-optimal allocation against brute-force minimisation along C = 6ND."""

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from analysis.allocation import allocation_from_fit, compute_for_model, optimal_allocation
from analysis.errors import FitError
from analysis.reference import CHINCHILLA, CUERVO_MARXER_SPEECH, EPOCH

LAWS = [
    dict(E=1.8, A=400.0, B=2000.0, alpha=0.34, beta=0.37),
    dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28),
    dict(E=1.73, A=13.9, B=39.8, alpha=0.25, beta=0.24),
    dict(E=2.0, A=50.0, B=5000.0, alpha=0.2, beta=0.6),
]


def brute_force_n_opt(C, E, A, B, alpha, beta):
    def loss_at(log_n):
        n = np.exp(log_n)
        return E + A / n**alpha + B / (C / (6 * n)) ** beta

    r = minimize_scalar(loss_at, bounds=(np.log(1e2), np.log(C / 6) - np.log(1e2)), method="bounded",
                        options={"xatol": 1e-12})
    return float(np.exp(r.x))


@pytest.mark.parametrize("law", LAWS)
@pytest.mark.parametrize("C", [1e18, 1e20, 5.88e23])
def test_closed_form_equals_brute_force(law, C):
    assert law["alpha"] != law["beta"]
    alloc = optimal_allocation(C, **law)
    n_bf = brute_force_n_opt(C, **law)
    assert alloc.n_opt == pytest.approx(n_bf, rel=1e-6)
    assert alloc.d_opt == pytest.approx(C / (6 * n_bf), rel=1e-6)
    assert 6 * alloc.n_opt * alloc.d_opt == pytest.approx(C, rel=1e-12)
    assert alloc.tokens_per_param == pytest.approx(alloc.d_opt / alloc.n_opt, rel=1e-12)
    expect_loss = law["E"] + law["A"] / alloc.n_opt ** law["alpha"] + law["B"] / alloc.d_opt ** law["beta"]
    assert alloc.loss_opt == pytest.approx(expect_loss, rel=1e-12)


def test_array_budgets_and_exponents():
    C = np.geomspace(1e18, 1e22, 5)
    alloc = allocation_from_fit(EPOCH, C)
    slope = np.polyfit(np.log(C), np.log(alloc.n_opt), 1)[0]
    assert slope == pytest.approx(EPOCH.beta / (EPOCH.alpha + EPOCH.beta), rel=1e-9)
    assert alloc.a + alloc.b == pytest.approx(1.0)


def test_paper_fact_sheet_tokens_per_param():
    # fact sheet section 5: Chinchilla (rounded) ~40 tokens/param at 1e20; C&M speech ~153 at 1e20
    assert optimal_allocation(1e20, **_law(CHINCHILLA)).tokens_per_param == pytest.approx(40, rel=0.05)
    assert optimal_allocation(1e20, **_law(CUERVO_MARXER_SPEECH)).tokens_per_param == pytest.approx(153, rel=0.05)
    assert optimal_allocation(1e18, **_law(CUERVO_MARXER_SPEECH)).n_opt == pytest.approx(35e6, rel=0.05)


def test_compute_for_model_inverts_allocation():
    law = LAWS[0]
    alloc = optimal_allocation(3e21, **law)
    assert compute_for_model(alloc.n_opt, **law) == pytest.approx(3e21, rel=1e-9)


def test_refuses_nonpositive_exponent():
    with pytest.raises(FitError, match="positive finite"):
        optimal_allocation(1e20, E=1.0, A=1.0, B=1.0, alpha=0.0, beta=0.3)


def _law(ref):
    return dict(E=ref.E, A=ref.A, B=ref.B, alpha=ref.alpha, beta=ref.beta)
