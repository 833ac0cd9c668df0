"""WSD branches against cosine cells of the same grid (issue 20): per cell the two losses, the paired
difference with an interval, the exponents of a log-linear law L = k N^-a D^-b fitted to each schedule
with paired-bootstrap intervals and whether they agree, and the compute each spent.

The law has no irreducible term on purpose: it is a descriptive fit over the grid's own range with three
parameters, identified by any grid with two sizes and two budgets, so the two schedules can be compared
where a five-parameter L(N, D) is not identified (a micro grid). Agreement means the 95% interval of
the paired difference of exponents contains 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .document import Figure, Heading, Para, Table

Z95 = 1.959963984540054


@dataclass
class Pair:
    member: str
    params: float
    tokens: float
    cosine: float        # held-out loss of the cosine cell
    wsd: float           # held-out loss of the WSD branch (or single WSD run)


def _loglinear(n: np.ndarray, d: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """(log k, a, b) of log L = log k - a log N - b log D by least squares."""
    X = np.column_stack([np.ones_like(n), -np.log(n), -np.log(d)])
    coef, *_ = np.linalg.lstsq(X, np.log(loss), rcond=None)
    return coef


def compare(pairs: list[Pair], n_bootstrap: int = 2000, seed: int = 0) -> dict:
    """The comparison as a JSON-able dict (see the module docstring)."""
    if len(pairs) < 2:
        return {"refused": f"{len(pairs)} matched cell(s); at least 2 are needed"}
    n = np.array([p.params for p in pairs], float)
    d = np.array([p.tokens for p in pairs], float)
    lc = np.array([p.cosine for p in pairs], float)
    lw = np.array([p.wsd for p in pairs], float)
    rel = lw / lc - 1.0
    k = len(pairs)
    se = float(rel.std(ddof=1) / np.sqrt(k)) if k > 1 else float("nan")
    out: dict = {
        "cells": k,
        "pairs": [{"member": p.member, "params": p.params, "tokens": p.tokens, "cosine": p.cosine, "wsd": p.wsd,
                   "relative": float(r)} for p, r in zip(pairs, rel)],
        "relative_difference": {"mean": float(rel.mean()), "lo": float(rel.mean() - Z95 * se),
                                "hi": float(rel.mean() + Z95 * se)},
    }
    identified = len(np.unique(n)) >= 2 and len(np.unique(d)) >= 2 and k >= 4
    if not identified:
        out["law"] = {"refused": "L = k N^-a D^-b needs two sizes, two budgets and four cells"}
        return out
    rng = np.random.default_rng(seed)
    fc, fw = _loglinear(n, d, lc), _loglinear(n, d, lw)
    boots = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, k, k)
        if len(np.unique(n[idx])) < 2 or len(np.unique(d[idx])) < 2:
            continue
        boots.append(np.concatenate([_loglinear(n[idx], d[idx], lc[idx]), _loglinear(n[idx], d[idx], lw[idx])]))
    b = np.array(boots)
    law = {"form": "L = k N^-a D^-b (held-out speech loss; descriptive, over this grid's range)",
           "bootstrap": len(b)}
    for name, col in (("a", 1), ("b", 2)):
        cos_s, wsd_s, diff_s = b[:, col], b[:, 3 + col], b[:, 3 + col] - b[:, col]
        lo, hi = np.percentile(diff_s, [2.5, 97.5])
        law[name] = {"cosine": float(fc[col]), "cosine_lo": float(np.percentile(cos_s, 2.5)),
                     "cosine_hi": float(np.percentile(cos_s, 97.5)),
                     "wsd": float(fw[col]), "wsd_lo": float(np.percentile(wsd_s, 2.5)),
                     "wsd_hi": float(np.percentile(wsd_s, 97.5)),
                     "difference": float(fw[col] - fc[col]), "difference_lo": float(lo), "difference_hi": float(hi),
                     "agree": bool(lo <= 0.0 <= hi)}
    out["law"] = law
    return out


def compute_json(cosine_tokens: float, cosine_flops: float, wsd_tokens: float, wsd_flops: float,
                 cosine_seconds: Optional[float] = None, wsd_seconds: Optional[float] = None) -> dict:
    return {"cosine": {"tokens": cosine_tokens, "cost_flops": cosine_flops, "seconds": cosine_seconds},
            "wsd": {"tokens": wsd_tokens, "cost_flops": wsd_flops, "seconds": wsd_seconds},
            "saving": 1.0 - wsd_flops / cosine_flops if cosine_flops else None}


FIGURE = "wsd-vs-cosine.png"


def blocks(section: dict) -> list:
    """The report section (analysis.document blocks) for `section` = {"comparison", "compute", "decay"}."""
    cmp, c = section["comparison"], section["compute"]
    out: list = [Heading(2, "WSD branches against cosine cells"),
                 Para(f"The interleaved cells trained twice: each budget with its own cosine schedule, and as a "
                      f"branch off one constant-LR trunk per model that decays ({section['decay']}) to its "
                      "budget (training.schedule wsd). Loss: held-out speech loss.")]
    if "refused" in cmp:
        return out + [Para(f"No comparison: {cmp['refused']}.", css="refusal")]
    out.append(Table(("member", "params", "tokens", "cosine", "WSD branch", "WSD / cosine - 1"),
                     tuple((p["member"], f"{p['params']:,.0f}", f"{p['tokens']:,.0f}", f"{p['cosine']:.4f}",
                            f"{p['wsd']:.4f}", f"{100 * p['relative']:+.2f}%") for p in cmp["pairs"])))
    r = cmp["relative_difference"]
    verdict = ("indistinguishable from the cosine cells at this precision" if r["lo"] <= 0 <= r["hi"] else
               ("the WSD branches are worse" if r["lo"] > 0 else "the WSD branches are better"))
    out.append(Para(f"Mean paired difference over {cmp['cells']} cells: {100 * r['mean']:+.2f}% (95% interval "
                    f"{100 * r['lo']:+.2f}% to {100 * r['hi']:+.2f}%): {verdict}."))
    law = cmp.get("law", {})
    if "refused" in law:
        out.append(Para(f"Exponents: not fitted ({law['refused']}).", css="refusal"))
    else:
        out.append(Para(f"Exponents of {law['form']}, 95% paired-bootstrap intervals ({law['bootstrap']} "
                        "resamples); they agree when the interval of the difference contains 0:"))
        rows = []
        for name, what in (("a", "a (size)"), ("b", "b (tokens)")):
            e = law[name]
            rows.append((what, f"{e['cosine']:.3f} [{e['cosine_lo']:.3f}, {e['cosine_hi']:.3f}]",
                         f"{e['wsd']:.3f} [{e['wsd_lo']:.3f}, {e['wsd_hi']:.3f}]",
                         f"{e['difference']:+.3f} [{e['difference_lo']:+.3f}, {e['difference_hi']:+.3f}]",
                         "yes" if e["agree"] else "no"))
        out.append(Table(("exponent", "cosine", "WSD", "WSD - cosine", "agree"), tuple(rows)))
    out.append(Para("Compute spent (cost FLOPs: 6 N D + attention; wall: the cells' training seconds, each "
                    "trunk once):"))
    out.append(Table(("schedule", "tokens trained", "cost FLOPs", "wall seconds"), tuple(
        (name, f"{c[name]['tokens']:,.0f}", f"{c[name]['cost_flops']:.3g}",
         "-" if c[name]["seconds"] is None else f"{c[name]['seconds']:.0f}") for name in ("cosine", "wsd"))))
    if c.get("saving") is not None:
        out.append(Para(f"Shared trunks spent {100 * c['saving']:.1f}% less compute than training every budget "
                        "from scratch."))
    out.append(Figure(FIGURE, "WSD branches vs cosine cells",
                      "Held-out speech loss against training tokens per member: cosine cells (filled, solid) and "
                      "WSD branches off each member's trunk (open, dashed)."))
    return out


def summary(section: dict) -> list[str]:
    """Plain lines for a terminal: the paired difference, the exponents, the saving."""
    cmp, c = section["comparison"], section["compute"]
    if "refused" in cmp:
        return [f"WSD vs cosine: no comparison ({cmp['refused']})"]
    r = cmp["relative_difference"]
    lines = [f"WSD vs cosine: loss {100 * r['mean']:+.2f}% [{100 * r['lo']:+.2f}%, {100 * r['hi']:+.2f}%] over "
             f"{cmp['cells']} cells"]
    law = cmp.get("law", {})
    if "refused" not in law:
        lines.append("  exponents (cosine / WSD): " + ", ".join(
            f"{n} {law[n]['cosine']:.3f} / {law[n]['wsd']:.3f} ({'agree' if law[n]['agree'] else 'differ'})"
            for n in ("a", "b")))
    if c.get("saving") is not None:
        lines.append(f"  compute: {100 * c['saving']:.1f}% less with shared trunks")
    return lines


def figure(cmp: dict, path) -> None:
    """Loss against tokens per member: cosine cells and WSD branches."""
    import matplotlib   # heavy: plotting only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt   # heavy: plotting only when a figure is drawn

    fig, ax = plt.subplots(figsize=(6, 4))
    members = sorted({p["member"] for p in cmp["pairs"]}, key=lambda m: min(p["params"] for p in cmp["pairs"]
                                                                            if p["member"] == m))
    for i, m in enumerate(members):
        ps = sorted((p for p in cmp["pairs"] if p["member"] == m), key=lambda p: p["tokens"])
        color = f"C{i}"
        ax.plot([p["tokens"] for p in ps], [p["cosine"] for p in ps], "o-", color=color, label=f"{m} cosine")
        ax.plot([p["tokens"] for p in ps], [p["wsd"] for p in ps], "s--", color=color, mfc="none",
                label=f"{m} WSD branch")
    ax.set_xscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("held-out speech loss")
    ax.set_title("WSD branches off shared trunks vs cosine cells")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
