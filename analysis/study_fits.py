"""Every fit a report shows, per group of finished runs, and their JSON form (fits.json).

Per group (runs sharing e.g. family, setup and variant): Approach 3 with bootstrap intervals,
which of its parameters the data pin down, and the allocation table at the study's budgets (none
from a fit that is not identified), Approach 2 (IsoFLOP parabolas budget by budget, vertices
weighted by their uncertainty), L(C) on the loss frontier, each downstream metric at the
lowest-loss run of every budget with its Wilson interval and the Q(C) trend it can or cannot
carry, and the extrapolation check. A fit that refuses is kept as a ``Refusal`` ("<Type>: <why>"),
never dropped, so figures and tables can say why it is missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from analysis.accuracy import CHANCE_PAIR, fit_metric_trend, wilson_interval
from analysis.allocation import allocation_from_fit, bootstrap_allocation
from analysis.compute_laws import compute_frontier, fit_loss_compute
from analysis.errors import FitError, TooFewPoints
from analysis.extrapolation import holdout_check
from analysis.fit_lnd import bootstrap_lnd, fit_lnd
from analysis.harvest import done_runs
from analysis.identification import describe, not_identified
from analysis.isoflop import fit_isoflop, group_budgets, isoflop_vertex
from analysis.reference import CUERVO_MARXER_SPEECH, LOSS_LAWS, SIMS_FIGURE1, figure1_metric, metric_laws_for

BUDGET_RTOL = 0.05
EXTRAPOLATE_BUDGETS = (10.0, 100.0)  # allocation rows beyond the largest budget, as multiples of it


@dataclass(frozen=True)
class Refusal:
    """A fit that refused; ``error`` is "<ErrorType>: <why>"."""

    error: str

    def to_dict(self) -> dict:
        return {"error": self.error}


def attempt(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, or a Refusal when it raises a FitError."""
    try:
        return fn(*args, **kwargs)
    except FitError as err:
        return Refusal(f"{type(err).__name__}: {err}")


def refused(x) -> bool:
    """True for a Refusal (or a missing fit)."""
    return x is None or isinstance(x, Refusal)


def metric_name(col: str) -> str:
    """Benchmark name of an ``eval_<name>`` column."""
    return col[len("eval_"):] if col.startswith("eval_") else col


def pairs_col(col: str) -> str:
    """Column holding the pair count behind an ``eval_<name>`` accuracy."""
    return "n_pairs_" + metric_name(col)


def references_for(col: str):
    """SIMS Figure-1 laws whose metric matches the column's benchmark (case-insensitive ssc / tsc)."""
    return metric_laws_for(metric_name(col).lower())


def group_label(keys: dict) -> str:
    """Readable group name: the non-empty key values joined by ' / ' ("all" when none)."""
    vals = [str(v) for v in keys.values() if v is not None and not (isinstance(v, float) and math.isnan(v))
            and str(v) not in ("", "None", "nan")]
    return " / ".join(vals) or "all"


@dataclass
class GroupFits:
    """All fits of one group. ``runs`` holds the group's finished runs with columns N, D, L, C, budget."""

    label: str
    keys: dict
    runs: object
    approach3: object = None
    bootstrap: object = None
    allocation: object = None
    profiles: list = field(default_factory=list)
    approach2: object = None
    frontier: object = None
    loss_law: object = None
    metric_frontiers: dict = field(default_factory=dict)
    metric_laws: dict = field(default_factory=dict)
    extrapolation: object = None
    unidentified: list = field(default_factory=list)  # Approach-3 parameters the data do not pin down


def identified(g: "GroupFits") -> bool:
    """True when Approach 3 ran and every parameter is pinned down (allocation may be drawn from it)."""
    return not refused(g.approach3) and not g.unidentified


@dataclass
class StudyFits:
    """Fits of every group plus what they share (budgets, columns, metric columns)."""

    groups: list
    budgets: np.ndarray
    params_col: str
    loss_col: str
    group_cols: tuple
    metric_cols: list
    n_runs: int
    n_done: int


def _allocation_table(fit, boot, flops) -> dict:
    """Allocation at each budget from the full fit, with 2.5/97.5 bootstrap bands when available."""
    al = allocation_from_fit(fit, flops)
    rows = {"flops": np.asarray(flops, float), "n_opt": al.n_opt, "d_opt": al.d_opt,
            "tokens_per_param": al.tokens_per_param, "loss_opt": al.loss_opt}
    if boot is not None and not refused(boot):
        for name, band in bootstrap_allocation(boot.samples, flops).items():
            for p, arr in band.items():
                rows[f"{name}_{p}"] = arr
    return rows


def _isoflop(runs, n_bootstrap: int, seed: int):
    """Per-budget parabolas (each may refuse) and Approach 2 on the budgets with an interior vertex."""
    profiles, good = [], []
    for b, sub in runs.groupby("budget", sort=True):
        c = float(np.exp(np.log(sub["C"]).mean()))
        profile = attempt(isoflop_vertex, sub["N"].to_numpy(), sub["L"].to_numpy(), c)
        profiles.append((c, profile))
        if not refused(profile):
            good.append(b)
    if len(good) < 2:
        return profiles, Refusal(f"TooFewPoints: Approach 2 needs at least 2 budgets with an interior IsoFLOP "
                                 f"minimum; got {len(good)} of {len(profiles)}")
    # the full fit leaves the refused budgets out itself and names them
    fit = attempt(fit_isoflop, runs["C"].to_numpy(), runs["N"].to_numpy(), runs["L"].to_numpy(),
                  n_bootstrap=n_bootstrap, seed=seed, budget_rtol=BUDGET_RTOL, skip_refused=True)
    return profiles, fit


def metric_points(runs, col: str, frontier_index) -> dict:
    """The accuracy of each budget's lowest-loss run (not the best accuracy, which would pick a point
    for its own noise), with its pair count and 95 % Wilson interval; budgets whose run lacks it drop."""
    idx = np.asarray(frontier_index, dtype=int)
    vals = runs[col].to_numpy(float)[idx]
    ncol = pairs_col(col)
    n = runs[ncol].to_numpy(float)[idx] if ncol in runs.columns else np.full(idx.size, np.nan)
    ok = np.isfinite(vals)
    lo, hi = wilson_interval(vals[ok], n[ok])
    return {"flops": runs["C"].to_numpy(float)[idx][ok], "value": vals[ok], "n": n[ok], "lo": lo, "hi": hi,
            "keys": [runs["key"].iloc[i] for i in idx[ok]], "chance": CHANCE_PAIR}


def fit_group(label: str, keys: dict, runs, budgets, metric_cols, n_bootstrap: int = 200, seed: int = 0,
              extrapolation: bool = True) -> GroupFits:
    """Run every fit on one group's runs (columns N, D, L, C, budget, key and the metric columns)."""
    g = GroupFits(label=label, keys=keys, runs=runs)
    N, D, L, C = (runs[c].to_numpy(float) for c in ("N", "D", "L", "C"))
    g.approach3 = attempt(fit_lnd, N, D, L)
    if not refused(g.approach3):
        g.bootstrap = (attempt(bootstrap_lnd, N, D, L, fit=g.approach3, n_resamples=n_bootstrap, seed=seed)
                       if n_bootstrap > 0 else None)
        ivs = g.bootstrap.intervals if g.bootstrap is not None and not refused(g.bootstrap) else None
        g.unidentified = not_identified(g.approach3.to_dict(), ivs, float(L.min()))
        top = float(budgets.max()) if len(budgets) else float(C.max())
        table_flops = np.concatenate([budgets, top * np.asarray(EXTRAPOLATE_BUDGETS)])
        g.allocation = (attempt(_allocation_table, g.approach3, g.bootstrap, table_flops) if identified(g) else
                        Refusal(f"NotIdentified: the data do not pin down {describe(g.unidentified)}; no "
                                f"allocation is drawn from this fit"))
    g.profiles, g.approach2 = _isoflop(runs, n_bootstrap, seed) if len(runs) else ([], Refusal(
        "TooFewPoints: no finished runs"))
    if len(runs):
        fc, fl, idx = compute_frontier(C, L, False, BUDGET_RTOL)
        g.frontier = {"flops": fc, "loss": fl, "index": idx}
        g.loss_law = attempt(fit_loss_compute, fc, fl)
    else:
        g.loss_law = Refusal("TooFewPoints: no finished runs")
    for col in metric_cols:
        if g.frontier is None or not np.isfinite(runs[col].to_numpy(float)).any():
            g.metric_laws[col] = Refusal(f"TooFewPoints: no run of this group reports {col}")
            continue
        pts = metric_points(runs, col, g.frontier["index"])
        g.metric_frontiers[col] = pts
        g.metric_laws[col] = attempt(fit_metric_trend, pts["flops"], pts["value"], pts["n"], pts["chance"])
    if extrapolation:
        g.extrapolation = attempt(holdout_check, N, D, L, C, keys=runs["key"].tolist(), budget_rtol=BUDGET_RTOL) \
            if len(runs) else Refusal("TooFewPoints: no finished runs")
    return g


def fit_study(frame, params_col: str = "params_total", loss_col: str = "val_loss_speech",
              group_cols=("family", "setup", "variant"), n_bootstrap: int = 200, seed: int = 0,
              extrapolation: bool = True) -> StudyFits:
    """Fit every group of DONE runs in a harvested frame (``analysis.harvest.harvest_results``).

    N is ``params_col``, D is ``tokens``, C is ``flops``, the loss is ``loss_col``. Budgets are
    shared by all groups: runs whose FLOPs agree within 5 % form one budget. Group columns
    missing from the frame are ignored; empty values (e.g. no variant) form their own group.
    """
    group_cols = tuple(c for c in group_cols if c in frame.columns)
    n_runs = int(len(frame))
    need = [params_col, "tokens", "flops", loss_col]
    done = done_runs(frame, *need)
    if not set(need) <= set(done.columns):  # e.g. an empty harvest: no columns at all
        done = done.iloc[0:0].reindex(columns=list(done.columns) + [c for c in need if c not in done.columns])
    done = done[(done[need] > 0).all(axis=1)]
    metric_cols = sorted(c for c in done.columns if c.startswith("eval_") and done[c].notna().any())
    runs = done.assign(N=done[params_col].astype(float), D=done["tokens"].astype(float),
                       L=done[loss_col].astype(float), C=done["flops"].astype(float))
    if len(runs):
        runs = runs.assign(budget=group_budgets(runs["C"].to_numpy(), BUDGET_RTOL))
        budgets = np.array([float(np.exp(np.log(sub["C"]).mean())) for _, sub in runs.groupby("budget", sort=True)])
    else:
        runs = runs.assign(budget=np.array([], dtype=int))
        budgets = np.array([])
    groups = []
    if len(runs):
        by = list(group_cols) if group_cols else (lambda _: "all")
        for values, sub in runs.groupby(by, sort=True, dropna=False):
            values = values if isinstance(values, tuple) else (values,)
            keys = {c: (None if _missing(v) else v) for c, v in zip(group_cols, values)} if group_cols else {}
            groups.append(fit_group(group_label(keys), keys, sub.reset_index(drop=True), budgets, metric_cols,
                                    n_bootstrap, seed, extrapolation))
    return StudyFits(groups=groups, budgets=budgets, params_col=params_col, loss_col=loss_col,
                     group_cols=group_cols, metric_cols=metric_cols, n_runs=n_runs, n_done=int(len(runs)))


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


# ----------------------------------------------------------------------------- JSON


def jsonable(x):
    """Plain JSON types: numpy -> Python, NaN/inf -> None, tuples -> lists, dataclass-likes via to_dict."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [jsonable(v) for v in x.tolist()]
    if hasattr(x, "to_dict"):
        return jsonable(x.to_dict())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def _approach3_json(g: GroupFits):
    if refused(g.approach3):
        return g.approach3.to_dict()
    out = {**g.approach3.to_dict(), "not_identified": g.unidentified}
    if g.bootstrap is None:
        out.update(intervals={}, n_bootstrap=0, n_bootstrap_failed=0)
    elif refused(g.bootstrap):
        out["bootstrap"] = g.bootstrap.to_dict()
    else:
        out.update(g.bootstrap.to_dict())
        out["n_bootstrap_failed"] = out.pop("n_failed")
        out["n_bootstrap"] = out.pop("n_resamples")
    return out


def _allocation_json(g: GroupFits, budgets):
    if refused(g.approach3):
        return {"error": "no Approach-3 fit (" + g.approach3.error + ")"}
    if refused(g.allocation):
        return g.allocation.to_dict()
    table = g.allocation
    rows = []
    for i, c in enumerate(table["flops"]):
        row = {k: v[i] for k, v in table.items()}
        row["extrapolated"] = bool(c > budgets.max() * (1 + BUDGET_RTOL)) if len(budgets) else True
        rows.append(row)
    return rows


def _approach2_json(g: GroupFits):
    dropped = [{"flops": c, **p.to_dict()} for c, p in g.profiles if refused(p)]
    return {**g.approach2.to_dict(), "dropped_budgets": dropped}


def group_json(g: GroupFits, budgets) -> dict:
    """fits.json entry of one group."""
    return jsonable({
        "group": g.keys,
        "n_runs": int(len(g.runs)),
        "budgets": sorted({float(np.exp(np.log(s["C"]).mean())) for _, s in g.runs.groupby("budget")}),
        "approach3": _approach3_json(g),
        "allocation": _allocation_json(g, budgets),
        "approach2": _approach2_json(g),
        "frontier": ({"flops": g.frontier["flops"], "loss": g.frontier["loss"],
                      "keys": [g.runs["key"].iloc[i] for i in g.frontier["index"]]} if g.frontier else None),
        "loss_compute": g.loss_law,
        "metric_laws": {metric_name(c): law for c, law in g.metric_laws.items()},
        "metric_points": {metric_name(c): [{"flops": f, "accuracy": v, "n_pairs": n, "p2.5": lo, "p97.5": hi, "key": k}
                                           for f, v, n, lo, hi, k in zip(p["flops"], p["value"], p["n"], p["lo"],
                                                                          p["hi"], p["keys"])]
                          for c, p in g.metric_frontiers.items()},
        "extrapolation": g.extrapolation if g.extrapolation is not None else {"error": "not run (disabled)"},
    })


def comparisons(study: StudyFits) -> list[dict]:
    """Pairs of groups that differ in exactly one group column (family, setup or variant).

    Each entry compares the Approach-3 allocation exponent a (N_opt ~ C^a) with its 95 % bootstrap
    interval and the tokens per parameter at the largest budget: the paper's comparisons
    (TextLM families, interleaved vs textless, with/without synthetic data).
    """
    out = []
    gs = study.groups
    for i in range(len(gs)):
        for j in range(i + 1, len(gs)):
            diff = [c for c in study.group_cols if gs[i].keys.get(c) != gs[j].keys.get(c)]
            if len(diff) != 1:
                continue
            entry = {"differs_in": diff[0], "groups": [gs[i].label, gs[j].label],
                     "values": [gs[i].keys.get(diff[0]), gs[j].keys.get(diff[0])]}
            fits = [gs[i], gs[j]]
            if any(refused(g.approach3) for g in fits):
                entry["error"] = "an Approach-3 fit refused; nothing to compare"
                out.append(jsonable(entry))
                continue
            if not all(identified(g) for g in fits):
                entry["error"] = ("NotIdentified: Approach 3 does not pin down its parameters in "
                                  + " and ".join(g.label for g in fits if g.unidentified) + " (see its section)")
                out.append(jsonable(entry))
                continue
            entry["a"] = [g.approach3.a for g in fits]
            ivs = [_interval(g, "a") for g in fits]
            entry["a_p2.5"] = [iv[0] for iv in ivs]
            entry["a_p97.5"] = [iv[1] for iv in ivs]
            if all(np.isfinite(iv).all() for iv in ivs):
                entry["intervals_overlap"] = bool(ivs[0][0] <= ivs[1][1] and ivs[1][0] <= ivs[0][1])
            if len(study.budgets):
                c = float(study.budgets.max())
                entry["at_flops"] = c
                entry["tokens_per_param"] = [float(allocation_from_fit(g.approach3, c).tokens_per_param) for g in fits]
            out.append(jsonable(entry))
    return out


def _interval(g: GroupFits, name: str):
    if g.bootstrap is None or refused(g.bootstrap):
        return np.array([np.nan, np.nan])
    iv = g.bootstrap.intervals.get(name, {})
    return np.array([iv.get("p2.5", np.nan), iv.get("p97.5", np.nan)], float)


def references_json(metric_cols) -> dict:
    """The published laws a report compares against, with their allocation exponents."""
    loss = {name: {"E": law.E, "A": law.A, "B": law.B, "alpha": law.alpha, "beta": law.beta, "a": law.a,
                   "b": law.b, "source": law.source, "n_convention": law.n_convention}
            for name, law in LOSS_LAWS.items()}
    names = {figure1_metric(metric_name(c)) for c in metric_cols}
    metric = [{"name": m.name, "metric": m.metric, "setup": m.setup, "k": m.k, "gamma": m.gamma, "source": m.source,
               "flops_range": list(m.flops_range)} for m in SIMS_FIGURE1 if m.metric in names]
    return {"loss_laws": loss, "textless_reference": CUERVO_MARXER_SPEECH.name, "metric_laws": metric}


def collect_refusals(tree, path: str = "") -> list[dict]:
    """Every {"error": ...} inside a fits.json tree, with its dotted location."""
    found = []
    if isinstance(tree, dict):
        if set(tree) >= {"error"} and isinstance(tree["error"], str):
            found.append({"where": path, "error": tree["error"]})
        for k, v in tree.items():
            if k != "error":
                found += collect_refusals(v, f"{path}.{k}" if path else str(k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            found += collect_refusals(v, f"{path}[{i}]")
    return found


def study_json(study: StudyFits, title: str = "") -> dict:
    """The whole fits.json: settings, budgets, every group, comparisons, references, refusals."""
    out = jsonable({
        "title": title,
        "params_col": study.params_col,
        "loss_col": study.loss_col,
        "group_cols": list(study.group_cols),
        "metric_cols": study.metric_cols,
        "n_runs": study.n_runs,
        "n_done": study.n_done,
        "budgets": study.budgets,
        "groups": {g.label: group_json(g, study.budgets) for g in study.groups},
        "comparisons": comparisons(study),
        "references": references_json(study.metric_cols),
    })
    out["refusals"] = collect_refusals({"groups": out["groups"]})
    if not study.groups:
        out["refusals"].append({"where": "groups", "error": f"{TooFewPoints.__name__}: no finished run has "
                                f"{study.params_col}, tokens, flops and {study.loss_col}"})
    return out
