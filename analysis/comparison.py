"""Interleaved against textless at equal compute: the SIMS question answered in plain words and numbers.

For every pair of groups that differ only in their setup (interleaved vs textless, same family and
variant): at each compute budget the best run of each side (the loss frontier) and the difference of
their losses, who wins at how many budgets, whether the gap grows or shrinks with compute, the
compute-optimal exponents of both sides (Approach 3 a with its bootstrap interval, Approach 2 a, the
L(C) slope gamma) and the downstream metrics at the same budgets. ``setup_comparison(study, fits)`` gives
the fits.json entry, ``comparison_blocks(fits)`` the report section.
"""

from __future__ import annotations

import numpy as np

from analysis.document import Heading, Para, Table
from analysis.study_fits import metric_name

SETUPS = ("interleaved", "textless")


def _num(x):
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def _g(x, digits: int = 3) -> str:
    x = _num(x)
    if x is None:
        return "–"
    s = f"{x:.{digits}g}"
    if "e" in s:
        m, e = s.split("e")
        s = f"{m}e{int(e)}"
    return s


def _f(x, digits: int = 3) -> str:
    x = _num(x)
    return "–" if x is None else f"{x:.{digits}f}"


def _best(runs, budget, col: str, higher: bool):
    sub = runs[(runs["budget"] == budget) & np.isfinite(runs[col].astype(float))]
    if not len(sub):
        return None
    i = sub[col].astype(float).idxmax() if higher else sub[col].astype(float).idxmin()
    row = sub.loc[i]
    return {"value": float(row[col]), "member": str(row.get("member")), "N": float(row["N"]),
            "D": float(row["D"]), "flops": float(row["C"]), "runs": int(len(sub))}


def _exponents(group: dict) -> dict:
    a3, a2, lc = group.get("approach3", {}), group.get("approach2", {}), group.get("loss_compute") or {}
    iv = (a3.get("intervals") or {}).get("a", {})
    iv2 = (a2.get("intervals") or {}).get("a", {})
    return {"a": None if "error" in a3 else a3.get("a"), "a_p2.5": iv.get("p2.5"), "a_p97.5": iv.get("p97.5"),
            "b": None if "error" in a3 else a3.get("b"),
            "a_approach2": None if "error" in a2 else a2.get("a"),
            "a_approach2_p2.5": iv2.get("p2.5"), "a_approach2_p97.5": iv2.get("p97.5"),
            "gamma": None if "error" in lc else lc.get("gamma"),
            "errors": {k: d["error"] for k, d in (("approach3", a3), ("approach2", a2), ("loss_compute", lc))
                       if isinstance(d, dict) and "error" in d}}


def _pair(study, fits: dict, gi, gt) -> dict:
    loss_col = fits["loss_col"]
    budgets = sorted(set(gi.runs["budget"]) & set(gt.runs["budget"]))
    rows = []
    for b in budgets:
        i, t = _best(gi.runs, b, "L", False), _best(gt.runs, b, "L", False)
        if i is None or t is None:
            continue
        row = {"flops": float(np.exp(np.mean(np.log([i["flops"], t["flops"]])))),
               "interleaved": i, "textless": t, "difference": i["value"] - t["value"],
               "winner": "interleaved" if i["value"] < t["value"] else ("textless" if t["value"] < i["value"] else "tie"),
               "metrics": {}}
        for col in fits["metric_cols"]:
            mi, mt = _best(gi.runs, b, col, True), _best(gt.runs, b, col, True)
            row["metrics"][metric_name(col)] = {"interleaved": mi and mi["value"], "textless": mt and mt["value"]}
        rows.append(row)
    ex_i, ex_t = _exponents(fits["groups"][gi.label]), _exponents(fits["groups"][gt.label])
    out = {"groups": {"interleaved": gi.label, "textless": gt.label}, "loss_col": loss_col, "budgets": rows,
           "wins": {s: sum(r["winner"] == s for r in rows) for s in (*SETUPS, "tie")},
           "mean_difference": float(np.mean([r["difference"] for r in rows])) if rows else None,
           "exponents": {"interleaved": ex_i, "textless": ex_t}}
    if len(rows) >= 2:
        out["gap_smallest_budget"], out["gap_largest_budget"] = rows[0]["difference"], rows[-1]["difference"]
        x = np.log10([r["flops"] for r in rows])
        slopes = {s: float(np.polyfit(x, [r[s]["value"] for r in rows], 1)[0]) for s in SETUPS}
        out["frontier_slope_per_decade"] = slopes
        # the gap's rate of change between the two largest budgets (the local trend, not a fitted law)
        g_slope = (rows[-1]["difference"] - rows[-2]["difference"]) / (x[-1] - x[-2]) if x[-1] > x[-2] else 0.0
        out["gap_slope_per_decade_top"] = float(g_slope)
        if g_slope * rows[-1]["difference"] < 0:
            out["gap_closes_at_flops"] = float(10 ** (x[-1] - rows[-1]["difference"] / g_slope))
    out["summary"] = _summary(out)
    return out


def _overlap(e1: dict, e2: dict):
    lo1, hi1, lo2, hi2 = (_num(e1.get("a_p2.5")), _num(e1.get("a_p97.5")), _num(e2.get("a_p2.5")),
                          _num(e2.get("a_p97.5")))
    if None in (lo1, hi1, lo2, hi2):
        return None
    return lo1 <= hi2 and lo2 <= hi1


def _summary(p: dict) -> list[str]:
    rows, loss = p["budgets"], p["loss_col"]
    if not rows:
        return [f"Interleaved vs textless ({p['groups']['interleaved']} vs {p['groups']['textless']}): no compute "
                "budget has finished runs of both, so there is no equal-compute comparison."]
    n, wi = len(rows), p["wins"]["interleaved"]
    every = f"all {n} compute budgets" if n > 1 else "the one compute budget"
    if wi == n:
        verdict = f"YES: interleaved beat textless at {every}"
    elif wi == 0:
        verdict = f"NO: textless beat interleaved at {every}"
    else:
        verdict = f"MIXED: interleaved beat textless at {wi} of {n} compute budgets"
    per = "; ".join(f"C={_g(r['flops'], 2)}: {_f(r['interleaved']['value'])} ({r['interleaved']['member']}) vs "
                    f"{_f(r['textless']['value'])} ({r['textless']['member']})" for r in rows)
    lines = [f"At equal compute (best run per budget, {loss}, lower is better): {verdict}. {per}. "
             f"Mean difference interleaved - textless: {_f(p['mean_difference'])} nats."]
    if "gap_largest_budget" in p:
        g0, g1 = p["gap_smallest_budget"], p["gap_largest_budget"]
        trend = ("the gap moves in interleaved's favour as compute grows" if g1 < g0 else
                 "the gap moves in textless's favour as compute grows" if g1 > g0 else "the gap does not change")
        lines.append(f"Gap (interleaved - textless) from the smallest to the largest budget: {_f(g0)} -> {_f(g1)} "
                     f"nats: {trend}.")
        sl = p["frontier_slope_per_decade"]
        faster = "interleaved" if sl["interleaved"] < sl["textless"] else "textless"
        txt = (f"Best loss per decade of compute (least squares on the budgets): interleaved {_f(sl['interleaved'])}, "
               f"textless {_f(sl['textless'])} nats: {faster}'s loss falls faster with compute here")
        if "gap_closes_at_flops" in p:
            crossing = p["gap_closes_at_flops"]
            txt += (f"; at the rate between the two largest budgets ({_f(p['gap_slope_per_decade_top'])} nats per "
                    f"decade; a straight line in log C, not a fitted law) the gap would close near C={_g(crossing, 2)} "
                    f"FLOPs ({_g(crossing / rows[-1]['flops'], 2)}x the largest budget)")
        lines.append(txt + ".")
    ei, et = p["exponents"]["interleaved"], p["exponents"]["textless"]

    def a_txt(e):
        if e["a"] is None:
            return f"refused ({e['errors'].get('approach3', '?')})"
        iv = f" [{_f(e['a_p2.5'])}, {_f(e['a_p97.5'])}]" if _num(e["a_p2.5"]) is not None else ""
        return f"{_f(e['a'])}{iv}"

    ov = _overlap(ei, et)
    ov_txt = {True: "the 95% intervals overlap, so this study cannot tell them apart",
              False: "the 95% intervals are disjoint"}.get(ov, "no intervals to compare")
    lines.append(f"Compute-optimal exponents, N_opt ~ C^a (Approach 3): interleaved a = {a_txt(ei)}, textless "
                 f"a = {a_txt(et)}; {ov_txt}. Approach 2 (IsoFLOP vertices): interleaved "
                 f"{_f(ei['a_approach2']) if ei['a_approach2'] is not None else 'refused'}, textless "
                 f"{_f(et['a_approach2']) if et['a_approach2'] is not None else 'refused'}.")
    gi, gt = _num(ei["gamma"]), _num(et["gamma"])
    if gi is not None and gt is not None:
        faster = "interleaved" if gi > gt else "textless"
        lines.append(f"Loss against compute, L(C) = E + k C^-gamma on the frontier: gamma interleaved "
                     f"{_f(gi, 4)} vs textless {_f(gt, 4)}: {faster}'s loss falls faster with compute.")
    top = rows[-1]
    mets = [f"{m} {_f(v['interleaved'])} vs {_f(v['textless'])}" for m, v in top["metrics"].items()
            if _num(v["interleaved"]) is not None and _num(v["textless"]) is not None]
    if mets:
        lines.append(f"Downstream accuracy at the largest budget (C={_g(top['flops'], 2)}, best run each, "
                     f"interleaved vs textless): " + ", ".join(mets) + ".")
    return lines


def setup_comparison(study, fits: dict) -> dict:
    """fits.json's ``setup_comparison``: {"pairs": [...], "summary": [lines]} for every pair of groups of
    ``study`` (analysis.study_fits.StudyFits) that differ only in setup, interleaved vs textless."""
    pairs = []
    for gi in study.groups:
        if gi.keys.get("setup") != "interleaved":
            continue
        for gt in study.groups:
            if gt.keys.get("setup") != "textless":
                continue
            if any(gi.keys.get(c) != gt.keys.get(c) for c in study.group_cols if c != "setup"):
                continue
            pairs.append(_pair(study, fits, gi, gt))
    summary = []
    for p in pairs:
        if len(pairs) > 1:
            summary.append(f"{p['groups']['interleaved']} vs {p['groups']['textless']}:")
        summary += p["summary"]
    return {"pairs": pairs, "summary": summary}


def comparison_blocks(fits: dict) -> list:
    """The report section: the plain answer, then a table per pair (budgets) and one of exponents."""
    comp = fits.get("setup_comparison") or {}
    if not comp.get("pairs"):
        return []
    out = [Heading(2, "Interleaved against textless at equal compute")]
    for p in comp["pairs"]:
        if len(comp["pairs"]) > 1:
            out.append(Heading(3, f"{p['groups']['interleaved']} vs {p['groups']['textless']}"))
        out += [Para(line) for line in p["summary"]]
        metrics = sorted({m for r in p["budgets"] for m in r["metrics"]})
        rows = []
        for r in p["budgets"]:
            i, t = r["interleaved"], r["textless"]
            rows.append((_g(r["flops"], 2), f"{_f(i['value'])} ({i['member']}, D/N {_g(i['D'] / i['N'], 2)})",
                         f"{_f(t['value'])} ({t['member']}, D/N {_g(t['D'] / t['N'], 2)})", _f(r["difference"]),
                         r["winner"], *[f"{_f(r['metrics'][m]['interleaved'])} vs {_f(r['metrics'][m]['textless'])}"
                                        for m in metrics]))
        if rows:
            out.append(Table(("C (FLOPs)", "interleaved best", "textless best", "difference", "lower loss",
                              *[f"{m} (int. vs txl.)" for m in metrics]), tuple(rows)))
        ex = p["exponents"]
        out.append(Table(("setup", "a (Approach 3) [95%]", "b", "a (Approach 2) [95%]", "L(C) gamma"), tuple(
            (s, f"{_f(e['a'])} [{_f(e['a_p2.5'])}, {_f(e['a_p97.5'])}]", _f(e["b"]),
             f"{_f(e['a_approach2'])} [{_f(e['a_approach2_p2.5'])}, {_f(e['a_approach2_p97.5'])}]",
             _f(e["gamma"], 4)) for s, e in ex.items())))
    return out
