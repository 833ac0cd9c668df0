"""Fit Approach 3 or Approach 2 to a CSV of (params, tokens, loss) points: the ``launch.py fit`` back end.

Expected layout: a header row with at least ``params``, ``tokens`` and ``loss`` columns (one
row per run, e.g. a harvest export); ``flops`` (needed by Approach 2) and ``group`` optional.
Which parameter count is N is the caller's choice (``params_col``, e.g. ``params_nonembedding``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from analysis.data_constrained import BASE_NAMES, BaseLaw, fit_data_constrained
from analysis.errors import FitError, InputError
from analysis.fit_lnd import HUBER_DELTA, bootstrap_lnd, fit_lnd
from analysis.identification import not_identified
from analysis.isoflop import fit_isoflop


def _plain(value):
    """A numpy scalar as the Python value it holds, so a message shows -40000000, not np.int64(...)."""
    return value.item() if hasattr(value, "item") else value


def read_points_csv(path, params_col: str = "params", tokens_col: str = "tokens", loss_col: str = "loss",
                    group_col: str | None = "group", flops_col: str | None = None, extra_cols: tuple = ()):
    """Read and validate the CSV; returns a DataFrame with float params/tokens/loss columns.

    Raises InputError (one line naming the file) when the file is missing or unreadable, a
    required column is absent, or a value is empty, non-numeric, non-finite or not positive.
    """
    import pandas as pd  # heavy: pandas only for the CSV path

    path = Path(path)
    need = [params_col, tokens_col, loss_col] + ([flops_col] if flops_col else []) + list(extra_cols)
    if not path.is_file():
        raise InputError(f"{path}: no such file (expected a CSV with columns {','.join(need)})")
    try:
        frame = pd.read_csv(path)
    except Exception as err:  # pandas raises several types for malformed text
        raise InputError(f"{path}: not a readable CSV ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(need)} "
                         f"(found {', '.join(frame.columns) or 'none'})")
    if frame.empty:
        raise InputError(f"{path}: has a header but no data rows")
    for col in need:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() | ~np.isfinite(values) | (values <= 0)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(f"{path}: column {col} must hold positive finite numbers; "
                             f"data row {row + 1} has {_plain(frame[col].iloc[row])!r}")
        frame[col] = values.astype(float)
    if group_col is not None and group_col in frame.columns:
        frame[group_col] = frame[group_col].astype(str)
    return frame


def _clean(x):
    """JSON-safe float (NaN/inf become None)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _fit_one(N, D, L, n_bootstrap: int, seed: int, delta: float) -> dict:
    fit = fit_lnd(N, D, L, delta=delta)
    out = {k: _clean(v) if isinstance(v, float) else v for k, v in fit.to_dict().items()}
    if n_bootstrap > 0:
        boot = bootstrap_lnd(N, D, L, fit=fit, n_resamples=n_bootstrap, seed=seed, delta=delta)
        out["intervals"] = {p: {k: _clean(v) for k, v in iv.items()} for p, iv in boot.intervals.items()}
        out["n_bootstrap"] = boot.n_resamples
        out["n_bootstrap_failed"] = boot.n_failed
    else:
        out["intervals"] = {}
        out["n_bootstrap"] = 0
        out["n_bootstrap_failed"] = 0
    out["not_identified"] = not_identified(out, out["intervals"], float(np.min(L)))
    return out


def _fit_one_isoflop(C, N, L, n_bootstrap: int, seed: int, window) -> dict:
    fit = fit_isoflop(C, N, L, n_bootstrap=n_bootstrap, seed=seed, skip_refused=True, window=window)
    d = fit.to_dict()
    used = [{"flops": p["flops"], "n_runs": p["n_runs"], "n_opt": p["n_opt"], "log_n_opt_se": p["log_n_opt_se"],
             "loss_opt": p["loss_opt"]} for p in d["profiles"]]
    keys = ("a", "k", "b", "k_d", "a_se", "intervals", "interval_method", "weighting", "sigma", "chi2", "window",
            "n_bootstrap", "n_bootstrap_failed", "bootstrap_intervals")
    return _json({**{k: d[k] for k in keys}, "approach": 2, "budgets_used": used, "budgets_refused": d["refused"]})


def _json(x):
    if isinstance(x, dict):
        return {k: _json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json(v) for v in x]
    return _clean(x) if isinstance(x, float) else x


def fit_points_csv(path, params_col: str = "params", tokens_col: str = "tokens", loss_col: str = "loss",
                   group_col: str | None = "group", n_bootstrap: int = 200, seed: int = 0,
                   delta: float = HUBER_DELTA, approach: int = 3, flops_col: str = "flops",
                   window: float | None = None) -> dict:
    """Fit L(N, D) = E + A/N**alpha + B/D**beta to a CSV; return a JSON-able dict.

    Without a group column (or with ``group_col=None``) the result is one fit:
    ``{E, A, B, alpha, beta, a, b, G, objective, n_points, huber_delta,
       intervals: {E|A|B|alpha|beta|a|b|G: {p2.5, p10, p90, p97.5}}, n_bootstrap, n_bootstrap_failed,
       not_identified: [{param, why}] (``analysis.identification``), source, params_col}``.
    With a group column each group is fitted on its own and the result is
    ``{"groups": {name: <one fit as above, or {"error": message}>}, source, params_col}``;
    a group the fit refuses (e.g. one model size) records the refusal instead of aborting.
    ``approach=2`` fits IsoFLOP parabolas per budget (runs grouped by ``flops_col``, which must be
    present) and the vertex-variance-weighted regression N_opt = k C^a (``analysis.isoflop``):
    ``{a, k, b, k_d, a_se, intervals: {a|b|k: {p2.5, p97.5}} (analytic), interval_method, weighting,
       budgets_used: [{flops, n_runs, n_opt, log_n_opt_se, loss_opt}], budgets_refused: [{flops, error}],
       bootstrap_intervals (with n_bootstrap > 0), ...}``; ``window`` fits each parabola on the runs
    within that factor in N of the budget's best run.
    Raises InputError for a bad file or an approach other than 2 or 3; FitError (ValueError) when an
    ungrouped fit is refused.
    """
    if approach not in (2, 3):
        raise InputError(f"approach must be 2 (IsoFLOP) or 3 (L(N, D)), got {approach!r}")
    frame = read_points_csv(path, params_col, tokens_col, loss_col, group_col, flops_col if approach == 2 else None)
    meta = {"source": str(path), "params_col": params_col}
    cols = (params_col, tokens_col, loss_col) if approach == 3 else (flops_col, params_col, loss_col)

    def one(sub):
        a, b, c = (sub[col].to_numpy() for col in cols)
        return _fit_one(a, b, c, n_bootstrap, seed, delta) if approach == 3 else \
            _fit_one_isoflop(a, b, c, n_bootstrap, seed, window)

    if group_col is None or group_col not in frame.columns:
        return {**one(frame), **meta}
    groups = {}
    for name, sub in frame.groupby(group_col, sort=True):
        try:
            groups[str(name)] = one(sub)
        except FitError as err:
            groups[str(name)] = {"error": f"{type(err).__name__}: {err}"}
    return {"groups": groups, **meta}


def parse_base(text: str) -> BaseLaw:
    """`E,A,B,alpha,beta` (five positive numbers) as a BaseLaw; InputError naming --base otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 5 or not all(math.isfinite(v) and v > 0 for v in values):
        raise InputError(f"--base: expected five positive numbers {','.join(BASE_NAMES)}, got {text!r}")
    return BaseLaw(*values)


def fit_data_constrained_csv(path, base: str | None = None, params_col: str = "params", tokens_col: str = "tokens",
                             unique_col: str = "unique_tokens", loss_col: str = "loss", n_bootstrap: int = 200,
                             seed: int = 0, delta: float = HUBER_DELTA) -> dict:
    """Fit the data-constrained law (analysis.data_constrained) to a CSV with params, tokens, unique_tokens
    and loss columns; `base` is `E,A,B,alpha,beta` or None (fitted on the single-epoch rows). Returns
    {R_D_star, R_N_star, objective, intervals, identified, notes, base, n_points, ...}; InputError for a bad
    file, a bad --base or a fit the rows cannot support."""
    law = parse_base(base) if base is not None else None
    frame = read_points_csv(path, params_col, tokens_col, loss_col, None, extra_cols=(unique_col,))
    N, D, U, L = (frame[c].to_numpy() for c in (params_col, tokens_col, unique_col, loss_col))
    try:
        fit = fit_data_constrained(N, D, U, L, base=law, delta=delta, n_bootstrap=n_bootstrap, seed=seed)
    except FitError as err:
        raise InputError(f"{path}: {err}") from None
    out = fit.to_dict()
    out["intervals"] = {p: {k: _clean(v) for k, v in iv.items()} for p, iv in out["intervals"].items()}
    return {**out, "source": str(path), "params_col": params_col}
