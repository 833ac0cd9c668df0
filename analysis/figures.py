"""The report's six figures, drawn from a ``StudyFits`` (matplotlib, Agg backend).

Each ``plot_*`` function writes one PNG and always succeeds: where a fit refused, the panel
carries a note saying why instead of the curve (a missing curve with no explanation reads as
a bug). Per-group figures have one panel per group, three to a row.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np

from analysis.allocation import allocation_from_fit, bootstrap_allocation, optimal_allocation
from analysis.reference import CUERVO_MARXER_SPEECH
from analysis.study_fits import metric_name, references_for, refused

DPI = 110
PANEL = (4.8, 3.7)  # inches per panel
GROUP_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                "tab:olive", "tab:cyan", "tab:gray")
REF_STYLES = {"interleaved": (0, (1, 1.5)), "textless": (0, (5, 2, 1, 2)), "text": (0, (6, 3))}


def pyplot():
    """matplotlib.pyplot on the Agg backend (reports are written on cluster nodes and in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

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
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _log_norm(values):
    from matplotlib.colors import LogNorm

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


# ----------------------------------------------------------------------------- (a) IsoFLOP


def plot_isoflop(study, path):
    """(a) Loss against N at each compute budget, the fitted parabola in ln N and its vertex;
    dashed: the Approach-3 law along the same constant-compute line."""
    plt = pyplot()
    title = f"IsoFLOP profiles (Approach 2): {study.loss_col} against N = {study.params_col} per compute budget"
    if not study.groups:
        return _no_runs(plt, path, title)
    cmap = plt.get_cmap("viridis")
    norm = _log_norm(study.budgets)
    fig, axes = _panels(plt, len(study.groups))
    bad = []
    for ax, g in zip(axes, study.groups):
        for (c, prof), (_, sub) in zip(g.profiles, g.runs.groupby("budget", sort=True)):
            color = cmap(0.9 * norm(c))
            ax.scatter(sub["N"], sub["L"], s=18, color=color, zorder=3, label=f"C={_sci(c)}")
            n_grid = np.geomspace(sub["N"].min() / 1.3, sub["N"].max() * 1.3, 80)
            if not refused(g.approach3):
                ax.plot(n_grid, g.approach3.predict(n_grid, c / (6 * n_grid)), ls="--", lw=0.8, color=color, alpha=0.6)
            if refused(prof):
                bad.append((f"{g.label}, C={_sci(c)}", prof))
                continue
            c2, c1, c0 = prof.coeffs
            x = np.log(n_grid)
            ax.plot(n_grid, c2 * x**2 + c1 * x + c0, lw=1.3, color=color)
            ax.plot([prof.n_opt], [prof.loss_opt], marker="*", ms=11, color=color, mec="black", mew=0.6, zorder=4)
        log_axis(ax, "x")
        ax.set(xlabel=f"N ({study.params_col})", ylabel=study.loss_col, title=g.label)
        ax.grid(alpha=0.3, which="major", lw=0.4)
        # IsoFLOP valleys move right and down with C, so the lower left stays empty
        ax.legend(fontsize=6.5, loc="lower left", ncol=1, framealpha=0.85, title="star: vertex",
                  title_fontsize=6.5)
    footer(fig, ["No interior minimum (budget left out of Approach 2):"] + _refusal_lines(bad) if bad else [])
    return _save(plt, fig, path, title)


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
        return _no_runs(plt, path, title)
    cmap = plt.get_cmap("plasma")
    norm = _log_norm(np.concatenate([g.runs["N"].to_numpy(float) for g in study.groups]))
    ccol = _curve_col(study.loss_col)
    have_curves = curves is not None and len(curves) > 0 and {"key", "tokens", ccol} <= set(curves.columns)
    fig, axes = _panels(plt, len(study.groups))
    for ax, g in zip(axes, study.groups):
        d_lo, d_hi = g.runs["D"].min() / 1.5, g.runs["D"].max() * 1.5
        if have_curves:
            mine = curves[curves["key"].isin(set(g.runs["key"]))]
            sizes = dict(zip(g.runs["key"], g.runs["N"]))
            for key, cur in mine.groupby("key"):
                cur = cur[np.isfinite(cur[ccol].astype(float)) & (cur["tokens"] > 0)].sort_values("tokens")
                if len(cur) >= 2:
                    ax.plot(cur["tokens"], cur[ccol], lw=0.6, alpha=0.35, color=cmap(0.9 * norm(sizes[key])))
        for n, sub in g.runs.groupby("N", sort=True):
            color = cmap(0.9 * norm(n))
            ax.scatter(sub["D"], sub["L"], s=18, color=color, edgecolor="black", linewidth=0.3, zorder=3)
            if not refused(g.approach3):
                d = np.geomspace(d_lo, d_hi, 80)
                ax.plot(d, g.approach3.predict(n, d), lw=1.1, color=color)
        log_axis(ax, "x")
        ax.set(xlabel="tokens D", ylabel=study.loss_col, title=g.label)
        ax.grid(alpha=0.3, which="major", lw=0.4)
        if refused(g.approach3):
            note(ax, "Approach 3 refused: " + g.approach3.error, where="top")
        else:
            f = g.approach3
            ax.text(0.98, 0.97, f"E={f.E:.3g} A={f.A:.3g} B={f.B:.3g}\nalpha={f.alpha:.3f} beta={f.beta:.3f}",
                    transform=ax.transAxes, ha="right", va="top", fontsize=7,
                    bbox=dict(boxstyle="round", fc="white", ec="#bbbbbb", alpha=0.9))
    _size_colorbar(plt, fig, axes, norm, cmap)
    return _save(plt, fig, path, title)


# ----------------------------------------------------------------------------- (c) allocation


def _c_range(study):
    if len(study.budgets):
        return np.geomspace(study.budgets.min() / 3, study.budgets.max() * 100, 120)
    return np.geomspace(1e17, 1e23, 120)


def _textless_reference(c):
    law = CUERVO_MARXER_SPEECH
    return optimal_allocation(c, law.E, law.A, law.B, law.alpha, law.beta)


def plot_allocation(study, path):
    """(c) Compute-optimal N, D and tokens per parameter against C from Approach 3, with the
    2.5-97.5 % bootstrap band shaded and the Approach-2 IsoFLOP vertices as points; dotted: the
    textless reference (Cuervo & Marxer 2024)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    plt = pyplot()
    title = "Compute-optimal allocation under C = 6ND: Approach 3 (line, 95% bootstrap band), Approach 2 (points)"
    c = _c_range(study)
    fig, axes = _panels(plt, 3)
    ref = _textless_reference(c)
    keys = (("n_opt", "N_opt (parameters)"), ("d_opt", "D_opt (tokens)"), ("tokens_per_param", "D_opt / N_opt"))
    refusals = [(g.label, g.approach3) for g in study.groups if refused(g.approach3)]
    for ax, (key, ylabel) in zip(axes, keys):
        ax.plot(c, getattr(ref, key), ls=":", color="black", lw=1.3,
                label=f"textless ref., C&M 2024 (a={CUERVO_MARXER_SPEECH.a:.2f})")
        for i, g in enumerate(study.groups):
            if refused(g.approach3):
                continue
            color = _color(i)
            al = allocation_from_fit(g.approach3, c)
            ax.plot(c, getattr(al, key), color=color, lw=1.6, label=f"{g.label} (a={g.approach3.a:.3f})")
            if g.bootstrap is not None and not refused(g.bootstrap):
                band = bootstrap_allocation(g.bootstrap.samples, c)[key]
                ax.fill_between(c, band["p2.5"], band["p97.5"], color=color, alpha=0.2, lw=0)
            if not refused(g.approach2):
                pn = np.array([p.n_opt for p in g.approach2.profiles])
                pd = np.array([p.d_opt for p in g.approach2.profiles])
                y = {"n_opt": pn, "d_opt": pd, "tokens_per_param": pd / pn}[key]
                ax.scatter([p.flops for p in g.approach2.profiles], y, color=color, edgecolor="black", s=28, zorder=4)
        if len(study.budgets):
            ax.axvspan(study.budgets.max() * 1.05, c[-1], color="#ececec", zorder=0, lw=0)
        log_axis(ax, "x")
        log_axis(ax, "y")
        ax.set(xlabel="compute C (FLOPs)", ylabel=ylabel)
        ax.grid(alpha=0.3, which="major", lw=0.4)
    handles, labels = axes[0].get_legend_handles_labels()
    handles += [Line2D([], [], ls="", marker="o", mfc="white", mec="black", label="IsoFLOP vertex (Approach 2)"),
                Patch(color="#ececec", label="beyond the largest budget")]
    axes[0].legend(handles=handles, fontsize=6.5, loc="upper left")
    footer(fig, ["No Approach-3 fit:"] + _refusal_lines(refusals) if refusals else [])
    return _save(plt, fig, path, title)


# ----------------------------------------------------------------------------- (d) loss frontier


def plot_loss_frontier(study, path):
    """(d) Every run's loss against C (faint), the best run per budget (bold), the fitted
    L(C) = E + k C^-gamma per group, and the textless reference frontier L*(C) derived from
    Cuervo & Marxer's L(N, D) through the compute-optimal allocation."""
    plt = pyplot()
    title = f"Loss against compute: best {study.loss_col} per budget and L(C) = E + k C^-gamma"
    c = _c_range(study)
    fig, axes = _panels(plt, 1, panel=(8.0, 5.0))
    ax = axes[0]
    ax.plot(c, _textless_reference(c).loss_opt, ls="--", color="black", lw=1.1,
            label="textless ref. L*(C) from C&M 2024 L(N, D) (their loss units)")
    refusals = []
    for i, g in enumerate(study.groups):
        color = _color(i)
        ax.scatter(g.runs["C"], g.runs["L"], s=9, color=color, alpha=0.3, lw=0)
        if g.frontier is not None:
            ax.scatter(g.frontier["flops"], g.frontier["loss"], s=30, color=color, edgecolor="black", lw=0.5,
                       zorder=4, label=f"{g.label} (no fit)" if refused(g.loss_law) else None)
        if refused(g.loss_law):
            refusals.append((g.label, g.loss_law))
            continue
        law = g.loss_law
        cc = np.geomspace(g.runs["C"].min() / 2, g.runs["C"].max() * 100, 100)
        ax.plot(cc, law.predict(cc), color=color, lw=1.6,
                label=f"{g.label}: {law.E:.3g} + {law.k:.3g} C^-{law.gamma:.3g}")
    if not study.groups:
        note(ax, "No finished runs: nothing to plot.")
    log_axis(ax, "x")
    ax.set(xlabel="compute C (FLOPs)", ylabel=study.loss_col)
    ax.grid(alpha=0.3, which="major", lw=0.4)
    ax.legend(fontsize=7, loc="upper right", title="large points: best run per budget", title_fontsize=7)
    footer(fig, ["No L(C) fit:"] + _refusal_lines(refusals) if refusals else [])
    return _save(plt, fig, path, title)


# ----------------------------------------------------------------------------- (e) metrics


def plot_metrics(study, path):
    """(e) Each downstream metric's best score per budget against C with Q(C) = k C^gamma per
    group; for sSC/tSC also the SIMS Figure-1 laws (interleaved, textless, text LM)."""
    plt = pyplot()
    title = "Downstream metrics against compute: best run per budget and Q(C) = k C^gamma"
    cols = study.metric_cols
    fig, axes = _panels(plt, len(cols), panel=(5.4, 4.0) if cols else (10, 3.5))
    if not cols:
        axes[0].set_axis_off()
        note(axes[0], "No downstream metrics (result.json has no 'eval' scores): nothing to plot.")
        return _save(plt, fig, path, title)
    c = _c_range(study)
    refusals = []
    for ax, col in zip(axes, cols):
        for i, g in enumerate(study.groups):
            color = _color(i)
            fr = g.metric_frontiers.get(col)
            law = g.metric_laws.get(col)
            if fr is not None:
                ax.scatter(fr["flops"], fr["value"], s=26, color=color, edgecolor="black", lw=0.5, zorder=4,
                           label=f"{g.label} (no fit)" if refused(law) else None)
            if refused(law):
                refusals.append((f"{metric_name(col)}, {g.label}", law))
                continue
            ax.plot(c, law.predict(c), color=color, lw=1.5, label=f"{g.label}: {law.k:.3g} C^{law.gamma:.3f}")
        for ref in references_for(col):
            ax.plot(c, ref.predict(c), color="#555555", lw=1.0, ls=REF_STYLES.get(ref.setup, ":"),
                    label=f"SIMS Fig. 1, {ref.setup}: {ref.k} C^{ref.gamma}")
        log_axis(ax, "x")
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, min(hi, 1.0))  # an accuracy cannot pass 1; extrapolated references would
        ax.set(xlabel="compute C (FLOPs)", ylabel="accuracy", title=metric_name(col))
        ax.grid(alpha=0.3, which="major", lw=0.4)
        ax.legend(fontsize=6.5, loc="upper left")
    footer(fig, ["No Q(C) fit:"] + _refusal_lines(refusals) if refusals else [])
    return _save(plt, fig, path, title)


# ----------------------------------------------------------------------------- (f) residuals


def plot_residuals(study, path):
    """(f) Relative residuals (observed - fitted) / fitted of the Approach-3 fit against N,
    coloured by compute budget; a trend means the law's form misses something, scatter is noise."""
    plt = pyplot()
    title = "Approach-3 residuals: (observed - fitted) / fitted"
    if not study.groups:
        return _no_runs(plt, path, title)
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
    return _save(plt, fig, path, title)


FIGURES = (
    ("isoflop.png", "IsoFLOP profiles"),
    ("lnd_fit.png", "L(N, D) against the runs"),
    ("allocation.png", "Compute-optimal allocation"),
    ("loss_frontier.png", "Loss against compute"),
    ("metrics.png", "Downstream metrics against compute"),
    ("residuals.png", "Approach-3 residuals"),
)


def draw_all(study, curves, out_dir) -> list:
    """Write the six figures into out_dir; returns their paths in FIGURES order."""
    from pathlib import Path

    out = Path(out_dir)
    return [plot_isoflop(study, out / FIGURES[0][0]), plot_lnd(study, curves, out / FIGURES[1][0]),
            plot_allocation(study, out / FIGURES[2][0]), plot_loss_frontier(study, out / FIGURES[3][0]),
            plot_metrics(study, out / FIGURES[4][0]), plot_residuals(study, out / FIGURES[5][0])]
