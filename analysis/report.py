"""Figures and a markdown report for a harvested study (matplotlib, Agg backend).

``write_report`` takes the DataFrame from ``analysis.harvest.harvest_results`` and writes
into ``out_dir``: loss_vs_compute.png, metrics_vs_compute.png, allocation.png, report.md
and fits.json. Fits that refuse are reported as refusals, never silently dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from analysis.allocation import allocation_from_fit
from analysis.compute_laws import compute_frontier, fit_compute_laws
from analysis.errors import FitError
from analysis.fit_lnd import bootstrap_lnd, fit_lnd
from analysis.reference import LOSS_LAWS, metric_laws_for

BUDGETS = (1e18, 1e19, 1e20, 1e21, 1e22)


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # headless: reports are written on cluster nodes and in CI
    import matplotlib.pyplot as plt

    return plt


def _fmt(x, digits=4):
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}g}"


def fit_groups(frame, params_col: str, loss_col: str, group_col: str = "setup", n_bootstrap: int = 100,
               seed: int = 0) -> dict:
    """Approach-3 fit (+ bootstrap) per group of finished runs: {group: (LNDFit, LNDBootstrap) or refusal str}."""
    done = frame[(frame["state"] == "DONE") & frame[loss_col].notna() & frame[params_col].notna()]
    out = {}
    for name, sub in done.groupby(group_col, sort=True):
        N, D, L = sub[params_col].to_numpy(), sub["tokens"].to_numpy(), sub[loss_col].to_numpy()
        try:
            fit = fit_lnd(N, D, L)
            boot = bootstrap_lnd(N, D, L, fit=fit, n_resamples=n_bootstrap, seed=seed) if n_bootstrap else None
            out[str(name)] = (fit, boot)
        except FitError as err:
            out[str(name)] = f"{type(err).__name__}: {err}"
    return out


def _plot_loss(plt, frame, loss_col, group_col, laws, path):
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, sub in frame.groupby(group_col, sort=True):
        ax.scatter(sub["flops"], sub[loss_col], s=12, alpha=0.5, label=f"{name} runs")
        law = laws.get(str(name), {}).get("loss")
        if law is not None and not isinstance(law, str):
            c = np.geomspace(sub["flops"].min(), sub["flops"].max() * 10, 100)
            ax.plot(c, law.predict(c), label=f"{name}: {law.E:.3g} + {law.k:.3g} C^-{law.gamma:.3g}")
    ax.set(xscale="log", xlabel="training FLOPs (6ND)", ylabel=loss_col, title="Loss vs compute (frontier fit)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_metrics(plt, frame, metric_cols, group_col, laws, path):
    fig, axes = plt.subplots(1, max(len(metric_cols), 1), figsize=(5 * max(len(metric_cols), 1), 4), squeeze=False)
    for ax, m in zip(axes[0], metric_cols):
        c_all = frame["flops"].dropna()
        c = np.geomspace(max(c_all.min(), 1e15) if len(c_all) else 1e18, 1e22, 100)
        for name, sub in frame.groupby(group_col, sort=True):
            cc, v, _ = compute_frontier(sub["flops"], sub[m], higher_is_better=True) if sub[m].notna().any() else ([], [], [])
            ax.scatter(cc, v, s=14, label=f"{name} frontier")
            law = laws.get(str(name), {}).get(m)
            if law is not None and not isinstance(law, str):
                ax.plot(c, law.predict(c), label=f"{name}: {law.k:.3g} C^{law.gamma:.3g}")
        short = m.replace("eval_", "")
        for ref in metric_laws_for(short):
            ax.plot(c, ref.predict(c), ls=":", lw=1, label=f"published {ref.setup}: {ref.k} C^{ref.gamma}")
        ax.set(xscale="log", xlabel="training FLOPs", ylabel=m, title=f"{short} vs compute")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_allocation(plt, fits, path):
    fig, ax = plt.subplots(figsize=(6, 4))
    c = np.geomspace(1e17, 1e23, 100)
    for name, fb in fits.items():
        if isinstance(fb, str):
            continue
        ax.plot(c, allocation_from_fit(fb[0], c).n_opt, label=f"{name} (a={fb[0].a:.3f})")
    for ref in LOSS_LAWS.values():
        ax.plot(c, allocation_from_fit(ref, c).n_opt, ls=":", lw=1, label=f"{ref.name} (a={ref.a:.3f})")
    ax.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel="compute-optimal N",
           title="Compute-optimal model size (Approach 3)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(frame, out_dir, params_col: str = "params_total", loss_col: str = "val_loss_speech",
                 metric_cols=("eval_ssc", "eval_tsc"), group_col: str = "setup", n_bootstrap: int = 100,
                 seed: int = 0) -> Path:
    """Write figures, fits.json and report.md for finished runs in ``frame``; return report.md's path."""
    plt = _plt()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = frame[frame["state"] == "DONE"]
    metric_cols = [m for m in metric_cols if m in done.columns]
    laws = fit_compute_laws(done.dropna(subset=["flops", loss_col]), group_col=group_col, loss_col=loss_col,
                            metric_cols=metric_cols) if len(done) else {}
    fits = fit_groups(done, params_col, loss_col, group_col, n_bootstrap, seed)
    _plot_loss(plt, done, loss_col, group_col, laws, out / "loss_vs_compute.png")
    _plot_metrics(plt, done, metric_cols, group_col, laws, out / "metrics_vs_compute.png")
    _plot_allocation(plt, fits, out / "allocation.png")

    lines = ["# Scaling report", "",
             f"Runs: {len(frame)} ({len(done)} done). N convention: `{params_col}`. Loss: `{loss_col}`.", "",
             "## Approach 3: L(N, D) = E + A/N^alpha + B/D^beta", "",
             "| group | E | A | B | alpha | beta | a | b | G | n | a 95% |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    summary = {"params_col": params_col, "loss_col": loss_col, "approach3": {}, "compute_laws": {}}
    for name, fb in fits.items():
        if isinstance(fb, str):
            lines.append(f"| {name} | refused: {fb} |||||||||")
            summary["approach3"][name] = {"error": fb}
            continue
        fit, boot = fb
        iv = boot.intervals["a"] if boot else None
        ci = f"{iv['p2.5']:.3f}–{iv['p97.5']:.3f}" if iv else "–"
        lines.append(f"| {name} | {_fmt(fit.E)} | {_fmt(fit.A)} | {_fmt(fit.B)} | {_fmt(fit.alpha)} | {_fmt(fit.beta)} "
                     f"| {_fmt(fit.a, 3)} | {_fmt(fit.b, 3)} | {_fmt(fit.G)} | {fit.n_points} | {ci} |")
        summary["approach3"][name] = {**fit.to_dict(), **(boot.to_dict() if boot else {})}
    lines += ["", "### Compute-optimal allocation (C = 6ND)", "", "| group | C | N_opt | D_opt | D/N | loss |",
              "|---|---|---|---|---|---|"]
    for name, fb in list(fits.items()) + [(r.name + " (published)", (r, None)) for r in LOSS_LAWS.values()]:
        if isinstance(fb, str):
            continue
        for C in BUDGETS:
            al = allocation_from_fit(fb[0], C)
            lines.append(f"| {name} | {C:.0e} | {al.n_opt:.3g} | {al.d_opt:.3g} | {al.tokens_per_param:.1f} "
                         f"| {al.loss_opt:.4g} |")
    lines += ["", "## Compute laws on the frontier (best run per budget)", ""]
    for name, group_laws in laws.items():
        summary["compute_laws"][name] = {}
        for key, law in group_laws.items():
            if isinstance(law, str):
                lines.append(f"- {name} / {key}: {law}")
                summary["compute_laws"][name][key] = {"error": law}
            elif key == "loss":
                lines.append(f"- {name} / loss: L(C) = {law.E:.4g} + {law.k:.4g} C^-{law.gamma:.4g}")
                summary["compute_laws"][name][key] = law.to_dict()
            else:
                lines.append(f"- {name} / {key}: Q(C) = {law.k:.4g} C^{law.gamma:.4g}")
                summary["compute_laws"][name][key] = law.to_dict()
    lines += ["", "![loss](loss_vs_compute.png)", "", "![metrics](metrics_vs_compute.png)", "",
              "![allocation](allocation.png)", "",
              "Published references use other parameter and loss conventions; compare exponents, not levels."]
    (out / "fits.json").write_text(json.dumps(summary, indent=2, default=lambda o: None))
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
