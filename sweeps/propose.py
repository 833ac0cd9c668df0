"""`launch.py propose`: the next cells of a study that buy the most certainty per GPU-hour.

Study-side glue around ``analysis.propose``: the finished cells (harvested from the run dirs like
`report` does) are fitted per group (family, setup, variant) by Approach 3 with its bootstrap; the
candidates are each member of the group at tokens-per-parameter values log-spaced within the study's
limits (grid.min/max_tokens_per_param, else the span of its planned cells), not already planned,
each a real cell (``expand`` with extra cells) costed by the study's cost model (``sweeps.cost``).
Planned cells not yet finished count as if run (their information is in the design, their cost is
not charged). With ``write`` the chosen cells go to ``<study dir>/proposed.yaml`` (``sweeps.extra``),
which `plan` and `submit` read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from analysis.errors import FitError
from analysis.fit_lnd import bootstrap_lnd, fit_lnd
from analysis.harvest import done_runs, harvest_results
from analysis.identification import describe, not_identified
from analysis.propose import Greedy, greedy, residual_sigma, theta_of
from analysis.propose_figure import plot_proposal
from scaling.errors import InputError
from scaling.spec import RunSpec

from .cost import estimate
from .extra import ExtraCell, extra_path, load_extra, write_extra
from .grid import expand
from .keys import short_count
from .lifecycle import study_lock
from .study import Study
from .table import format_table

FIGURE_NAME = "propose.png"
MIN_CELLS = 6          # Approach 3 has 5 parameters
N_CRITERION = 64       # bootstrap fits the criterion averages over


@dataclass
class GroupProposal:
    label: str
    where: tuple                         # (family, setup, variant)
    n_done: int
    n_pending: int
    estimate: float = float("nan")
    width_now: float = float("nan")
    bootstrap_interval: tuple = ()
    sigma: float = float("nan")
    unidentified: str = ""
    error: str = ""
    done: list = field(default_factory=list)       # (N, D) finished
    pending: list = field(default_factory=list)    # (N, D) planned, not finished


@dataclass
class ProposalReport:
    target: str
    flops: Optional[float]
    budget: float
    groups: list
    rows: list            # one dict per chosen cell, in the order chosen
    spent: float
    params_col: str
    written: Optional[Path] = None
    figure: Optional[Path] = None
    # (candidates not yet planned, left out as within half a grid step of a planned cell,
    #  GPU-hours of the cheapest candidate left after the picks)
    candidates: tuple = ()


def _group_of(cell: RunSpec) -> tuple:
    return (cell.family, cell.setup, cell.variant)


def _group_of_row(row: dict) -> tuple:
    """(family, setup, variant) of a harvested run; a missing variant (None or NaN) is None."""
    v = row.get("variant")
    return (row.get("family"), row.get("setup"), None if v is None or v != v or v == "" else v)


def _label(where: tuple) -> str:
    return " / ".join(str(x) for x in where if x)


def _n(cell: RunSpec, params_col: str) -> float:
    return float(cell.params.total if params_col == "params_total" else cell.params.nonembedding)


def _run_first(cells: list[RunSpec], done_keys: set, hours: dict) -> str:
    """The cheapest planned cells not finished that would give 6 cells with 2 sizes and 2 token counts."""
    todo = sorted((c for c in cells if c.key not in done_keys), key=lambda c: hours[c.key])
    have = [c for c in cells if c.key in done_keys]
    pick = []
    for c in todo:
        design = have + pick
        if len(design) >= MIN_CELLS and len({x.member for x in design}) > 1 and len({x.tokens for x in design}) > 1:
            break
        pick.append(c)
    return ", ".join(c.key for c in pick) or "(no planned cell left: add budgets to the grid)"


def ratio_limits(study: Study, cells: list[RunSpec]) -> tuple[float, float]:
    """Tokens per parameter the candidates span: the grid's limits, else its planned cells' span."""
    r = [c.tokens / c.params.total for c in cells]
    lo = study.grid.min_tokens_per_param if study.grid.min_tokens_per_param else min(r)  # 0: no lower limit
    hi = study.grid.max_tokens_per_param if study.grid.max_tokens_per_param is not None else max(r)
    return float(lo), float(hi)


def propose_study(study: Study, gpu_hours: float, target: str = "a", at_flops: Optional[float] = None,
                  candidates: int = 9, params_col: str = "params_total", loss_col: str = "val_loss_speech",
                  n_bootstrap: int = 200, seed: int = 0, write: bool = False,
                  figure: Optional[Path] = None, max_cells: Optional[int] = None) -> ProposalReport:
    """Choose cells within ``gpu_hours`` for the target (``a``, or ``loss`` at ``at_flops`` FLOPs,
    default 10x the largest finished budget), at most ``max_cells`` of them; draw them into ``figure``
    (default <study dir>/propose.png) and with ``write`` add them to <study dir>/proposed.yaml.
    Raises InputError (one line, nothing written) for a bad setting or when no group can be fitted yet,
    naming the cells to run first."""
    if gpu_hours <= 0:
        raise InputError(f"--gpu-hours: expected a positive number of GPU-hours, got {gpu_hours:g}")
    if at_flops is not None and not at_flops > 0:
        raise InputError(f"--at-flops: expected a positive number of FLOPs, got {at_flops:g}")
    if max_cells is not None and max_cells < 1:
        raise InputError(f"--max-cells: expected at least 1, got {max_cells}")
    if candidates < 2:
        raise InputError(f"--candidates: expected at least 2 tokens-per-parameter values per member, got {candidates}")
    plan = expand(study)
    frame = harvest_results(study.study_dir.parent, study.study_dir.name) if study.study_dir.is_dir() else None
    done = done_runs(frame, params_col, "tokens", "flops", loss_col) if frame is not None and len(frame) else None
    done_keys = set(done["key"]) if done is not None else set()
    if target == "loss" and at_flops is None:
        at_flops = 10.0 * float(done["flops"].max()) if done is not None and len(done) else None
    lo, hi = ratio_limits(study, plan)
    grid_r = np.geomspace(lo, hi, candidates)
    min_gap = 0.5 * np.log(hi / lo) / (candidates - 1) if hi > lo else 0.0
    existing = load_extra(study)
    planned_keys = {c.key for c in plan}
    # every candidate as a real cell: the members of each planned group at each tokens-per-parameter value
    members = {}
    for c in plan:
        members.setdefault((_group_of(c), c.member), c)
    cand_extra = [ExtraCell(family=c.family, member=c.member, setup=c.setup, variant=c.variant,
                            tokens=max(1, int(round(r * c.params.total))))
                  for (g, _), c in members.items() for r in grid_r]
    cand_cells = [c for c in expand(study, extra=existing + cand_extra)
                  if c.key not in planned_keys and c.key not in done_keys]
    hours, _ = estimate(study, plan + cand_cells)
    groups, states, cand_of = [], [], []
    refusals = []
    by_group: dict = {}
    for c in plan:
        by_group.setdefault(_group_of(c), []).append(c)
    for where, cells in by_group.items():
        # every finished run of the group counts, in the plan or not (as in `report`)
        rows = done[[_group_of_row(r) == where for r in done.to_dict("records")]] if done is not None else None
        n_fin = 0 if rows is None else len(rows)
        pend = [c for c in cells if c.key not in done_keys]
        g = GroupProposal(_label(where), where, n_fin, len(pend))
        groups.append(g)
        sizes = 0 if rows is None else rows[params_col].nunique()
        counts = 0 if rows is None else rows["tokens"].nunique()
        if n_fin < MIN_CELLS or sizes < 2 or counts < 2:
            g.error = (f"{n_fin} finished cells ({sizes} sizes, {counts} token counts); Approach 3 needs "
                       f"{MIN_CELLS} with 2 sizes and 2 token counts: run first {_run_first(cells, done_keys, hours)}")
            refusals.append(f"{g.label}: {g.error}")
            continue
        N = rows[params_col].to_numpy(float)
        D, L = rows["tokens"].to_numpy(float), rows[loss_col].to_numpy(float)
        try:
            fit = fit_lnd(N, D, L)
            boot = bootstrap_lnd(N, D, L, fit=fit, n_resamples=n_bootstrap, seed=seed)
        except FitError as e:
            g.error = f"Approach 3 refused ({type(e).__name__}: {e})"
            refusals.append(f"{g.label}: {g.error}")
            continue
        g.unidentified = describe(not_identified(fit.to_dict(), boot.intervals, float(L.min())))
        s = boot.samples
        thetas = theta_of(s["E"], s["A"], s["B"], s["alpha"], s["beta"])[:N_CRITERION]
        g.sigma = residual_sigma(fit, N, D, L)
        g.done = list(zip(N, D))
        g.pending = [(_n(c, params_col), float(c.tokens)) for c in pend]
        dN = np.concatenate([N, [p[0] for p in g.pending]])
        dD = np.concatenate([D, [p[1] for p in g.pending]])
        mine = [c for c in cand_cells if _group_of(c) == where]
        try:
            st = Greedy(fit, thetas, dN, dD, [_n(c, params_col) for c in mine], [c.tokens for c in mine],
                        [hours[c.key] for c in mine], target, at_flops, g.sigma, min_gap)
        except FitError as e:
            g.error = str(e)
            refusals.append(f"{g.label}: {g.error}")
            continue
        g.estimate, g.width_now = st.estimate, st.width_now
        if target == "a":
            iv = boot.intervals["a"]
            g.bootstrap_interval = (iv["p2.5"], iv["p97.5"])
        states.append(st)
        cand_of.append((g, mine))
    if not states:
        raise InputError(f"{study.study_dir}: no group can be fitted yet; " + "; ".join(refusals))
    picks = greedy(states, gpu_hours, max_cells)
    rows, spent = [], 0.0
    for i, pick in picks:
        g, mine = cand_of[i]
        c = mine[pick.index]
        spent += pick.gpu_hours
        half = pick.width_after / 2
        rows.append({"group": g.label, "key": c.key, "family": c.family, "member": c.member, "setup": c.setup,
                     "variant": c.variant, "params": _n(c, params_col), "tokens": c.tokens,
                     "tokens_per_param": c.tokens / c.params.total, "flops": c.flops, "gpu_hours": pick.gpu_hours,
                     "estimate": g.estimate, "lo_after": g.estimate - half, "hi_after": g.estimate + half,
                     "width_after": pick.width_after, "why": pick.why})
    report = ProposalReport(target=target, flops=at_flops, budget=float(gpu_hours), groups=groups, rows=rows,
                            spent=spent, params_col=params_col)
    free = np.concatenate([st.cost[st.free] for st in states])
    report.candidates = (sum(st.cost.size for st in states), sum(st.skipped_close for st in states),
                         float(free.min()) if free.size else float("nan"))
    figure = Path(figure) if figure is not None else study.study_dir / FIGURE_NAME
    report.figure = plot_proposal(report, figure, budgets=study.grid.flops)
    if write and rows:
        with study_lock(study.study_dir):  # not while a submit decides, nor beside another propose --write
            write_extra(study, [ExtraCell(family=r["family"], member=r["member"], setup=r["setup"],
                                      variant=r["variant"], tokens=int(r["tokens"]), why=r["why"]) for r in rows])
        report.written = extra_path(study)
    return report


def format_proposal(rep: ProposalReport) -> str:
    """The table and the lines around it."""
    what = "allocation exponent a (N_opt ~ C^a)" if rep.target == "a" else \
        f"compute-optimal loss at {rep.flops:.3g} FLOPs"
    lines = [f"target: {what}; expected 95% intervals by the delta method over the bootstrap fits"]
    for g in rep.groups:
        if g.error:
            lines.append(f"  {g.label}: no proposal: {g.error}")
            continue
        now = f"{g.estimate:.4g} +- {g.width_now / 2:.3g}"
        boot = (f", bootstrap [{g.bootstrap_interval[0]:.3g}, {g.bootstrap_interval[1]:.3g}]"
                if g.bootstrap_interval else "")
        lines.append(f"  {g.label}: {g.n_done} finished, {g.n_pending} planned not finished (counted as run); "
                     f"now {now}{boot}; residual sd {g.sigma:.3g} in log loss")
        if g.unidentified:
            lines.append(f"    not identified yet: {g.unidentified}; the intervals below are rough")
    header = ["#", "group", "member", "tokens", "tok/param", "GPU-h", "interval after", "why", "key"]
    table = [[str(i + 1), r["group"], r["member"], short_count(r["tokens"]), f"{r['tokens_per_param']:.3g}",
              f"{r['gpu_hours']:.3g}", f"[{r['lo_after']:.4g}, {r['hi_after']:.4g}]", r["why"], r["key"]]
             for i, r in enumerate(rep.rows)]
    n, close, cheapest = rep.candidates
    lines.append(format_table(header, table, {0, 3, 4, 5}) if table else
                 f"no candidate fits the budget: of {n} candidates not yet planned, {close} lie within half a "
                 f"grid step in D/N of a planned cell of their size, and the cheapest other costs {cheapest:.3g} "
                 f"GPU-hours (raise --gpu-hours, or --candidates for a finer grid)")
    lines.append(f"{len(rep.rows)} cells, {rep.spent:.3g} of {rep.budget:.3g} GPU-hours")
    if rep.figure:
        lines.append(f"figure: {rep.figure}")
    if rep.written:
        lines.append(f"added to {rep.written}; `launch.py submit` trains them")
    elif rep.rows:
        lines.append("nothing written (add --write to add them to the study)")
    return "\n".join(lines)
