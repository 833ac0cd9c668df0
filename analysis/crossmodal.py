"""The cross-modal story-cloze table (SIMS Table 2 at the study's scale): tSC and sSC in four forms from the
same stories, speech->speech (S), speech->text (S->T), text->speech (T->S) and text->text (T), for the
lowest-loss run of each setup at each compute budget, beside the TextLM's own text-only score before any
speech training ("Orig.").

Benchmarks are found by name: `<tsc|ssc>_<ss|st|ts|tt>` (the demo's manifests). The TextLM's own scores
are read from `textlm_eval.json` beside a member's weights (`spec.json`'s `weights`), when the family's
members carry one (the demo writes it when it pretrains its TextLMs; a hub TextLM has none, and the
column is then empty). Every accuracy comes with its 95 % Wilson interval over the benchmark's pairs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from analysis.accuracy import wilson_interval
from analysis.comparison import finite, short_g
from analysis.document import Heading, Para, Table
from analysis.study_fits import pairs_col

BENCHES = ("tsc", "ssc")
FORMS = (("ss", "S"), ("st", "S->T"), ("ts", "T->S"), ("tt", "T"))
TEXTLM_EVAL = "textlm_eval.json"


def _cell(acc, n) -> dict:
    acc, n = finite(acc), finite(n)
    if acc is None:
        return {}
    out = {"accuracy": acc, "n": n}
    if n is not None:
        (lo,), (hi,) = wilson_interval(acc, n)
        out.update({"p2.5": float(lo), "p97.5": float(hi), "above_chance": bool(lo > 0.5)})
    return out


def _textlm_scores(run_dir) -> dict:
    """{benchmark: cell} of the TextLM a run started from (its textlm_eval.json), or {}."""
    try:
        spec = json.loads((Path(run_dir) / "spec.json").read_text())
        weights = spec.get("weights")
        doc = json.loads((Path(weights) / TEXTLM_EVAL).read_text()) if weights else None
    except (OSError, ValueError, TypeError):
        return {}
    if not isinstance(doc, dict):
        return {}
    ev, n = doc.get("eval") or {}, doc.get("eval_n") or {}
    out = {k: _cell(v, n.get(k)) for k, v in ev.items()}
    out["_cost"] = {k: doc.get(k) for k in ("tokens", "flops", "wall_seconds", "params_total")}
    return out


def cross_modal(study) -> dict:
    """fits.json's ``cross_modal``: a row per run (by group, budget, size; ``frontier`` marks each budget's
    lowest-loss run), its tSC / sSC accuracy in each form present, and the TextLM's own T scores
    (``orig``); {} when the study has no `<tsc|ssc>_<form>` benchmark."""
    cols = {f"eval_{b}_{f}" for b in BENCHES for f, _ in FORMS}
    if not cols & set(study.metric_cols):
        return {}
    rows, textlms = [], {}
    for g in study.groups:
        runs = g.runs
        if not len(runs):
            continue
        for b in sorted(set(runs["budget"])):
            sub = runs[runs["budget"] == b]
            sub = sub[np.isfinite(sub["L"].astype(float))]
            if not len(sub):
                continue
            best = sub["L"].astype(float).idxmin()
            for i in sub.sort_values("N").index:
                rows.append(_row(g, sub.loc[i], i == best, textlms))
    return {"rows": rows, "textlms": {m: {k: v for k, v in d.items()} for m, d in sorted(textlms.items())}}


def _row(g, r, frontier: bool, textlms: dict) -> dict:
    """One run's scores in every form present, and its TextLM's own (``orig``)."""
    row = {"group": g.label, "setup": g.keys.get("setup"), "member": str(r.get("member")),
           "init": str(r.get("init")), "flops": float(r["C"]), "loss": float(r["L"]),
           "frontier": bool(frontier), "scores": {}}
    for bench in BENCHES:
        for form, _ in FORMS:
            col = f"eval_{bench}_{form}"
            if col in r.index:
                c = _cell(r.get(col), r.get(pairs_col(col)))
                if c:
                    row["scores"][f"{bench}_{form}"] = c
    if row["init"] == "textlm" and "run_dir" in r.index:
        own = _textlm_scores(r["run_dir"])
        if own:
            textlms[row["member"]] = own
            row["orig"] = {k: own[f"{k}_tt"] for k in BENCHES if own.get(f"{k}_tt")}
    return row


def _acc(c: dict | None) -> str:
    if not c:
        return "–"
    iv = f" [{c['p2.5']:.2f}, {c['p97.5']:.2f}]" if "p2.5" in c else ""
    return f"{c['accuracy']:.3f}{iv}" + ("*" if c.get("above_chance") else "")


def cross_modal_blocks(fits: dict) -> list:
    """The report section: one table per benchmark (tSC, sSC), then the TextLMs' own scores and cost."""
    cm = fits.get("cross_modal") or {}
    if not cm.get("rows"):
        return []
    out = [Heading(2, "Cross-modal story cloze (SIMS Table 2 at this scale)"),
           Para("tSC (topic StoryCloze: the true ending against the ending of another story) and sSC (StoryCloze: "
                "the true ending against the same ending with one name, object, place or state changed to contradict "
                "the prompt), from the same held-out stories in four forms: S = spoken prompt and spoken endings, "
                "S->T = spoken prompt and text endings, T->S = text prompt and spoken endings, T = text only. Every "
                "run of the study, by setup and budget (the lowest-loss run of each budget marked); accuracy with its 95% Wilson interval, * where "
                "the interval lies wholly above chance (0.5). Orig. T is the TextLM the run started from, scored on "
                "the text-only pairs before any speech training. A textless model has no text, so S only.")]
    for bench in BENCHES:
        rows = []
        for r in cm["rows"]:
            sc = r["scores"]
            if not any(f"{bench}_{f}" in sc for f, _ in FORMS):
                continue
            rows.append((r["setup"] or r["group"], r["member"] + (" (lowest loss)" if r.get("frontier") else ""),
                         short_g(r["flops"], 2),
                         *(_acc(sc.get(f"{bench}_{f}")) for f, _ in FORMS),
                         _acc((r.get("orig") or {}).get(bench))))
        if rows:
            out += [Heading(3, {"tsc": "tSC", "ssc": "sSC"}[bench]),
                    Table(("setup", "member", "C (FLOPs)", *(lab for _, lab in FORMS), "Orig. T (TextLM)"),
                          tuple(rows))]
    tl = cm.get("textlms") or {}
    if tl:
        rows = []
        for m, d in sorted(tl.items(), key=lambda kv: finite((kv[1].get("_cost") or {}).get("params_total")) or 0):
            cost = d.get("_cost") or {}
            rows.append((m, _acc(d.get("tsc_tt")), _acc(d.get("ssc_tt")), short_g(cost.get("tokens"), 2),
                         short_g(cost.get("flops"), 2), f"{cost['wall_seconds']:.0f} s" if finite(cost.get("wall_seconds")) else "–"))
        out += [Heading(3, "The TextLMs on their own (before speech training)"),
                Para("Text pretraining is not part of a speech LM's compute (SIMS counts the SLM's training only, as "
                     "does every C above); its cost is shown here, separately."),
                Table(("TextLM", "tSC T [95%]", "sSC T [95%]", "text tokens", "FLOPs", "wall time"), tuple(rows))]
    return out
