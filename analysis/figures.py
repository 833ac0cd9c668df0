"""The report's six figures, drawn from a ``StudyFits`` (matplotlib, Agg backend).

Each ``plot_*`` function writes one PNG, always succeeds, and returns the caption of what it actually
drew (a caption promising a curve that is not there misleads). Where a fit refused or is not
identified, a note under the panels says why instead of the curve. Legends sit outside the data and
list only what is drawn; a published law is drawn only over its fitted compute range (dashed up to a
decade beyond it), and one in other loss units gets its own axis. Per-group figures have one panel per
group, three to a row.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

from analysis.accuracy import LEVEL
from analysis.allocation import allocation_from_fit, bootstrap_allocation, optimal_allocation
from analysis.reference import CUERVO_MARXER_SPEECH, drawable_spans
from analysis.study_fits import identified, metric_name, references_for, refused

DPI = 110
PANEL = (4.8, 3.7)  # inches per panel
GROUP_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                "tab:olive", "tab:cyan", "tab:gray")
REF_COLORS = {"interleaved": "#333333", "textless": "#777777", "text": "#aaaaaa"}
Z95 = 1.959963984540054  # normal quantile of a two-sided 95 % interval


def pyplot():
    """matplotlib.pyplot on the Agg backend (reports are written on cluster nodes and in CI)."""
    import matplotlib  # heavy: matplotlib only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: matplotlib only when a figure is drawn

    return plt


def _color(i: int) -> str:
    return GROUP_COLORS[i % len(GROUP_COLORS)]


def _sci(x: float) -> str:
    """1e19 -> '1e19', 3.2e18 -> '3.2e18' (compact labels for budgets and sizes)."""
    if not np.isfinite(x) or x <= 0 or 1e-2 <= x < 1e4:
        return f"{x:.3g}"
    text = f"{x:.2g}"
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    return f"{mantissa}e{int(exponent)}"


def log_axis(ax, which: str = "x") -> None:
    """Log scale whose ticks stay readable on a short range: under two decades matplotlib labels
    the minor ticks and they collide, so label 1-2-5 steps instead."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # heavy: matplotlib only when a figure is drawn

    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    lo, hi = ax.get_xlim() if which == "x" else ax.get_ylim()
    if lo > 0 and hi / lo < 100:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: _sci(v)))
        axis.set_minor_formatter(NullFormatter())


def footer(fig, lines) -> None:
    """Notes under the panels (e.g. fits that refused), with room made for them."""
    if not lines:
        return
    text = "\n".join(textwrap.fill(line, 150) for line in lines)
    n = text.count("\n") + 1
    frac = min(0.4, (0.17 * n + 0.12) / fig.get_figheight())
    fig.get_layout_engine().set(rect=(0, frac, 1, 1 - frac))
    fig.text(0.5, frac / 2, text, ha="center", va="center", fontsize=7.5, color="#8b0000",
             bbox=dict(boxstyle="round", fc="#fff4f4", ec="#d9a0a0"))


def note(ax, text: str, where: str = "center", width: int = 48, fontsize: float = 8) -> None:
    """Write ``text`` (wrapped) into the axes, boxed, e.g. why a fit is missing."""
    pos = {"center": (0.5, 0.5, "center", "center"), "bottom": (0.5, 0.03, "center", "bottom"),
           "top": (0.5, 0.97, "center", "top")}[where]
    wrapped = "\n".join(textwrap.fill(line, width) for line in text.splitlines())
    ax.text(pos[0], pos[1], wrapped, transform=ax.transAxes, ha=pos[2], va=pos[3], fontsize=fontsize,
            color="#8b0000", bbox=dict(boxstyle="round", fc="#fff4f4", ec="#d9a0a0"), zorder=10)


def _panels(plt, n: int, ncols_max: int = 3, panel=PANEL):
    """A figure with ``n`` panels (at least one) three to a row; unused slots hidden."""
    n = max(n, 1)
    ncols = min(n, ncols_max)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), squeeze=False,
                             layout="constrained")
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(plt, fig, path, title: str | None = None):
    if title:  # wrapped and left-aligned: a long centred title was clipped, or ran under a side legend
        fig.suptitle(textwrap.fill(title, max(40, int(fig.get_figwidth() * 9))), fontsize=11, x=0.01, ha="left")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _log_norm(values):
    from matplotlib.colors import LogNorm  # heavy: matplotlib only when a figure is drawn

    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v > 0)]
    lo, hi = (v.min(), v.max()) if v.size else (1.0, 10.0)
    return LogNorm(lo / 1.001, hi * 1.001)


def _no_runs(plt, path, title):
    fig, (ax,) = _panels(plt, 1, panel=(10, 3.5))  # wide enough for the title
    ax.set_axis_off()
    note(ax, "No finished runs with the chosen N, tokens, FLOPs and loss columns: nothing to plot.")
    return _save(plt, fig, path, title)


def _refusal_lines(items) -> list:
    return [f"{label}: {r.error}" for label, r in items]


def outside_legend(fig, handles, ncol: int = 4) -> None:
    """One legend for the figure, right of the panels (never over the data); nothing when nothing is listed."""
    if handles:
        fig.legend(handles=handles, loc="outside right upper", ncol=1, fontsize=7, frameon=False)


def _not_identified_line(g) -> str:
    return f"{g.label}: Approach 3 does not pin down " + ", ".join(d["param"] for d in g.unidentified)


def draw_reference(ax, fn, flops_range, lo: float, hi: float, **style) -> str | None:
    """Draw ``fn(C)`` solid over the fitted range and dashed up to a decade beyond it, inside [lo, hi];
    returns "fitted", "extrapolated" (only dashed parts) or None when nothing may be drawn."""
    spans = drawable_spans(flops_range, lo, hi)
    if spans is None:
        return None
    if spans["fitted"]:
        c = np.geomspace(*spans["fitted"], 60)
        ax.plot(c, fn(c), ls="-", **style)
    for a, b in spans["extrapolated"]:
        c = np.geomspace(a, b, 30)
        ax.plot(c, fn(c), ls="--", **{k: v for k, v in style.items() if k != "label"})
    return "fitted" if spans["fitted"] else "extrapolated"


def _range_txt(r) -> str:
    return f"{_sci(r[0])}-{_sci(r[1])} FLOPs"


# ----------------------------------------------------------------------------- (a) IsoFLOP


def plot_isoflop(study, path):
    """(a) Loss against N at each compute budget, the fitted parabola in ln N and its vertex with its 95 %
    interval; dashed: an identified Approach-3 law along the same constant-compute line."""
    from matplotlib.lines import Line2D  # heavy: matplotlib only when a figure is drawn

    plt = pyplot()
    title = f"IsoFLOP profiles (Approach 2): {study.loss_col} against N = {study.params_col} per compute budget"
    if not study.groups:
        _no_runs(plt, path, title)
        return "No finished runs: nothing is drawn."
    cmap = plt.get_cmap("viridis")
    norm = _log_norm(study.budgets)
    fig, axes = _panels(plt, len(study.groups))
    bad, budget_handles, drew = [], {}, {"star": False, "a3": False, "bar": False}
    for ax, g in zip(axes, study.groups):
        se = ({p.flops: s for p, s in zip(g.approach2.profiles, g.approach2.vertex_se)}
              if not refused(g.approach2) else {})
        for (c, prof), (_, sub) in zip(g.profiles, g.runs.groupby("budget", sort=True)):
            color = cmap(0.9 * norm(c))
            ax.scatter(sub["N"], sub["L"], s=18, color=color, zorder=3)
            budget_handles.setdefault(_sci(c), Line2D([], [], ls="-", marker="o", ms=4, color=color,
                                                      label=f"C={_sci(c)}"))
            n_grid = np.geomspace(sub["N"].min() / 1.3, sub["N"].max() * 1.3, 80)
            if identified(g):
                ax.plot(n_grid, g.approach3.predict(n_grid, c / (6 * n_grid)), ls="--", lw=0.8, color=color, alpha=0.6)
                drew["a3"] = True
            if refused(prof):
                bad.append((f"{g.label}, C={_sci(c)}", prof))
                continue
            c2, c1, c0 = prof.coeffs
            x = np.log(n_grid)
            ax.plot(n_grid, c2 * x**2 + c1 * x + c0, lw=1.3, color=color)
            s_v = next((v for f, v in se.items() if abs(f / prof.flops - 1) < 1e-6), None)
            if s_v is not None and np.isfinite(s_v):
                xerr = [[prof.n_opt * (1 - np.exp(-Z95 * s_v))], [prof.n_opt * (np.exp(Z95 * s_v) - 1)]]
                ax.errorbar([prof.n_opt], [prof.loss_opt], xerr=xerr, color=color, capsize=3, lw=1, zorder=4)
                drew["bar"] = True
            ax.plot([prof.n_opt], [prof.loss_opt], marker="*", ms=11, color=color, mec="black", mew=0.6, zorder=5)
            drew["star"] = True
        log_axis(ax, "x")
        ax.set(xlabel=f"N ({study.params_col})", ylabel=study.loss_col, title=g.label)
        ax.grid(alpha=0.3, which="major", lw=0.4)
    handles = [budget_handles[k] for k in sorted(budget_handles, key=float)]
    if drew["star"]:
        handles.append(Line2D([], [], ls="", marker="*", ms=10, mfc="white", mec="black",
                              label="vertex N_opt (bar: 95% interval)" if drew["bar"] else "vertex N_opt"))
    if drew["a3"]:
        handles.append(Line2D([], [], ls="--", color="gray", label="Approach 3 along the budget"))
    outside_legend(fig, handles, ncol=6)
    notes = (["No interior minimum (budget left out of Approach 2):"] + _refusal_lines(bad) if bad else [])
    notes += [_not_identified_line(g) + ": its dashed curves are not drawn" for g in study.groups if g.unidentified]
    footer(fig, notes)
    _save(plt, fig, path, title)
    cap = ("IsoFLOP profiles (Approach 2). Each colour is one compute budget: the points are the runs trained at "
           "that budget")
    cap += (", the solid curve the parabola fitted in ln N and the star its vertex N_opt(C)"
            + (" with its 95% interval (delta method, residual variance pooled over the budgets)" if drew["bar"]
               else "") if drew["star"] else "; no budget has an interior minimum, so no parabola or vertex is drawn")
    if drew["a3"]:
        cap += "; the dashed curve is the Approach-3 law along the same budget"
    if bad:
        cap += "; budgets without an interior minimum are named under the panels"
    return cap + "."


# ----------------------------------------------------------------------------- (b) L(N, D)


def _curve_col(loss_col: str) -> str:
    """metrics.jsonl name of a harvested loss column: val_loss_speech -> val_loss/speech."""
    for prefix in ("val_loss_", "eval_"):
        if loss_col.startswith(prefix):
            return prefix[:-1] + "/" + loss_col[len(prefix):]
    return loss_col


def _size_colorbar(plt, fig, axes, norm, cmap, label="N (model size)"):
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    sm.set_array([])
    fig.colorbar(sm, ax=axes, label=label, fraction=0.03, pad=0.01)


def plot_lnd(study, curves, path):
    """(b) Final loss against tokens D, one colour per model size, with the fitted L(N, D) at each
    size; thin lines: the runs' own evaluation curves from metrics.jsonl, where logged."""
    plt = pyplot()
    title = f"Approach 3: fitted L(N, D) = E + A/N^alpha + B/D^beta against the runs ({study.loss_col})"
    if not study.groups:
        _no_runs(plt, path, title)
        return "No finished runs: nothing is drawn."
    cmap = plt.get_cmap("plasma")
    norm = _log_norm(np.concatenate([g.runs["N"].to_numpy(float) for g in study.groups]))
    ccol = _curve_col(study.loss_col)
    have_curves = curves is not None and len(curves) > 0 and {"key", "tokens", ccol} <= set(curves.columns)
    fig, axes = _panels(plt, len(study.groups))
    drew = {"curves": False, "law": False}
    for ax, g in zip(axes, study.groups):
        d_lo, d_hi = g.runs["D"].min() / 1.5, g.runs["D"].max() * 1.5
        if have_curves:
            mine = curves[curves["key"].isin(set(g.runs["key"]))]
            sizes = dict(zip(g.runs["key"], g.runs["N"]))
            for key, cur in mine.groupby("key"):
                cur = cur[np.isfinite(cur[ccol].astype(float)) & (cur["tokens"] > 0)].sort_values("tokens")
                if len(cur) >= 2:
                    ax.plot(cur["tokens"], cur[ccol], lw=0.6, alpha=0.35, color=cmap(0.9 * norm(sizes[key])))
                    drew["curves"] = True
        for n, sub in g.runs.groupby("N", sort=True):
            color = cmap(0.9 * norm(n))
            ax.scatter(sub["D"], sub["L"], s=18, color=color, edgecolor="black", linewidth=0.3, zorder=3)
            if not refused(g.approach3):
                d = np.geomspace(d_lo, d_hi, 80)
                ax.plot(d, g.approach3.predict(n, d), lw=1.1, color=color)
                drew["law"] = True
        log_axis(ax, "x")
        ax.set(xlabel="tokens D", ylabel=study.loss_col, title=g.label)
        ax.grid(alpha=0.3, which="major", lw=0.4)
        if refused(g.approach3):
            note(ax, "Approach 3 refused: " + g.approach3.error, where="top")
        else:
            f = g.approach3
            ax.text(0.98, 0.97, f"E={f.E:.3g} A={f.A:.3g} B={f.B:.3g}\nalpha={f.alpha:.3f} beta={f.beta:.3f}"
                    + ("\nnot identified: " + ", ".join(d["param"] for d in g.unidentified) if g.unidentified else ""),
                    transform=ax.transAxes, ha="right", va="top", fontsize=7,
                    bbox=dict(boxstyle="round", fc="white", ec="#bbbbbb", alpha=0.9))
    _size_colorbar(plt, fig, axes, norm, cmap)
    _save(plt, fig, path, title)
    cap = "Approach 3 against the runs: final loss against tokens, one colour per model size"
    if drew["law"]:
        cap += ", the line the fitted L(N, D) = E + A/N^alpha + B/D^beta at that size"
    if drew["curves"]:
        cap += "; faint lines are the runs' own evaluation curves from metrics.jsonl"
    if any(g.unidentified for g in study.groups):
        cap += ("; a panel marked 'not identified' fits its runs but its parameters are not pinned down (see the "
                "Approach-3 section), so nothing is extrapolated from it")
    if any(refused(g.approach3) for g in study.groups):
        cap += "; a panel whose fit refused shows the runs only, with the reason"
    return cap + "."


# ----------------------------------------------------------------------------- (c) allocation


def _c_range(study, beyond: float = 100.0):
    if len(study.budgets):
        return np.geomspace(study.budgets.min() / 3, study.budgets.max() * beyond, 120)
    return np.geomspace(1e17, 1e23, 120)


def _textless_reference(c):
    law = CUERVO_MARXER_SPEECH
    return optimal_allocation(c, law.E, law.A, law.B, law.alpha, law.beta)


def plot_allocation(study, path):
    """(c) Compute-optimal N, D and tokens per parameter against C from identified Approach-3 fits, with
    the 2.5-97.5 % bootstrap band shaded, and the Approach-2 vertices with their 95 % intervals and
    weighted line; the textless reference (Cuervo & Marxer 2024) only over its fitted range."""
    from matplotlib.lines import Line2D  # heavy: matplotlib only when a figure is drawn
    from matplotlib.patches import Patch  # heavy: matplotlib only when a figure is drawn

    plt = pyplot()
    title = "Compute-optimal allocation under C = 6ND: Approach 3 (line, 95% bootstrap band), Approach 2 (points)"
    any_a3 = any(identified(g) for g in study.groups)
    c = _c_range(study, 100.0 if any_a3 else 3.0)
    fig, axes = _panels(plt, 3)
    keys = (("n_opt", "N_opt (parameters)"), ("d_opt", "D_opt (tokens)"), ("tokens_per_param", "D_opt / N_opt"))
    handles, drew = {}, {"ref": None, "band": False, "a2": False, "a2bars": False, "a2line": False}
    for ax, (key, ylabel) in zip(axes, keys):
        drew["ref"] = draw_reference(ax, lambda x: getattr(_textless_reference(x), key), CUERVO_MARXER_SPEECH.flops_range,
                                     c[0], c[-1], color="black", lw=1.3)
        for i, g in enumerate(study.groups):
            color = _color(i)
            if identified(g):
                al = allocation_from_fit(g.approach3, c)
                ax.plot(c, getattr(al, key), color=color, lw=1.6)
                handles.setdefault(g.label, Line2D([], [], color=color, lw=1.6,
                                                   label=f"{g.label}: Approach 3 (a={g.approach3.a:.3f})"))
                if g.bootstrap is not None and not refused(g.bootstrap):
                    band = bootstrap_allocation(g.bootstrap.samples, c)[key]
                    ax.fill_between(c, band["p2.5"], band["p97.5"], color=color, alpha=0.2, lw=0)
                    drew["band"] = True
            if not refused(g.approach2):
                f2 = g.approach2
                flops = np.array([p.flops for p in f2.profiles])
                pn = np.array([p.n_opt for p in f2.profiles])
                se = np.array(f2.vertex_se, float)
                y = {"n_opt": pn, "d_opt": flops / (6 * pn), "tokens_per_param": flops / (6 * pn * pn)}[key]
                power = {"n_opt": 1, "d_opt": -1, "tokens_per_param": -2}[key]  # d ln y / d ln N_opt
                lo, hi = y * np.exp(-Z95 * abs(power) * se), y * np.exp(Z95 * abs(power) * se)
                ok = np.isfinite(se)
                if ok.any():
                    ax.errorbar(flops[ok], y[ok], yerr=[y[ok] - lo[ok], hi[ok] - y[ok]], ls="", color=color,
                                capsize=2, lw=0.9, zorder=3)
                    drew["a2bars"] = True
                ax.scatter(flops, y, color=color, edgecolor="black", s=28, zorder=4)
                drew["a2"] = True
                if f2.n_budgets >= 2:
                    cc = np.geomspace(flops.min(), flops.max(), 20)
                    n_line = f2.n_opt(cc)
                    ax.plot(cc, {"n_opt": n_line, "d_opt": cc / (6 * n_line),
                                 "tokens_per_param": cc / (6 * n_line**2)}[key], color=color, lw=1.0, ls="-.")
                    drew["a2line"] = True
                handles.setdefault(g.label + " A2", Line2D([], [], ls="-." if f2.n_budgets >= 2 else "", marker="o",
                                                           color=color, mec="black",
                                                           label=f"{g.label}: Approach 2 vertices (a={f2.a:.3f})"))
        if len(study.budgets) and any_a3:
            ax.axvspan(study.budgets.max() * 1.05, c[-1], color="#ececec", zorder=0, lw=0)
        log_axis(ax, "x")
        log_axis(ax, "y")
        ax.set(xlabel="compute C (FLOPs)", ylabel=ylabel)
        ax.grid(alpha=0.3, which="major", lw=0.4)
    legend = list(handles.values())
    if drew["ref"]:
        legend.append(Line2D([], [], color="black", lw=1.3, label=f"textless ref., C&M 2024 (a={CUERVO_MARXER_SPEECH.a:.2f}; "
                                                                   f"dashed beyond its fitted range)"))
    if drew["a2bars"]:
        legend.append(Line2D([], [], ls="", marker="|", ms=8, color="black", label="95% interval of a vertex"))
    if drew["band"]:
        legend.append(Patch(color="gray", alpha=0.3, label="95% bootstrap band"))
    if len(study.budgets) and any_a3:
        legend.append(Patch(color="#ececec", label="beyond the largest budget"))
    outside_legend(fig, legend, ncol=3)
    notes = [f"{g.label}: no Approach-3 fit ({g.approach3.error})" for g in study.groups if refused(g.approach3)]
    notes += [_not_identified_line(g) + ": no allocation drawn from it" for g in study.groups if g.unidentified]
    notes += [f"{g.label}: no Approach 2 ({g.approach2.error})" for g in study.groups if refused(g.approach2)]
    if drew["ref"] is None:
        notes.append(f"The textless reference (Cuervo & Marxer 2024, fitted on about "
                     f"{_range_txt(CUERVO_MARXER_SPEECH.flops_range)}) is more than a decade from these budgets: "
                     f"listed in the report's table, not drawn.")
    footer(fig, notes)
    _save(plt, fig, path, title)
    parts = []
    if any_a3:
        parts.append("compute-optimal model size, tokens and tokens per parameter against compute from Approach 3 "
                     "(line" + (", shaded 2.5-97.5 % bootstrap band" if drew["band"] else "") + "; the grey area "
                     "extrapolates beyond the largest budget)")
    if drew["a2"]:
        parts.append("the Approach-2 IsoFLOP vertices (points" + (", bars: 95% intervals" if drew["a2bars"] else
                                                                  ", without intervals: too few runs to estimate "
                                                                  "the noise")
                     + ("; dash-dot: the weighted regression over its budgets" if drew["a2line"] else "") + ")")
    if drew["ref"]:
        parts.append("the textless reference of Cuervo & Marxer (2024) in black, solid over its fitted compute "
                     "range and dashed up to a decade beyond")
    cap = "Compute-optimal allocation: " + ("; ".join(parts) if parts else "nothing could be drawn")
    if not any_a3:
        cap += "; no Approach-3 fit is identified, so no allocation line is drawn"
    if notes:
        cap += "; what is not drawn, and why, is named under the panels"
    return cap + "."


# ----------------------------------------------------------------------------- (d) loss frontier


def plot_loss_frontier(study, path):
    """(d) Every run's loss against C (faint), the best run per budget (bold), the fitted
    L(C) = E + k C^-gamma per group, and, on its own axis, the textless reference frontier L*(C) from
    Cuervo & Marxer's L(N, D) under compute-optimal allocation, over its fitted range only."""
    from matplotlib.lines import Line2D  # heavy: matplotlib only when a figure is drawn

    plt = pyplot()
    title = f"Loss against compute: best {study.loss_col} per budget and L(C) = E + k C^-gamma"
    c = _c_range(study)
    fig, axes = _panels(plt, 1, panel=(11.0, 5.0))
    ax = axes[0]
    refusals, legend = [], []
    for i, g in enumerate(study.groups):
        color = _color(i)
        ax.scatter(g.runs["C"], g.runs["L"], s=9, color=color, alpha=0.3, lw=0)
        if g.frontier is not None:
            ax.scatter(g.frontier["flops"], g.frontier["loss"], s=30, color=color, edgecolor="black", lw=0.5, zorder=4)
        if refused(g.loss_law):
            refusals.append((g.label, g.loss_law))
            legend.append(Line2D([], [], ls="", marker="o", color=color, mec="black", label=f"{g.label} (no L(C) fit)"))
            continue
        law = g.loss_law
        cc = np.geomspace(g.runs["C"].min() / 2, g.runs["C"].max() * 100, 100)
        ax.plot(cc, law.predict(cc), color=color, lw=1.6)
        legend.append(Line2D([], [], marker="o", color=color, mec="black", lw=1.6,
                             label=f"{g.label}: {law.E:.3g} + {law.k:.3g} C^-{law.gamma:.3g}"))
    if not study.groups:
        note(ax, "No finished runs: nothing to plot.")
    log_axis(ax, "x")
    ax.set(xlabel="compute C (FLOPs)", ylabel=study.loss_col)
    ax.grid(alpha=0.3, which="major", lw=0.4)
    lo, hi = ax.get_xlim()
    spans = drawable_spans(CUERVO_MARXER_SPEECH.flops_range, lo, hi)
    notes = ["No L(C) fit:"] + _refusal_lines(refusals) if refusals else []
    if spans is not None:  # other loss units: its own axis, so its level is never read against ours
        twin = ax.twinx()
        draw_reference(twin, lambda x: _textless_reference(x).loss_opt, CUERVO_MARXER_SPEECH.flops_range, lo, hi,
                       color="black", lw=1.1)
        twin.set_ylabel("C&M 2024 L*(C), their loss units", fontsize=8)
        ax.set_xlim(lo, hi)
        legend.append(Line2D([], [], color="black", lw=1.1, label="textless ref. L*(C), C&M 2024 (right axis; "
                                                                  "dashed beyond its fitted range)"))
    else:
        notes.append(f"The textless reference (Cuervo & Marxer 2024, fitted on about "
                     f"{_range_txt(CUERVO_MARXER_SPEECH.flops_range)}) is more than a decade from these budgets: not "
                     f"drawn.")
    if study.groups:
        legend.append(Line2D([], [], ls="", marker="o", ms=6, mfc="white", mec="black",
                             label="large points: best run per budget; faint: every run"))
    outside_legend(fig, legend)
    footer(fig, notes)
    _save(plt, fig, path, title)
    cap = "Loss against compute: every run (faint) and the best run per budget (bold)"
    if any(not refused(g.loss_law) for g in study.groups):
        cap += ", with the fitted L(C) = E + k C^-gamma per group where it could be fitted"
    if spans is not None:
        cap += ("; on the right axis, in its own loss units, the textless frontier L*(C) implied by Cuervo & "
                "Marxer's L(N, D) under compute-optimal allocation (compare slopes, not levels), solid over its "
                "fitted range and dashed up to a decade beyond")
    else:
        cap += "; the textless reference is more than a decade from these budgets and is not drawn"
    if refusals:
        cap += "; groups without an L(C) fit are named under the plot"
    return cap + "."


# ----------------------------------------------------------------------------- (e) metrics


def plot_metrics(study, path):
    """(e) Each downstream metric at the lowest-loss run of every budget, with its 95 % Wilson interval
    and the chance line; Q(C) = k C^gamma drawn only where the data carry a trend; published laws only
    over their fitted compute range."""
    from matplotlib.lines import Line2D  # heavy: matplotlib only when a figure is drawn

    plt = pyplot()
    title = "Downstream metrics against compute: lowest-loss run per budget (95% intervals) and Q(C) = k C^gamma"
    cols = study.metric_cols
    fig, axes = _panels(plt, len(cols), panel=(5.0, 3.8) if cols else (10, 3.5))
    if not cols:
        axes[0].set_axis_off()
        note(axes[0], "No downstream metrics (result.json has no 'eval' scores): nothing to plot.")
        _save(plt, fig, path, title)
        return "No downstream metrics were recorded: nothing is drawn."
    lo_c, hi_c = (study.budgets.min() / 2, study.budgets.max() * 2) if len(study.budgets) else (1e17, 1e22)
    handles, notes, far = {}, [], set()
    drew = {"bars": False, "no_bars": False, "law": False, "ref": False, "ref_dashed": False}
    n_groups = max(len(study.groups), 1)
    for ax, col in zip(axes, cols):
        chance = None
        for i, g in enumerate(study.groups):
            color = _color(i)
            fr = g.metric_frontiers.get(col)
            law = g.metric_laws.get(col)
            if fr is not None and len(fr["flops"]):
                chance = fr["chance"]
                shift = 10 ** (0.02 * (i - (n_groups - 1) / 2))  # side by side, so bars do not hide each other
                x = fr["flops"] * shift
                has = np.isfinite(fr["lo"])
                if has.any():
                    ax.errorbar(x[has], fr["value"][has], yerr=[fr["value"][has] - fr["lo"][has],
                                                              fr["hi"][has] - fr["value"][has]],
                                ls="", marker="o", ms=5, color=color, mec="black", mew=0.5, capsize=3, lw=1, zorder=4)
                    drew["bars"] = True
                if (~has).any():
                    ax.scatter(x[~has], fr["value"][~has], marker="s", s=26, color=color, edgecolor="black", zorder=4)
                    drew["no_bars"] = True
                handles.setdefault(g.label, Line2D([], [], ls="", marker="o", color=color, mec="black", label=g.label))
            if refused(law):
                notes.append(f"{metric_name(col)}, {g.label}: no Q(C) fit ({law.error})")
            elif law.law:
                cc = np.geomspace(fr["flops"].min(), fr["flops"].max(), 40)
                ax.plot(cc, law.predict(cc), color=color, lw=1.5)
                drew["law"] = True
                notes.append(f"{metric_name(col)}, {g.label}: Q = {law.k:.3g} C^{law.gamma:.3f}, {law.verdict}")
            else:
                notes.append(f"{metric_name(col)}, {g.label}: {law.verdict}")
        if chance is not None:
            ax.axhline(chance, color="black", lw=0.9, ls=":", zorder=1)
        for ref in references_for(col):
            how = draw_reference(ax, ref.predict, ref.flops_range, lo_c, hi_c, color=REF_COLORS.get(ref.setup, "gray"),
                                 lw=1.0)
            if how is None:
                far.add(_range_txt(ref.flops_range))
                continue
            drew["ref"] = True
            drew["ref_dashed"] |= how == "extrapolated" or bool(drawable_spans(ref.flops_range, lo_c, hi_c)["extrapolated"])
            handles.setdefault("ref " + ref.setup, Line2D([], [], color=REF_COLORS.get(ref.setup, "gray"), lw=1.0,
                                                          label=f"SIMS Fig. 1, {ref.setup} (published)"))
        ax.set_xlim(lo_c, hi_c)
        log_axis(ax, "x")
        lo, hi = ax.get_ylim()
        ax.set_ylim(max(lo, 0.0), min(hi, 1.0))  # an accuracy lives in [0, 1]
        ax.set(xlabel="compute C (FLOPs)", ylabel="accuracy", title=metric_name(col))
        ax.grid(alpha=0.3, which="major", lw=0.4)
    legend = list(handles.values())
    legend.append(Line2D([], [], color="black", lw=0.9, ls=":", label="chance (0.5 for a pair benchmark)"))
    if drew["law"]:
        legend.append(Line2D([], [], color="gray", lw=1.5, label="Q(C) = k C^gamma where the data carry a trend"))
    if drew["ref_dashed"]:
        legend.append(Line2D([], [], color="gray", lw=1.0, ls="--", label="published law beyond its fitted range"))
    outside_legend(fig, legend, ncol=4)
    if far:
        notes.append(f"SIMS Figure-1 laws (fitted on about {', '.join(sorted(far))}) are more than a decade from these "
                     f"budgets: listed in the report's table, not drawn.")
    footer(fig, notes)
    _save(plt, fig, path, title)
    cap = ("Downstream metrics against compute: at each budget the accuracy of the group's lowest-loss run (chosen "
           "by loss, so not for its own noise)")
    if drew["bars"]:
        cap += f", with its {100 * LEVEL:g}% Wilson interval over the benchmark's pairs"
    if drew["no_bars"]:
        cap += "; squares are accuracies whose pair count is unknown, so they have no interval"
    cap += "; the dotted line is chance; groups sit side by side at each budget so their bars stay visible"
    cap += ("; Q(C) = k C^gamma is drawn only where some point is above chance and gamma's 95% interval excludes 0, "
            "and every panel's verdict is written under the panels" if drew["law"] else
            "; no law is drawn, because no metric shows a trend distinguishable from noise at this scale (each "
            "verdict is written under the panels)")
    if drew["ref"]:
        cap += ("; grey lines are the SIMS Figure-1 laws, solid over their fitted compute range and dashed up to a "
                "decade beyond")
    elif far:
        cap += "; the SIMS Figure-1 laws were fitted more than a decade from these budgets and are not drawn"
    return cap + "."


# ----------------------------------------------------------------------------- (f) residuals


def plot_residuals(study, path):
    """(f) Relative residuals (observed - fitted) / fitted of the Approach-3 fit against N,
    coloured by compute budget; a trend means the law's form misses something, scatter is noise."""
    plt = pyplot()
    title = "Approach-3 residuals: (observed - fitted) / fitted"
    if not study.groups:
        _no_runs(plt, path, title)
        return "No finished runs: nothing is drawn."
    cmap = plt.get_cmap("viridis")
    norm = _log_norm(study.budgets)
    fig, axes = _panels(plt, len(study.groups))
    for ax, g in zip(axes, study.groups):
        ax.axhline(0, color="black", lw=0.8)
        colors = [cmap(0.9 * norm(c)) for c in g.runs["C"]]
        if refused(g.approach3):
            ax.scatter(g.runs["N"], np.zeros(len(g.runs)), s=0)  # keeps the runs' N range on the axis
            note(ax, "Approach 3 refused: " + g.approach3.error)
        else:
            pred = g.approach3.predict(g.runs["N"], g.runs["D"])
            res = 100 * (g.runs["L"].to_numpy(float) - pred) / pred
            ax.scatter(g.runs["N"], res, c=colors, s=22, edgecolor="black", lw=0.3, zorder=3)
            lim = max(1.3 * float(np.abs(res).max()), 0.05)  # noise-free data would otherwise zoom to 1e-12 %
            ax.set_ylim(-lim, lim)
            ax.text(0.02, 0.97, f"RMS {np.sqrt(np.mean(res**2)):.2g}%, max |r| {np.abs(res).max():.2g}%",
                    transform=ax.transAxes, fontsize=7, va="top")
        log_axis(ax, "x")
        ax.set(xlabel=f"N ({study.params_col})", ylabel="residual (%)", title=g.label)
        ax.grid(alpha=0.3, which="major", lw=0.4)
    _size_colorbar(plt, fig, axes, norm, cmap, label="compute budget C (FLOPs)")
    _save(plt, fig, path, title)
    return ("Relative residuals (observed - fitted) / fitted of the Approach-3 fit against model size, coloured by "
            "compute budget; a trend with N or C means the law's form misses something, scatter is noise"
            + ("; a group whose fit refused says why in its panel" if any(refused(g.approach3) for g in study.groups)
               else "") + ".")


FIGURES = (
    ("isoflop.png", "IsoFLOP profiles"),
    ("lnd_fit.png", "L(N, D) against the runs"),
    ("allocation.png", "Compute-optimal allocation"),
    ("loss_frontier.png", "Loss against compute"),
    ("metrics.png", "Downstream metrics against compute"),
    ("residuals.png", "Approach-3 residuals"),
)


def draw_all(study, curves, out_dir) -> dict:
    """Write the six figures into out_dir; returns {file name: caption of what was drawn} in FIGURES order."""

    out = Path(out_dir)
    return {FIGURES[0][0]: plot_isoflop(study, out / FIGURES[0][0]),
            FIGURES[1][0]: plot_lnd(study, curves, out / FIGURES[1][0]),
            FIGURES[2][0]: plot_allocation(study, out / FIGURES[2][0]),
            FIGURES[3][0]: plot_loss_frontier(study, out / FIGURES[3][0]),
            FIGURES[4][0]: plot_metrics(study, out / FIGURES[4][0]),
            FIGURES[5][0]: plot_residuals(study, out / FIGURES[5][0])}
