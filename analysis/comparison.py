"""Interleaved against textless at equal compute: the SIMS question answered in plain words and numbers.

For every pair of groups that differ only in their setup (interleaved vs textless, same family and
variant): at each compute budget the best run of each side (the loss frontier) and the difference of
their losses, who wins at how many budgets, whether the gap grows or shrinks with compute, the
compute-optimal exponents of both sides (Approach 3 a with its bootstrap interval, Approach 2 a, the
L(C) slope gamma) and the downstream metrics of the same runs. A metric difference is called only when
its 95 % interval (Newcombe's, from the two Wilson intervals) excludes 0; the gap's trend with compute
only when its least-squares slope's 95 % interval does. ``setup_comparison(study, fits)`` gives the
fits.json entry, ``comparison_blocks(fits)`` the report section.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from analysis.accuracy import LEVEL, difference_interval, wilson_interval
from analysis.document import Heading, Para, Table
from analysis.study_fits import metric_name, pairs_col

SETUPS = ("interleaved", "textless")


def finite(x):
    """`x` as a float when it is a finite number, else None."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def short_g(x, digits: int = 3) -> str:
    """`x` in `digits` significant figures with a bare exponent (1.5e11), "–" when not a number."""
    x = finite(x)
    if x is None:
        return "–"
    s = f"{x:.{digits}g}"
    if "e" in s:
        m, e = s.split("e")
        s = f"{m}e{int(e)}"
    return s


def _f(x, digits: int = 3) -> str:
    x = finite(x)
    return "–" if x is None else f"{x:.{digits}f}"


def _best(runs, budget, col: str, higher: bool):
    sub = runs[(runs["budget"] == budget) & np.isfinite(runs[col].astype(float))]
    if not len(sub):
        return None
    i = sub[col].astype(float).idxmax() if higher else sub[col].astype(float).idxmin()
    row = sub.loc[i]
    return {"value": float(row[col]), "member": str(row.get("member")), "N": float(row["N"]),
            "D": float(row["D"]), "flops": float(row["C"]), "runs": int(len(sub)), "index": i}


def _metric(runs, i, t, col: str) -> dict:
    """Accuracy of the two lowest-loss runs (i from interleaved, t from textless), their Wilson intervals
    and the difference with Newcombe's interval; "called" says who is higher, or that nobody can tell."""
    def one(r, idx):
        v = float(r.loc[idx, col]) if col in r.columns else float("nan")
        n = float(r.loc[idx, pairs_col(col)]) if pairs_col(col) in r.columns else float("nan")
        (lo,), (hi,) = wilson_interval(v, n)
        return v, n, lo, hi
    (vi, ni, li, hi_), (vt, nt, lt, ht) = one(runs[0], i["index"]), one(runs[1], t["index"])
    out = {"interleaved": finite(vi), "textless": finite(vt), "n_interleaved": finite(ni), "n_textless": finite(nt),
           "interleaved_p2.5": finite(li), "interleaved_p97.5": finite(hi_), "textless_p2.5": finite(lt),
           "textless_p97.5": finite(ht)}
    if None in (out["interleaved"], out["textless"]):
        return {**out, "called": "missing"}
    if None in (out["n_interleaved"], out["n_textless"]):
        return {**out, "difference": vi - vt, "called": "pairs unknown"}
    d, lo, hi = difference_interval(vi, ni, vt, nt)
    called = "interleaved higher" if lo > 0 else "textless higher" if hi < 0 else "indistinguishable"
    return {**out, "difference": d, "difference_p2.5": lo, "difference_p97.5": hi, "called": called}


def _exponents(group: dict) -> dict:
    a3, a2, lc = group.get("approach3", {}), group.get("approach2", {}), group.get("loss_compute") or {}
    iv = (a3.get("intervals") or {}).get("a", {})
    iv2 = (a2.get("intervals") or {}).get("a", {})
    return {"a": None if "error" in a3 else a3.get("a"), "a_p2.5": iv.get("p2.5"), "a_p97.5": iv.get("p97.5"),
            "not_identified": [d["param"] for d in a3.get("not_identified") or []],
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
        for col in fits["metric_cols"]:  # the same lowest-loss runs: no pick on the accuracy's own noise
            row["metrics"][metric_name(col)] = _metric((gi.runs, gt.runs), i, t, col)
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
    if len(rows) >= 3:
        # the gap's trend: least squares over every budget, called only when its interval excludes 0
        x = np.log10([r["flops"] for r in rows])
        fit = stats.linregress(x, [r["difference"] for r in rows])
        q = stats.t.ppf(0.5 + LEVEL / 2, len(rows) - 2)
        lo, hi = fit.slope - q * fit.stderr, fit.slope + q * fit.stderr
        out["gap_trend"] = {"slope_per_decade": float(fit.slope), "p2.5": float(lo), "p97.5": float(hi),
                            "budgets": len(rows), "called": bool(lo > 0 or hi < 0)}
        if out["gap_trend"]["called"] and fit.slope * rows[-1]["difference"] < 0:
            out["gap_closes_at_flops"] = float(10 ** (-fit.intercept / fit.slope))
    out["metric_calls"] = _metric_calls(rows)
    out["metric_laws"] = _metric_laws(fits, gi.label, gt.label)
    out["summary"] = _summary(out)
    return out


def _metric_laws(fits: dict, li: str, lt: str) -> dict:
    """Per metric: each side's Q(C) = k C^gamma verdict (analysis.accuracy.fit_metric_trend), or its refusal."""
    out = {}
    for col in fits["metric_cols"]:
        m = metric_name(col)
        sides = {}
        for s, label in (("interleaved", li), ("textless", lt)):
            law = (fits["groups"].get(label) or {}).get("metric_laws", {}).get(m)
            if not isinstance(law, dict) or ("error" in law and "no run of this group" in str(law["error"])):
                continue
            sides[s] = ({"law": False, "verdict": f"refused ({law['error']})"} if "error" in law else
                        {k: law.get(k) for k in ("law", "verdict", "k", "gamma", "gamma_lo", "gamma_hi",
                                                 "n_above_chance", "n_points")})
        if sides:
            out[m] = sides
    return out


def _metric_calls(rows) -> dict:
    """Per metric: at how many budgets each side is higher with the difference's interval excluding 0."""
    out = {}
    for m in sorted({m for r in rows for m in r["metrics"]}):
        calls = [r["metrics"][m]["called"] for r in rows if m in r["metrics"]]
        out[m] = {c: calls.count(c) for c in ("interleaved higher", "textless higher", "indistinguishable",
                                              "pairs unknown", "missing")}
    return out


def _overlap(e1: dict, e2: dict):
    lo1, hi1, lo2, hi2 = (finite(e1.get("a_p2.5")), finite(e1.get("a_p97.5")), finite(e2.get("a_p2.5")),
                          finite(e2.get("a_p97.5")))
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
    per = "; ".join(f"C={short_g(r['flops'], 2)}: {_f(r['interleaved']['value'])} ({r['interleaved']['member']}) vs "
                    f"{_f(r['textless']['value'])} ({r['textless']['member']})" for r in rows)
    lines = [f"At equal compute (best run per budget, {loss}, lower is better): {verdict}. {per}. "
             f"Mean difference interleaved - textless: {_f(p['mean_difference'])} nats."]
    if "gap_largest_budget" in p:
        g0, g1 = p["gap_smallest_budget"], p["gap_largest_budget"]
        tr = p.get("gap_trend")
        if tr is not None and tr["called"]:
            trend = ": the gap moves in " + ("interleaved's" if tr["slope_per_decade"] < 0 else "textless's") + \
                    " favour as compute grows"
        else:
            trend = " (whether that is a trend is judged below)"
        lines.append(f"Gap (interleaved - textless) from the smallest to the largest budget: {_f(g0)} -> {_f(g1)} "
                     f"nats{trend}.")
        sl = p["frontier_slope_per_decade"]
        txt = (f"Best loss per decade of compute (least squares on the budgets): interleaved {_f(sl['interleaved'])}, "
               f"textless {_f(sl['textless'])} nats")
        if tr is None:
            txt += "; two budgets cannot give the gap's trend an interval, so none is stated"
        elif not tr["called"]:
            txt += (f"; the gap's trend, {_f(tr['slope_per_decade'])} nats per decade over {tr['budgets']} budgets, "
                    f"has a 95% interval [{_f(tr['p2.5'])}, {_f(tr['p97.5'])}] that contains 0: no trend in the gap is "
                    f"distinguishable at this scale")
        else:
            txt += (f"; the gap changes by {_f(tr['slope_per_decade'])} [{_f(tr['p2.5'])}, {_f(tr['p97.5'])}] nats per "
                    f"decade (least squares over {tr['budgets']} budgets)")
            if "gap_closes_at_flops" in p:
                crossing = p["gap_closes_at_flops"]
                txt += (f"; continued as a straight line in log C (not a fitted law) it would close near "
                        f"C={short_g(crossing, 2)} FLOPs ({short_g(crossing / rows[-1]['flops'], 2)}x the largest budget)")
        lines.append(txt + ".")
    ei, et = p["exponents"]["interleaved"], p["exponents"]["textless"]

    def a_txt(e):
        if e["a"] is None:
            return f"refused ({e['errors'].get('approach3', '?')})"
        iv = f" [{_f(e['a_p2.5'])}, {_f(e['a_p97.5'])}]" if finite(e["a_p2.5"]) is not None else ""
        return f"{_f(e['a'])}{iv}" + (" (not identified)" if e["not_identified"] else "")

    def a2_txt(e):
        if e["a_approach2"] is None:
            return "refused"
        lo, hi = finite(e["a_approach2_p2.5"]), finite(e["a_approach2_p97.5"])
        return _f(e["a_approach2"]) + (f" [{_f(lo)}, {_f(hi)}]" if lo is not None and hi is not None else
                                       " (no interval)")

    if ei["not_identified"] or et["not_identified"]:
        ov_txt = ("Approach 3 does not pin down its parameters in "
                  + " and ".join(s for s, e in (("interleaved", ei), ("textless", et)) if e["not_identified"])
                  + " (see the Approach-3 section), so its exponents are not compared")
    else:
        ov_txt = {True: "the 95% intervals overlap, so this study cannot tell them apart",
                  False: "the 95% intervals are disjoint"}.get(_overlap(ei, et), "no intervals to compare")
    lines.append(f"Compute-optimal exponents, N_opt ~ C^a (Approach 3): interleaved a = {a_txt(ei)}, textless "
                 f"a = {a_txt(et)}; {ov_txt}. Approach 2 (IsoFLOP vertices, weighted; 95%): interleaved "
                 f"{a2_txt(ei)}, textless {a2_txt(et)}.")
    gi, gt = finite(ei["gamma"]), finite(et["gamma"])
    if gi is not None and gt is not None:
        lines.append(f"Loss against compute, L(C) = E + k C^-gamma on the frontier: gamma interleaved "
                     f"{_f(gi, 4)} vs textless {_f(gt, 4)} (no interval on gamma, so no difference is called).")
    top = rows[-1]
    mets = []
    for m, v in top["metrics"].items():
        if v["called"] == "missing":
            continue
        if v["called"] == "pairs unknown":
            mets.append(f"{m} {_f(v['interleaved'])} vs {_f(v['textless'])} (pair counts unknown: no interval, "
                        f"nothing called)")
            continue
        mets.append(f"{m} {_f(v['interleaved'])} [{_f(v['interleaved_p2.5'])}, {_f(v['interleaved_p97.5'])}] vs "
                    f"{_f(v['textless'])} [{_f(v['textless_p2.5'])}, {_f(v['textless_p97.5'])}], difference "
                    f"{v['difference']:+.3f} [{v['difference_p2.5']:+.3f}, {v['difference_p97.5']:+.3f}]: "
                    + ("not distinguishable" if v["called"] == "indistinguishable" else v["called"]))
    if mets:
        lines.append(f"Downstream accuracy at the largest budget (C={short_g(top['flops'], 2)}, the lowest-loss run of "
                     f"each side, 95% intervals; a difference is called only when its interval excludes 0): "
                     + "; ".join(mets) + ".")
    laws = p.get("metric_laws") or {}
    if laws:
        per = []
        for m, sides in laws.items():
            per.append(f"{m}: " + "; ".join(f"{s} {v['verdict']}" for s, v in sides.items()))
        n_law = sum(v.get("law") is True for sides in laws.values() for v in sides.values())
        lines.append(f"Downstream accuracy against compute, Q(C) = k C^gamma on each side's loss frontier (called a "
                     f"law only when a point is above chance at 95% and gamma's 95% interval excludes 0; {n_law} "
                     f"called): " + " | ".join(per) + ".")
    calls = p.get("metric_calls") or {}
    if calls and len(rows) > 1:
        per = []
        for m, c in calls.items():
            n = sum(c.values()) - c["missing"]
            if n == 0:   # e.g. a text-form benchmark: textless cells do not score it
                continue
            called = [f"interleaved higher at {c['interleaved higher']}" if c["interleaved higher"] else "",
                      f"textless higher at {c['textless higher']}" if c["textless higher"] else ""]
            called = " and ".join(x for x in called if x)
            per.append(f"{m}: " + (f"{called} of {n} budgets" if called else f"no difference called at any of {n} "
                                                                                 f"budgets"))
        lines.append("Across the budgets: " + "; ".join(per) + ".")
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
            rows.append((short_g(r["flops"], 2), f"{_f(i['value'])} ({i['member']}, D/N {short_g(i['D'] / i['N'], 2)})",
                         f"{_f(t['value'])} ({t['member']}, D/N {short_g(t['D'] / t['N'], 2)})", _f(r["difference"]),
                         r["winner"]))
        if rows:
            out.append(Table(("C (FLOPs)", "interleaved best", "textless best", "difference", "lower loss"),
                             tuple(rows)))
        mrows = []
        for r in p["budgets"]:
            for m in metrics:
                v = r["metrics"][m]
                if v["called"] == "missing":
                    continue
                mrows.append((short_g(r["flops"], 2), m,
                              f"{_f(v['interleaved'])} [{_f(v['interleaved_p2.5'])}, {_f(v['interleaved_p97.5'])}]",
                              f"{_f(v['textless'])} [{_f(v['textless_p2.5'])}, {_f(v['textless_p97.5'])}]",
                              f"{finite(v.get('difference')) or 0:+.3f} "
                              f"[{_f(v.get('difference_p2.5'))}, {_f(v.get('difference_p97.5'))}]", v["called"]))
        if mrows:
            out.append(Para("Downstream accuracy of the same lowest-loss runs, with 95% Wilson intervals over the "
                            "benchmark's pairs and the difference's 95% interval (Newcombe); a difference is called "
                            "only when that interval excludes 0."))
            out.append(Table(("C (FLOPs)", "metric", "interleaved [95%]", "textless [95%]",
                              "difference int. - txl. [95%]", "call"), tuple(mrows)))
        ex = p["exponents"]
        out.append(Table(("setup", "a (Approach 3) [95%]", "b", "a (Approach 2) [95%]", "L(C) gamma"), tuple(
            (s, f"{_f(e['a'])} [{_f(e['a_p2.5'])}, {_f(e['a_p97.5'])}]"
                + (" not identified" if e["not_identified"] else ""), _f(e["b"]),
             f"{_f(e['a_approach2'])} [{_f(e['a_approach2_p2.5'])}, {_f(e['a_approach2_p97.5'])}]",
             _f(e["gamma"], 4)) for s, e in ex.items())))
    return out
