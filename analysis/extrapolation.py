"""Extrapolation check: refit without the largest compute budget, predict the runs held out.

A scaling law earns trust by predicting runs it has not seen (Hoffmann et al. 2022; OLMo's
ladder holds out its largest models). Here the runs of the largest budget are removed, Approach 3
and L(C) are refitted on the rest, and the held-out runs are predicted; the relative errors
|predicted - observed| / observed are reported.
"""

from __future__ import annotations

import numpy as np

from analysis._checks import loss_array, positive_array, same_length
from analysis.allocation import allocation_from_fit
from analysis.compute_laws import compute_frontier, fit_loss_compute
from analysis.errors import FitError, TooFewPoints
from analysis.fit_lnd import fit_lnd
from analysis.isoflop import group_budgets, isoflop_vertex


def _error(err: Exception) -> dict:
    return {"error": f"{type(err).__name__}: {err}"}


def _rel(pred, obs):
    return np.abs(np.asarray(pred, float) - np.asarray(obs, float)) / np.asarray(obs, float)


def holdout_check(params, tokens, loss, flops, keys=None, budget_rtol: float = 0.05) -> dict:
    """Hold out the largest budget's runs, refit on the rest, and score the predictions.

    Returns a JSON-able dict: ``held_out_flops`` (that budget, geometric mean of its runs),
    ``n_fit``/``n_held_out``, and three checks, each either numbers or ``{"error": ...}`` when
    the refit refuses:
      * ``approach3``: L(N, D) refitted -> ``mean_rel_error``, ``max_rel_error`` over held-out runs
        and ``runs`` (key, N, D, observed, predicted, rel_error);
      * ``loss_compute``: L(C) refitted on the remaining frontier -> the held-out budget's best
        loss: ``observed``, ``predicted``, ``rel_error`` (mean = max = this one error);
      * ``n_opt``: the refitted Approach 3's N_opt at the held-out budget against that budget's
        IsoFLOP vertex (``ratio`` = predicted / vertex).
    Raises TooFewPoints when there are fewer than two budgets.
    """
    N = positive_array(params, "params")
    D = positive_array(tokens, "tokens")
    L = loss_array(loss)
    C = positive_array(flops, "flops")
    same_length(params=N, tokens=D, loss=L, flops=C)
    keys = [str(i) for i in range(N.size)] if keys is None else [str(k) for k in keys]
    labels = group_budgets(C, budget_rtol)
    if labels.max() < 1:
        raise TooFewPoints("the extrapolation check needs at least 2 compute budgets (one is held out)")
    held = labels == labels.max()
    fit_idx, held_idx = np.flatnonzero(~held), np.flatnonzero(held)
    c_held = float(np.exp(np.log(C[held_idx]).mean()))
    out = {"held_out_flops": c_held, "n_fit": int(fit_idx.size), "n_held_out": int(held_idx.size)}

    try:
        fit = fit_lnd(N[fit_idx], D[fit_idx], L[fit_idx])
        pred = fit.predict(N[held_idx], D[held_idx])
        rel = _rel(pred, L[held_idx])
        out["approach3"] = {
            "mean_rel_error": float(rel.mean()), "max_rel_error": float(rel.max()),
            "fit": {k: fit.to_dict()[k] for k in ("E", "A", "B", "alpha", "beta", "a", "b")},
            "runs": [{"key": keys[i], "N": float(N[i]), "D": float(D[i]), "observed": float(L[i]),
                      "predicted": float(p), "rel_error": float(r)} for i, p, r in zip(held_idx, pred, rel)],
        }
    except FitError as err:
        fit = None
        out["approach3"] = _error(err)

    try:
        c_fit, l_fit, _ = compute_frontier(C[fit_idx], L[fit_idx], False, budget_rtol)
        law = fit_loss_compute(c_fit, l_fit)
        best = held_idx[np.argmin(L[held_idx])]
        pred = float(law.predict(C[best]))
        rel = float(_rel(pred, L[best]))
        out["loss_compute"] = {"observed": float(L[best]), "predicted": pred, "flops": float(C[best]),
                               "rel_error": rel, "mean_rel_error": rel, "max_rel_error": rel}
    except FitError as err:
        out["loss_compute"] = _error(err)

    try:
        if fit is None:
            raise FitError("the Approach-3 refit refused, so there is no N_opt to compare")
        vertex = isoflop_vertex(N[held_idx], L[held_idx], c_held)
        predicted = float(allocation_from_fit(fit, c_held).n_opt)
        out["n_opt"] = {"isoflop_vertex": vertex.n_opt, "predicted": predicted, "ratio": predicted / vertex.n_opt}
    except FitError as err:
        out["n_opt"] = _error(err)
    return out
