"""The figure of a proposal: finished, planned and proposed cells on the (N, D) plane with IsoFLOP lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.figures import DPI, PANEL, pyplot


def plot_proposal(report, path: Path, budgets=None) -> Path:
    """One panel per group: finished cells (filled), planned not finished (open), proposed (numbered red
    stars, in the order chosen), and dashed lines of constant C = 6 N D at ``budgets`` (the grid's IsoFLOP
    budgets), else at every decade of FLOPs the cells span. ``report``
    has ``groups`` (label, done, pending, error) and ``rows`` (group, params, tokens). Returns ``path``."""
    plt = pyplot()
    groups = report.groups
    fig, axes = plt.subplots(1, len(groups), figsize=(PANEL[0] * len(groups), PANEL[1] + 0.6), squeeze=False)
    for ax, g in zip(axes[0], groups):
        pts = [np.array(x, float).reshape(-1, 2) for x in (g.done, g.pending)]
        mine = [r for r in report.rows if r["group"] == g.label]
        prop = np.array([(r["params"], r["tokens"]) for r in mine], float).reshape(-1, 2)
        allp = np.vstack(pts + [prop])
        if len(pts[0]):
            ax.scatter(pts[0][:, 0], pts[0][:, 1], c="k", s=22, label="finished")
        if len(pts[1]):
            ax.scatter(pts[1][:, 0], pts[1][:, 1], facecolors="none", edgecolors="k", s=30,
                       label="planned, not finished")
        if len(prop):
            ax.scatter(prop[:, 0], prop[:, 1], marker="*", c="tab:red", s=110, label="proposed", zorder=3)
            for i, (n, d) in enumerate(prop):
                ax.annotate(str(report.rows.index(mine[i]) + 1), (n, d), textcoords="offset points",
                            xytext=(5, 4), fontsize=8, color="tab:red")
        if len(allp):
            n_lo, n_hi = allp[:, 0].min() / 1.5, allp[:, 0].max() * 1.5
            nn = np.geomspace(n_lo, n_hi, 50)
            c6 = 6 * allp[:, 0] * allp[:, 1]
            lines = budgets or 10.0 ** np.arange(np.floor(np.log10(c6.min())), np.ceil(np.log10(c6.max())) + 1)
            what = "C = 6ND, grid budgets" if budgets else "C = 6ND, decades"
            for j, c in enumerate(lines):
                ax.plot(nn, c / (6 * nn), ls="--", lw=0.7, c="0.6", label=what if j == 0 else None)
            ax.set_xlim(n_lo, n_hi)
            ax.set_ylim(allp[:, 1].min() / 2, allp[:, 1].max() * 2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"N ({report.params_col})")
        ax.set_ylabel("D (tokens)")
        ax.set_title(g.label, fontsize=10)
        if g.error:
            ax.text(0.02, 0.02, "no proposal: " + g.error[:80], transform=ax.transAxes, fontsize=7, va="bottom")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    what = "a" if report.target == "a" else f"loss at {report.flops:.3g} FLOPs"
    fig.suptitle(f"proposed cells for {what}: {len(report.rows)} cells, {report.spent:.3g} of "
                 f"{report.budget:.3g} GPU-hours", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
