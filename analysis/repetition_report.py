"""The report's data-repetition section (issue 22): how many epochs of each stream every cell saw and,
when any cell repeats data, the data-constrained law per group (analysis.data_constrained): effective
tokens per cell, R_D*, R_N*, and the allocation under the data constraint against the unconstrained one.

A cell's U in the fit is the sum of the unique training tokens of the streams it trained on (result.json's
`unique_tokens`), so D / U is its mean number of passes (exact for one stream, e.g. textless cells; with a
mix that repeats one stream more than the others it understates the repetition). The effective tokens D'
shown per cell are summed stream by stream.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from analysis.data_constrained import PAPER, BaseLaw, constrained_allocation, effective_tokens, fit_data_constrained
from analysis.document import Bullets, Figure, Heading, Para, Table
from analysis.errors import FitError

STREAMS = ("text", "interleaved", "speech")
REPEATS = 1.0 + 1e-9   # more passes than this over a stream is repetition
FIGURE = "repetition.png"
CAPTION = ("Effective tokens D' against tokens trained D, one point per cell, coloured by the most passes it made "
           "over any stream; on the dotted line every token counts as fresh. Below it repeated tokens are "
           "worth less (Muennighoff et al. 2023, with the group's fitted R_D* or, where not fitted, the paper's).")


def _stream_cols(frame, prefix: str) -> list[str]:
    return [f"{prefix}{s}" for s in STREAMS if f"{prefix}{s}" in frame.columns]


def repetition_summary(frame, params_col: str = "params_total", loss_col: str = "val_loss_speech",
                       group_cols=("family", "setup", "variant"), n_bootstrap: int = 200, seed: int = 0):
    """JSON-able {"cells": [...], "repeats": bool, "groups": {...}}, or None when no run recorded epochs."""
    if not _stream_cols(frame, "epochs_") or "state" not in frame.columns:
        return None
    done = frame[(frame["state"] == "DONE") & frame[_stream_cols(frame, "epochs_")].notna().any(axis=1)]
    if done.empty:
        return None
    done = done.assign(U=done[_stream_cols(done, "unique_tokens_")].sum(axis=1, min_count=1),
                       epochs_max=done[_stream_cols(done, "epochs_")].max(axis=1))
    group_cols = [c for c in group_cols if c in done.columns]
    cells, groups = [], {}
    by = group_cols or (lambda _: "all")
    for values, sub in done.groupby(by, sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        name = "/".join(str(v) for v in values if isinstance(v, str) and v) or "all"
        fit, entry = None, {"n_cells": int(len(sub)), "n_repeated": int((sub["epochs_max"] > REPEATS).sum())}
        usable = sub[[params_col, "tokens", "U", loss_col]].notna().all(axis=1) & (sub["U"] > 0)
        if entry["n_repeated"]:
            pts = sub[usable]
            try:
                fit = fit_data_constrained(pts[params_col], pts["tokens"], pts["U"], pts[loss_col],
                                           n_bootstrap=n_bootstrap, seed=seed)
                entry["fit"] = fit.to_dict()
                budget, u = float(pts["flops"].max()), float(np.median(pts["U"]))
                entry["allocation"] = constrained_allocation(budget, u, fit.base, fit.R_D_star, fit.R_N_star)
            except (FitError, ValueError) as e:
                entry["error"] = f"{type(e).__name__}: {e}"
        groups[name] = entry
        r_d = fit.R_D_star if fit is not None else PAPER["R_D_star"]
        for _, row in sub.iterrows():
            u = row["U"]
            d_eff = _effective(row, r_d)
            cells.append({"group": name, "key": row["key"], "member": row.get("member"), "N": row[params_col],
                          "tokens": row["tokens"], "unique_tokens": u,
                          "epochs": {c[len("epochs_"):]: row[c] for c in _stream_cols(sub, "epochs_")
                                     if not _nan(row[c])},
                          "effective_tokens": d_eff, "R_D_star_used": r_d,
                          "R_D_star_from": "fitted" if fit is not None else "Muennighoff et al. (2023)"})
    return {"cells": cells, "repeats": bool((done["epochs_max"] > REPEATS).any()), "groups": groups}


def _effective(row, r_d: float) -> float:
    """D' summed over the cell's streams: stream s gave epochs_s x U_s tokens from U_s unique ones."""
    total = math.nan
    for s in STREAMS:
        e, u = row.get(f"epochs_{s}"), row.get(f"unique_tokens_{s}")
        if not (_nan(e) or _nan(u)) and u > 0 and e > 0:
            total = (0.0 if math.isnan(total) else total) + float(effective_tokens(e * u, u, r_d))
    return total


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _g(x, digits: int = 3) -> str:
    return "-" if _nan(x) else f"{x:.{digits}g}"


def _iv(fit: dict, name: str) -> str:
    iv = fit["intervals"].get(name)
    return f"{_g(fit[name])} [{_g(iv['p2.5'])}, {_g(iv['p97.5'])}]" if iv else _g(fit[name])


def repetition_blocks(summary) -> list:
    """Document blocks of the section (empty when no run recorded its epochs)."""
    if not summary:
        return []
    blocks = [Heading(2, "Data repetition: epochs per cell")]
    blocks.append(Para("Passes over each stream's unique training tokens that every cell made (result.json "
                       "`epochs`; 1.5 is one full pass and half of the next, in a new permutation). U is the "
                       "unique tokens of the cell's streams together (the U of the fit below), D' the "
                       "fresh-token equivalent of its tokens under the data-constrained law of Muennighoff et "
                       "al. (2023), summed over its streams."))
    rows = []
    for c in summary["cells"]:
        ep = " ".join(f"{s} {v:.3g}" for s, v in c["epochs"].items())
        rows.append((c["group"], c["member"] or c["key"], _g(c["N"]), _g(c["tokens"]), _g(c["unique_tokens"]),
                     ep, _g(c["effective_tokens"]), f"{_g(c['R_D_star_used'])} ({c['R_D_star_from']})"))
    blocks.append(Table(("group", "member", "N", "D", "U", "epochs per stream", "D'", "R_D* used"), tuple(rows)))
    if not summary["repeats"]:
        blocks.append(Para("No cell read any stream more than once: every token was fresh, so the "
                           "data-constrained fit is not needed."))
        return blocks
    blocks.append(Figure(FIGURE, "Effective tokens", CAPTION))
    blocks.append(Heading(3, "Data-constrained law: L = E + A/N'^alpha + B/D'^beta"))
    items = []
    for name, g in summary["groups"].items():
        if not g["n_repeated"]:
            items.append(f"`{name}`: no cell repeats data")
        elif "error" in g:
            items.append(f"`{name}`: not fitted ({g['error']}); D' above uses the paper's R_D* = "
                         f"{PAPER['R_D_star']:g}")
        else:
            f, a = g["fit"], g["allocation"]
            un = a["unconstrained"]
            text = (f"`{name}`: R_D* = {_iv(f, 'R_D_star')}, R_N* = {_iv(f, 'R_N_star')} (95% bootstrap), "
                    f"base law {f['base']['source']}; {g['n_repeated']} of {g['n_cells']} cells repeat. "
                    f"At C = {a['flops']:.3g} FLOPs and U = {_g(a['unique_tokens'])} unique tokens the best "
                    f"allocation under the constraint is N = {_g(a['n'])}, D = {_g(a['d'])} ({a['epochs']:.3g} "
                    f"epochs, loss {a['loss']:.4g}), against the unconstrained N = {_g(un['n'])}, "
                    f"D = {_g(un['d'])} ({un['epochs']:.3g} epochs, loss {un['loss']:.4g} with repetition, "
                    f"{un['loss_fresh']:.4g} if every token were fresh)")
            for note in f["notes"]:
                text += f". {note}"
            items.append(text)
    blocks.append(Bullets(tuple(items)))
    return blocks


def draw_repetition(summary, out_dir) -> Path | None:
    """repetition.png (one panel per group) when any cell repeats data; returns its path, else None."""
    if not summary or not summary["repeats"]:
        return None
    import matplotlib  # heavy optional dependency: only when a report draws this figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: matplotlib only when a figure is drawn

    names = list(summary["groups"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.8 * len(names), 3.9), squeeze=False)
    for ax, name in zip(axes[0], names):
        cells = [c for c in summary["cells"] if c["group"] == name and not _nan(c["effective_tokens"])]
        d = np.array([c["tokens"] for c in cells], dtype=float)
        d_eff = np.array([c["effective_tokens"] for c in cells], dtype=float)
        ep = np.array([max(c["epochs"].values()) if c["epochs"] else np.nan for c in cells], dtype=float)
        if d.size:
            pts = ax.scatter(d, d_eff, c=ep, cmap="viridis", norm=matplotlib.colors.LogNorm(
                vmin=max(np.nanmin(ep), 1e-3), vmax=max(np.nanmax(ep), 1.0 + 1e-3)), edgecolor="k", linewidth=0.4)
            lim = [min(d.min(), d_eff.min()) / 1.5, max(d.max(), d_eff.max()) * 1.5]
            ax.plot(lim, lim, ":", color="gray")
            fig.colorbar(pts, ax=ax, label="epochs (most repeated stream)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            for axis in (ax.xaxis, ax.yaxis):  # minor labels collide over less than a decade
                axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        fitted = "fit" in summary["groups"][name]
        r_d = summary["groups"][name]["fit"]["R_D_star"] if fitted else PAPER["R_D_star"]
        ax.set_title(f"{name}: R_D* = {r_d:.3g} ({'fitted' if fitted else 'Muennighoff et al.'})", fontsize=9)
        ax.set_xlabel("tokens trained D")
        ax.set_ylabel("effective tokens D'")
    fig.tight_layout()
    path = Path(out_dir) / FIGURE
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
