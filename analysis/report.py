"""A study's scaling report: six figures, fits.json, report.md and a self-contained report.html.

``write_report(frame, curves, out_dir)`` takes the harvested runs (``harvest_results``) and
training curves (``harvest_curves``, or None), fits every group (``analysis.study_fits``),
draws the figures (``analysis.figures``) and writes the text from one list of blocks
(``analysis.document``). Fits that refuse are written down, never silently dropped: as
``{"error": "<Type>: <why>"}`` in fits.json, a note inside the figure, and a line in the report.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import numpy as np

from analysis.comparison import comparison_blocks, setup_comparison
from analysis.crossmodal import cross_modal, cross_modal_blocks
from analysis.document import Bullets, Figure, Heading, Para, Table, to_html, to_markdown
from analysis.wsd_comparison import FIGURE as WSD_FIGURE, blocks as wsd_blocks, figure as wsd_figure
from analysis.figures import FIGURES, draw_all
from analysis.identification import describe
from analysis.reference import SIMS_FIGURE1, drawable_spans, figure1_metric
from analysis.repetition_report import draw_repetition, repetition_blocks, repetition_summary
from analysis.study_fits import fit_study, jsonable, metric_name, study_json

REPORT_FILES = ("report.md", "report.html", "fits.json")


# ----------------------------------------------------------------------------- number formatting


def _ok(x) -> bool:
    return x is not None and isinstance(x, (int, float, np.floating, np.integer)) and np.isfinite(x)


def _g(x, digits: int = 3) -> str:
    """Compact general format: 1.03e8 rather than 1.03e+08."""
    return re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", f"{x:.{digits}g}") if _ok(x) else "–"


def _f(x, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if _ok(x) else "–"


def _pct(x) -> str:
    return f"{100 * x:.2g}%" if _ok(x) else "–"


def _iv(lo, hi, fmt=_g) -> str:
    return f"[{fmt(lo)}, {fmt(hi)}]" if _ok(lo) and _ok(hi) else ""


def _with_iv(value, ivs: dict, name: str, fmt=_g) -> str:
    iv = ivs.get(name, {}) if ivs else {}
    band = _iv(iv.get("p2.5"), iv.get("p97.5"), fmt)
    return f"{fmt(value)} {band}".strip()


def _err(d) -> str | None:
    return d.get("error") if isinstance(d, dict) and isinstance(d.get("error"), str) else None


# ----------------------------------------------------------------------------- sections


def _summary_section(fits: dict) -> list:
    budgets = ", ".join(_g(c, 2) for c in fits["budgets"]) or "none"
    return [
        Para(f"Runs: {fits['n_done']} finished of {fits['n_runs']} in the study. N = `{fits['params_col']}`, "
             f"D = `tokens`, C = `flops` as recorded by each run, loss = `{fits['loss_col']}`. Runs are grouped "
             f"by {', '.join(f'`{c}`' for c in fits['group_cols']) or 'nothing'} into {len(fits['groups'])} "
             f"group(s). Compute budgets (FLOPs): {budgets}."),
        Para("Intervals are 95 %: Approach 3's are 2.5-97.5 % percentiles over bootstrap resamples of the runs; "
             "Approach 2's come from its weighted regression (each IsoFLOP vertex weighted by its delta-method "
             "variance); accuracies carry Wilson intervals over their benchmark's pairs. a is the exponent of "
             "N_opt ~ C^a and b = 1 - a that of D_opt ~ C^b under C = 6ND. A law is drawn or extrapolated only "
             "where the data pin it down; otherwise the report says so.", css="muted"),
    ]


def _gamma_txt(law: dict) -> str:
    if _err(law) or not law:
        return "refused"
    if not law.get("law"):
        return "no trend"
    return f"{_f(law['gamma'], 4)} [{_f(law['gamma_lo'], 4)}, {_f(law['gamma_hi'], 4)}]"


def _comparison_rows(fits: dict) -> list:
    metrics = [metric_name(c) for c in fits["metric_cols"]]
    header = ["group", "runs", "a [95%]", "b", "alpha", "beta", "E", "D/N at largest C", "Approach 2 a [95%]",
              "L(C) gamma", *[f"Q gamma {m} [95%]" for m in metrics], "held-out error mean / max"]
    rows = []
    top = max(fits["budgets"]) if fits["budgets"] else None
    for label, g in fits["groups"].items():
        a3, a2 = g["approach3"], g["approach2"]
        ivs = a3.get("intervals", {})
        if _err(a3):
            a_txt, rest = "refused", ["–"] * 5
        else:
            a_txt = _with_iv(a3["a"], ivs, "a", _f) + (" not identified" if a3.get("not_identified") else "")
            dn = next((r["tokens_per_param"] for r in g["allocation"] if top and abs(r["flops"] / top - 1) < 1e-9),
                      None) if isinstance(g["allocation"], list) else None
            rest = [_f(a3["b"]), _f(a3["alpha"]), _f(a3["beta"]), _g(a3["E"]), _g(dn)]
        a2_txt = "refused" if _err(a2) else _with_iv(a2["a"], a2.get("intervals", {}), "a", _f)
        lc = g["loss_compute"]
        q = [_gamma_txt(g["metric_laws"].get(m, {})) for m in metrics]
        ex = g["extrapolation"]
        ex3 = ex.get("approach3", {}) if not _err(ex) else {"error": ex["error"]}
        ex_txt = "refused" if _err(ex3) else f"{_pct(ex3['mean_rel_error'])} / {_pct(ex3['max_rel_error'])}"
        rows.append([label, g["n_runs"], a_txt, *rest, a2_txt, "refused" if _err(lc) else _f(lc["gamma"], 4),
                     *q, ex_txt])
    for name, law in fits["references"]["loss_laws"].items():
        rows.append([f"{name} (published)", "–", _f(law["a"]), _f(law["b"]), _f(law["alpha"]), _f(law["beta"]),
                     _g(law["E"]), "–", "–", "–", *["–" for _ in metrics], "–"])
    return [Table(tuple(header), tuple(tuple(r) for r in rows))]


def _pairs_section(fits: dict) -> list:
    if not fits["comparisons"]:
        return [Para("No two groups differ in exactly one of the group columns, so there is no pairwise "
                     "comparison.", css="muted")]
    rows = []
    for c in fits["comparisons"]:
        g1, g2 = c["groups"]
        if "error" in c:
            rows.append((c["differs_in"], f"{g1} vs {g2}", "–", "–", "–", c["error"]))
            continue
        a = " vs ".join(_f(x) for x in c["a"])
        ivs = " vs ".join(_iv(lo, hi, _f) or "–" for lo, hi in zip(c["a_p2.5"], c["a_p97.5"]))
        overlap = {True: "overlap (not distinguishable)", False: "disjoint (differ)"}.get(c.get("intervals_overlap"),
                                                                                          "no intervals")
        dn = " vs ".join(_g(x) for x in c.get("tokens_per_param", [])) or "–"
        rows.append((c["differs_in"], f"{g1} vs {g2}", a, ivs, dn, overlap))
    return [Para("Pairs of groups that differ in one column only (TextLM family, setup, or data variant): the "
                 "allocation exponent a with its 95 % interval and the compute-optimal tokens per parameter at "
                 "the largest budget."),
            Table(("differs in", "groups", "a", "a 95%", "D/N at largest C", "intervals"), tuple(rows))]


def _approach3_section(fits: dict) -> list:
    rows = []
    for label, g in fits["groups"].items():
        a3 = g["approach3"]
        if _err(a3):
            rows.append((label, f"refused: {a3['error']}", *[""] * 8))
            continue
        ivs = a3.get("intervals", {})
        ni = a3.get("not_identified") or []
        rows.append((label, _with_iv(a3["E"], ivs, "E"), _with_iv(a3["A"], ivs, "A"), _with_iv(a3["B"], ivs, "B"),
                     _with_iv(a3["alpha"], ivs, "alpha", _f), _with_iv(a3["beta"], ivs, "beta", _f),
                     _g(a3["G"]), a3["n_points"],
                     f"{a3.get('n_bootstrap', 0)} ({a3.get('n_bootstrap_failed', 0)} failed)",
                     ", ".join(d["param"] for d in ni) or "none"))
    out = [Para("Fitted by the Chinchilla/Epoch recipe: Huber loss (delta 1e-3) on log loss, summed over runs, "
                "from the 4,500-start grid. A parameter is not identified when E is driven to zero, a scale "
                "parameter's 95% interval spans more than three decades, or an exponent's is wider than 1 "
                "(0.5 for a and b); no allocation, extrapolation or comparison is drawn from such a fit."),
           Table(("group", "E", "A", "B", "alpha", "beta", "G", "runs", "bootstrap (failed)", "not identified"),
                 tuple(rows))]
    for label, g in fits["groups"].items():
        ni = g["approach3"].get("not_identified") if not _err(g["approach3"]) else None
        if ni:
            out.append(Para(f"{label}: the data do not pin down {describe(ni)}.", css="refusal"))
    return out


def _allocation_section(fits: dict) -> list:
    out = []
    for label, g in fits["groups"].items():
        out.append(Heading(3, label))
        if _err(g["allocation"]):
            out.append(Para(f"No allocation: {g['allocation']['error']}", css="refusal"))
            continue
        rows = []
        for r in g["allocation"]:
            rows.append((_g(r["flops"], 2) + (" (extrapolated)" if r["extrapolated"] else ""),
                         f"{_g(r['n_opt'])} {_iv(r.get('n_opt_p2.5'), r.get('n_opt_p97.5'))}".strip(),
                         f"{_g(r['d_opt'])} {_iv(r.get('d_opt_p2.5'), r.get('d_opt_p97.5'))}".strip(),
                         f"{_g(r['tokens_per_param'])} "
                         f"{_iv(r.get('tokens_per_param_p2.5'), r.get('tokens_per_param_p97.5'))}".strip(),
                         f"{_g(r['loss_opt'], 4)} {_iv(r.get('loss_opt_p2.5'), r.get('loss_opt_p97.5'), _g)}".strip()))
        out.append(Table(("C (FLOPs)", "N_opt [95%]", "D_opt [95%]", "D/N [95%]", "predicted loss [95%]"),
                         tuple(rows)))
    return out


def _approach2_section(fits: dict) -> list:
    out = []
    for label, g in fits["groups"].items():
        a2 = g["approach2"]
        out.append(Heading(3, label))
        if _err(a2):
            out.append(Para(f"Approach 2 refused: {a2['error']}", css="refusal"))
        else:
            iv = a2.get("intervals", {}).get("a", {})
            band = _iv(iv.get("p2.5"), iv.get("p97.5"), _f)
            band = f"a 95% {band}, {a2.get('interval_method')}" if band else \
                f"a has no interval: {a2.get('interval_method')}"
            out.append(Para(f"N_opt = {_g(a2['k'])} C^{_f(a2['a'])} ({band}; vertices weighted by "
                            f"{a2.get('weighting')}), D_opt = {_g(a2['k_d'])} C^{_f(a2['b'])}, from {a2['n_budgets']} "
                            f"budgets."))
            out.append(Table(("C (FLOPs)", "runs", "N sampled", "N_opt (vertex) [95%]", "s.e. of ln N_opt", "D_opt",
                              "loss at vertex"),
                             tuple((_g(p["flops"], 2), p["n_runs"], f"{_g(p['n_min'], 2)} - {_g(p['n_max'], 2)}",
                                    f"{_g(p['n_opt'])} " + (_iv(p["n_opt"] * np.exp(-1.96 * p["log_n_opt_se"]),
                                                                p["n_opt"] * np.exp(1.96 * p["log_n_opt_se"]))
                                                            if _ok(p.get("log_n_opt_se")) else ""),
                                    _f(p.get("log_n_opt_se")), _g(p["d_opt"]), _g(p["loss_opt"], 4))
                                   for p in a2["profiles"])))
        for d in a2.get("dropped_budgets", []):
            out.append(Para(f"Budget C={_g(d['flops'], 2)} left out: {d['error']}", css="refusal"))
    out += [Heading(3, "Approach 2 and Approach 3 side by side"), _agreement_table(fits)]
    return out


def _agreement(a3: dict, a2: dict) -> tuple:
    """(a3 text, a2 text, verdict): agree when the difference of the two a's lies within 1.96 times the
    combined standard error (Approach 3's from its bootstrap interval's width / 3.92)."""
    if _err(a3):
        return "refused", "–", "cannot compare: Approach 3 refused"
    iv3 = a3.get("intervals", {}).get("a", {})
    t3 = _with_iv(a3["a"], a3.get("intervals", {}), "a", _f)
    if _err(a2):
        return t3, "refused", "cannot compare: Approach 2 refused"
    iv2 = a2.get("intervals", {}).get("a", {})
    t2 = f"{_f(a2['a'])} {_iv(iv2.get('p2.5'), iv2.get('p97.5'), _f)}".strip()
    if a3.get("not_identified"):
        return t3 + " not identified", t2, "cannot compare: Approach 3 does not pin down its parameters"
    if not (_ok(iv3.get("p2.5")) and _ok(iv3.get("p97.5")) and _ok(a2.get("a_se"))):
        return t3, t2, "cannot compare: an interval is missing"
    se = np.hypot((iv3["p97.5"] - iv3["p2.5"]) / 3.92, a2["a_se"])
    d = a3["a"] - a2["a"]
    word = "agree" if abs(d) <= 1.96 * se else "disagree"
    return t3, t2, f"{word}: difference {d:+.3f} [{d - 1.96 * se:+.3f}, {d + 1.96 * se:+.3f}]"


def _agreement_table(fits: dict):
    rows = [(label, *_agreement(g["approach3"], g["approach2"])) for label, g in fits["groups"].items()]
    return Table(("group", "a, Approach 3 [95%]", "a, Approach 2 [95%]", "do they agree?"), tuple(rows))


def _compute_laws_section(fits: dict) -> list:
    metrics = [metric_name(c) for c in fits["metric_cols"]]
    rows = []
    for label, g in fits["groups"].items():
        lc = g["loss_compute"]
        cells = ["refused" if _err(lc) else f"{_g(lc['E'], 4)} + {_g(lc['k'], 3)} C^-{_f(lc['gamma'], 4)}"]
        for m in metrics:
            law = g["metric_laws"].get(m, {})
            if _err(law):
                cells.append("refused")
            elif law.get("law"):
                cells.append(f"{_g(law['k'], 3)} C^{_f(law['gamma'], 4)} (gamma [{_f(law['gamma_lo'], 4)}, "
                             f"{_f(law['gamma_hi'], 4)}])")
            else:
                cells.append("no trend distinguishable from noise at this scale")
        rows.append((label, *cells))
    budgets = fits["budgets"]
    lo, hi = (min(budgets) / 2, max(budgets) * 2) if budgets else (1.0, 1.0)
    for setup in dict.fromkeys(ref.setup for ref in SIMS_FIGURE1):
        laws = {ref.metric: ref for ref in SIMS_FIGURE1 if ref.setup == setup}
        cells = [f"{laws[figure1_metric(m)].k} C^{laws[figure1_metric(m)].gamma}" if figure1_metric(m) in laws
                 else "–" for m in metrics]
        if any(c != "–" for c in cells):
            ref = next(iter(laws.values()))
            drawn = "drawn in metrics.png" if drawable_spans(ref.flops_range, lo, hi) else \
                "not drawn: more than a decade from this study's budgets"
            rows.append((f"SIMS Fig. 1 {setup} (published; fitted on about {_g(ref.flops_range[0], 2)}-"
                         f"{_g(ref.flops_range[1], 2)} FLOPs; {drawn})", "–", *cells))
    out = [Para("L(C) is fitted on the loss frontier (best run per budget) by least squares on log loss. Q(C) = "
                "k C^gamma is fitted to the accuracy of each budget's lowest-loss run by least squares on log "
                "accuracy, weighted by each point's binomial variance; it is called a law only when some point is "
                "above chance at 95% and gamma's 95% interval excludes 0."),
           Table(("group", "L(C) = E + k C^-gamma", *[f"Q(C) {m}" for m in metrics]), tuple(rows))]
    out += _metric_points_section(fits)
    return out


def _metric_points_section(fits: dict) -> list:
    """Every metric point the figure draws, with its interval, and each trend's verdict."""
    rows, verdicts = [], []
    for label, g in fits["groups"].items():
        for m, pts in (g.get("metric_points") or {}).items():
            for p in pts:
                iv = _iv(p.get("p2.5"), p.get("p97.5"), _f) or "no interval (pairs unknown)"
                n = f"{int(p['n_pairs'])}" if _ok(p.get("n_pairs")) else "?"
                above = ("yes" if _ok(p.get("p2.5")) and p["p2.5"] > 0.5 else "no") if _ok(p.get("p2.5")) else "?"
                rows.append((label, m, _g(p["flops"], 2), f"{_f(p['accuracy'])} {iv}", n, above))
            law = g["metric_laws"].get(m, {})
            if not _err(law) and law:
                verdicts.append(f"{m}, {label}: {law['verdict']}.")
    if not rows:
        return []
    return [Para("Every metric point drawn in metrics.png: the accuracy of the group's lowest-loss run at each "
                 "budget, its 95% Wilson interval over the benchmark's pairs, and whether that interval lies above "
                 "chance (0.5)."),
            Table(("group", "metric", "C (FLOPs)", "accuracy [95%]", "pairs", "above chance"), tuple(rows)),
            Bullets(tuple(verdicts))] if verdicts else [Table(("group", "metric", "C (FLOPs)", "accuracy [95%]",
                                                               "pairs", "above chance"), tuple(rows))]


def _extrapolation_section(fits: dict) -> list:
    rows = []
    for label, g in fits["groups"].items():
        ex = g["extrapolation"]
        if _err(ex):
            rows.append((label, f"refused: {ex['error']}", "", "", "", ""))
            continue
        a3, lc, no = ex["approach3"], ex["loss_compute"], ex["n_opt"]
        rows.append((label, _g(ex["held_out_flops"], 2), f"{ex['n_fit']} / {ex['n_held_out']}",
                     "refused" if _err(a3) else f"{_pct(a3['mean_rel_error'])} / {_pct(a3['max_rel_error'])}",
                     "refused" if _err(lc) else _pct(lc["rel_error"]),
                     "refused" if _err(no) else _f(no["ratio"])))
    return [Para("The runs of the largest budget are held out, Approach 3 and L(C) are refitted on the rest, and "
                 "the held-out runs are predicted: relative error |predicted - observed| / observed. The last "
                 "column compares the refitted N_opt at the held-out budget with that budget's IsoFLOP vertex."),
            Table(("group", "held-out C", "runs fit / held out", "L(N,D) error mean / max", "L(C) error",
                   "N_opt predicted / vertex"), tuple(rows))]


def _refusal_section(fits: dict) -> list:
    if not fits["refusals"]:
        return [Para("None: every fit ran.")]
    return [Bullets(tuple(f"`{r['where']}`: {r['error']}" for r in fits["refusals"]))]


def build_blocks(fits: dict, title: str) -> list:
    """The report as document blocks (shared by report.md and report.html)."""
    blocks = [Heading(1, title), *_summary_section(fits), *comparison_blocks(fits), *cross_modal_blocks(fits),
              Heading(2, "Groups side by side"), *_comparison_rows(fits),
              Heading(3, "Pairwise comparisons"), *_pairs_section(fits),
              Heading(2, "Figures")]
    for file, name in FIGURES:
        blocks.append(Figure(file, name, fits.get("figures", {}).get(file, "")))
    blocks += [Heading(2, "Approach 3: L(N, D) = E + A/N^alpha + B/D^beta"), *_approach3_section(fits),
               Heading(2, "Compute-optimal allocation at the study's budgets"), *_allocation_section(fits),
               Heading(2, "Approach 2: IsoFLOP vertices"), *_approach2_section(fits),
               Heading(2, "Laws in compute alone"), *_compute_laws_section(fits),
               Heading(2, "Extrapolation check"), *_extrapolation_section(fits),
               *repetition_blocks(fits.get("data_repetition")),   # issue 22: epochs, data-constrained law
               Heading(2, "Refused fits"), *_refusal_section(fits),
               Heading(2, "Caveats"),
               Bullets(("Published laws count parameters and losses differently (Cuervo & Marxer: speech-only "
                        "vocabulary; Chinchilla: all parameters; SIMS: the full text vocabulary), so compare "
                        "exponents, not levels.",
                        "The N convention of this report is the one named above; another convention "
                        "(e.g. `params_nonembedding`) moves the exponents.",
                        "fits.json beside this report holds every number shown here."))]
    return blocks


def write_report(frame, curves, out_dir, params_col: str = "params_total", loss_col: str = "val_loss_speech",
                 group_cols=("family", "setup", "variant"), title: str = "Scaling report",
                 n_bootstrap: int = 200, seed: int = 0, extrapolation: bool = True,
                 wsd: Optional[dict] = None) -> Path:
    """Fit, draw and write the report for the DONE runs of ``frame``; return report.md's path.

    Writes into ``out_dir`` (created if needed): the six PNGs of ``analysis.figures.FIGURES``,
    fits.json (every number, refusals as {"error": ...} and listed under "refusals"), report.md
    (links every PNG, one caption each, tables) and report.html (the same, PNGs embedded).
    ``curves`` is ``harvest_curves``'s frame (or None) for the runs' evaluation curves.
    Never raises for a fit that refuses; raises only for unusable input (e.g. missing columns).
    ``wsd``: a WSD-against-cosine comparison (analysis.wsd_comparison) to add as a section.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    study = fit_study(frame, params_col, loss_col, group_cols, n_bootstrap, seed, extrapolation)
    captions = draw_all(study, curves, out)
    fits = study_json(study, title)
    fits["setup_comparison"] = jsonable(setup_comparison(study, fits))
    fits["cross_modal"] = jsonable(cross_modal(study))
    fits["figures"] = captions
    # epochs per cell and, when data repeats, the data-constrained law (analysis.repetition_report)
    fits["data_repetition"] = jsonable(repetition_summary(frame, params_col, loss_col, group_cols, n_bootstrap, seed))
    draw_repetition(fits["data_repetition"], out)
    if wsd is not None:
        fits["wsd_comparison"] = jsonable(wsd)
        if "pairs" in wsd["comparison"]:
            wsd_figure(wsd["comparison"], out / WSD_FIGURE)
    (out / "fits.json").write_text(json.dumps(fits, indent=1, allow_nan=False) + "\n")
    blocks = build_blocks(fits, title) + (wsd_blocks(wsd) if wsd is not None else [])
    (out / "report.md").write_text(to_markdown(blocks))
    (out / "report.html").write_text(to_html(blocks, out, title))
    return out / "report.md"


def report_files(out_dir) -> list:
    """Paths of everything ``write_report`` writes, figures first."""
    out = Path(out_dir)
    extra = [out / WSD_FIGURE] if (out / WSD_FIGURE).exists() else []
    return [out / f for f, _ in FIGURES] + extra + [out / f for f in REPORT_FILES]
