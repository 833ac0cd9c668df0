"""The analysis functions ``launch.py`` calls: one call per command, plain data in and out.

* ``report_study``: harvest a study's run directories, write the report, optionally log it to MLflow.
* ``recommend`` / ``format_recommendation``: what to train at a budget, from the study's fits.
* ``fit_csv``: Approach 3 on a CSV of points (``analysis.fitcsv.fit_points_csv``).
Errors a user can cause are ``analysis.errors.InputError`` with a one-line message.
"""

from __future__ import annotations

import json
from pathlib import Path

from analysis.errors import FitError, InputError
from analysis.fit_lnd import bootstrap_lnd, fit_lnd
from analysis.fitcsv import fit_points_csv
from analysis.harvest import done_runs, harvest_curves, harvest_results, other_runs
from analysis.identification import describe, not_identified
from analysis.mlflow_io import log_report
from analysis.recommendation import recommend_at_budget
from analysis.report import report_files, write_report
from analysis.study_fits import group_label

MIN_RUNS = 6  # Approach 3 fits 5 parameters: fewer finished runs cannot give a report worth reading
GROUP_COLS = ("family", "setup", "variant")

__all__ = ["report_study", "recommend", "format_recommendation", "fit_csv"]


def _harvest(study_dir: Path, params_col: str, loss_col: str, need: int, keys=None):
    """The study's runs and its DONE runs with the needed columns; InputError when too few are DONE.
    With ``keys`` (the cell keys of the study file), only run directories of those keys count."""
    study_dir = Path(study_dir)
    frame = harvest_results(study_dir.parent, study_dir.name, keys=keys)
    done = done_runs(frame, params_col, "tokens", "flops", loss_col) if len(frame) else frame
    if len(done) < need:
        n_state = int((frame["state"] == "DONE").sum()) if len(frame) else 0
        others = other_runs(study_dir, keys)
        left = f"; {len(others)} run dirs not in this study file left out (--all-cells)" if others else ""
        raise InputError(f"{study_dir}: {len(done)} of {len(frame)} runs are DONE with {params_col}, tokens, flops "
                         f"and {loss_col} ({n_state} DONE in all); at least {need} are needed to fit "
                         f"L(N, D) (5 parameters){left}")
    return frame, done


def report_study(study_dir: Path, out_dir: Path | None = None, tracking_uri: str | None = None,
                 experiment: str | None = None, params_col: str = "params_total",
                 loss_col: str = "val_loss_speech", n_bootstrap: int = 200, seed: int = 0,
                 cell_keys=None, wsd=None) -> dict:
    """Write the scaling report of a study directory; log it to MLflow when ``tracking_uri`` is given.

    Harvests ``study_dir``'s run directories (DONE cells count), writes the report into
    ``out_dir`` (default ``study_dir/report``) and, with a tracking URI, logs it as a new run
    named ``report`` in ``experiment`` (default: the study directory's name).
    Returns {"out_dir", "report_md", "report_html", "fits_json", "figures": [png paths],
    "mlflow_run_id" (None without a URI), "n_runs" (DONE runs used)}.
    With ``cell_keys`` (a set of cell keys: the study file's cells), other run directories are left out
    and named in "not_in_study".
    Raises InputError (one line) when fewer than 6 runs are DONE with the needed columns.
    """
    study_dir = Path(study_dir)
    frame, done = _harvest(study_dir, params_col, loss_col, MIN_RUNS, cell_keys)
    out = Path(out_dir) if out_dir is not None else study_dir / "report"
    curves = harvest_curves(study_dir.parent, study_dir.name, keys=cell_keys)
    write_report(frame, curves, out, params_col=params_col, loss_col=loss_col, group_cols=GROUP_COLS,
                 title=f"Scaling report: {study_dir.name}", n_bootstrap=n_bootstrap, seed=seed, wsd=wsd)
    run_id = None
    if tracking_uri:

        fits = json.loads((out / "fits.json").read_text())
        run_id = log_report(tracking_uri, experiment or study_dir.name, out, fits)
    files = report_files(out)
    return {"out_dir": out, "report_md": out / "report.md", "report_html": out / "report.html",
            "fits_json": out / "fits.json", "figures": [p for p in files if p.suffix == ".png"],
            "mlflow_run_id": run_id, "n_runs": int(len(done)), "not_in_study": other_runs(study_dir, cell_keys)}


def _same(a, b) -> bool:
    """Group labels equal, None and NaN alike (the base study has no variant)."""
    return (None if a is None or a != a else str(a)) == (None if b is None or b != b else str(b))


def _matches(row, group: dict) -> bool:
    return all(str(row.get(k)) == str(v) for k, v in group.items())


def recommend(study_dir: Path, budget: float, members: list[dict], params_col: str = "params_total",
              loss_col: str = "val_loss_speech", group: dict | None = None, n_bootstrap: int = 200,
              seed: int = 0, cell_keys=None) -> dict:
    """What to train with ``budget`` FLOPs, from Approach 3 fitted to the study's runs, per group.

    Runs are grouped by family, setup and variant; ``group`` (e.g. {"setup": "interleaved"})
    keeps only the runs matching all its items. Each group gets N_opt, D_opt, tokens per
    parameter and predicted loss at ``budget`` with 2.5/97.5 % bootstrap intervals, and for
    the group's own members (``members``: dicts with family, member, params_total,
    params_nonembedding and, when given, setup and variant, which must then equal the group's: a
    textless twin counts its own vocabulary) the one nearest N_opt in log space, trained for
    budget / (6 N_member) tokens, and its predicted loss. N is ``params_col`` for both the fit and
    the members. ``cell_keys`` (a set of cell keys) leaves out run directories of other cells.
    Returns {"budget", "params_col", "loss_col", "largest_study_budget", "groups": {label: ... or
    {"error": ...}}, "not_in_study": [run dir names left out]}. Raises InputError when fewer than 6
    matching runs are DONE.
    """
    frame, done = _harvest(Path(study_dir), params_col, loss_col, MIN_RUNS, cell_keys)
    if group:
        unknown = [k for k in group if k not in done.columns]
        if unknown:
            raise InputError(f"group key(s) {', '.join(unknown)} are not run columns (try {', '.join(GROUP_COLS)})")
        done = done[[_matches(r, group) for r in done.to_dict("records")]]
        if len(done) < MIN_RUNS:
            raise InputError(f"{study_dir}: {len(done)} DONE runs match {group}; at least {MIN_RUNS} are needed")
    cols = [c for c in GROUP_COLS if c in done.columns]
    out = {"budget": float(budget), "params_col": params_col, "loss_col": loss_col,
           "largest_study_budget": float(done["flops"].max()), "groups": {},
           "not_in_study": other_runs(Path(study_dir), cell_keys)}
    for values, sub in done.groupby(cols, sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        keys = {c: (None if v is None or v != v else v) for c, v in zip(cols, values)}
        label = group_label(keys)
        N, D, L = (sub[c].to_numpy(float) for c in (params_col, "tokens", loss_col))
        try:
            fit = fit_lnd(N, D, L)
            boot = bootstrap_lnd(N, D, L, fit=fit, n_resamples=n_bootstrap, seed=seed) if n_bootstrap else None
        except ValueError as err:  # FitError and friends: record why this group has no answer
            out["groups"][label] = {"group": keys, "n_runs": int(len(sub)), "error": f"{type(err).__name__}: {err}"}
            continue
        own = [m for m in members if all(_same(m[c], keys[c]) for c in cols if c in m)]
        unpinned = not_identified(fit.to_dict(), boot.intervals if boot else None, float(L.min()))
        if unpinned:  # the report's rule: no allocation is drawn from a fit the data do not pin down
            out["groups"][label] = {"group": keys, "n_runs": int(len(sub)), "not_identified": unpinned,
                                    "error": f"NotIdentified: the data do not pin down {describe(unpinned)}",
                                    "own_members": [{"family": m.get("family"), "member": m.get("member"),
                                                     "params": m.get(params_col)} for m in own]}
            continue
        rec = recommend_at_budget(fit, float(budget), own, params_col, boot.samples if boot else None)
        out["groups"][label] = {"group": keys, "n_runs": int(len(sub)), "a": fit.a, "b": fit.b, **rec}
    return out


def fit_csv(path, **options) -> dict:
    """``fit_points_csv`` for the command line: a fit refused for the file's points (fewer than 6, one
    model size, ...) is an InputError naming the file, like a malformed file."""
    try:
        return fit_points_csv(path, **options)
    except FitError as err:
        raise InputError(f"{path}: {err}") from None


def _g(x, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if isinstance(x, (int, float)) and x == x else "–"


def _iv(d: dict, name: str, digits: int = 3) -> str:
    iv = d.get("intervals", {}).get(name, {})
    lo, hi = iv.get("p2.5"), iv.get("p97.5")
    return f" [{_g(lo, digits)}, {_g(hi, digits)}]" if lo is not None and hi is not None else ""


def format_recommendation(d: dict) -> str:
    """Human-readable text of ``recommend``'s result (one block per group)."""
    lines = [f"Compute budget {d['budget']:.3g} FLOPs (N = {d['params_col']}, loss = {d['loss_col']}; "
             f"intervals 2.5-97.5 %)"]
    if d["budget"] > d.get("largest_study_budget", float("inf")) * 1.05:
        lines.append(f"note: {d['budget'] / d['largest_study_budget']:.3g}x the study's largest budget "
                     f"({d['largest_study_budget']:.3g}): an extrapolation")
    for label, g in d["groups"].items():
        lines.append("")
        if "error" in g:
            lines.append(f"{label} ({g['n_runs']} runs): no fit ({g['error']})")
            if g.get("own_members"):  # what the group could train, counted in its own setup and variant
                lines.append("  members: " + ", ".join(f"{m['family']}/{m['member']} ({_g(m['params'])} params)"
                                                      for m in g["own_members"]))
            continue
        lines.append(f"{label} ({g['n_runs']} runs, N_opt ~ C^{g['a']:.3f}):")
        lines.append(f"  N_opt {_g(g['n_opt'])}{_iv(g, 'n_opt')}   D_opt {_g(g['d_opt'])}{_iv(g, 'd_opt')} tokens")
        lines.append(f"  tokens/param {_g(g['tokens_per_param'])}{_iv(g, 'tokens_per_param')}   "
                     f"predicted loss {g['loss']:.4g}{_iv(g, 'loss', 4)}")
        for family, m in g["members"].items():
            iv = m.get("predicted_loss_interval", {})
            band = f" [{_g(iv.get('p2.5'), 4)}, {_g(iv.get('p97.5'), 4)}]" if iv else ""
            lines.append(f"  {family}: {m['member']} ({_g(m['params'])} params, {m['n_opt_ratio']:.2f}x N_opt) "
                         f"for {_g(m['tokens'])} tokens ({_g(m['tokens_per_param'])}/param), "
                         f"predicted loss {m['predicted_loss']:.4g}{band}")
    return "\n".join(lines)
