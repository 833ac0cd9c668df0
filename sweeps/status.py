"""`launch.py status`: one row per cell from its run dir (state, attempts, job, progress, loss, speed),
checked against the scheduler with one query; and `cancel`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from common.rundir import RunDir, TransitionError
from scaling.fmt import duration
from scaling.spec import RunSpec

from . import scheduler
from .grid import expand
from .keys import short_count
from .table import format_table
from .study import Study
from .trunks import TrunkProgress, branch_ready, is_branch, progress, trunks_of


@dataclass
class CellStatus:
    key: str
    state: str
    attempts: int
    job_id: Optional[str]
    tokens: int
    budget: int
    loss: Optional[float]
    tokens_per_second: Optional[float]
    error: Optional[str] = None

    @property
    def eta_seconds(self) -> Optional[float]:
        if not self.tokens_per_second or self.state in ("DONE", "FAILED"):
            return None
        return (self.budget - self.tokens) / self.tokens_per_second


def _last_metrics(rd: RunDir) -> dict:
    """The last metrics line with a loss, its tokens/s the rate over the file's tail (the last line's own
    rate is one, maybe partial, step's)."""
    recs = rd.tail_metrics("loss")
    if not recs:
        return {}
    last, first = dict(recs[-1]), recs[0]
    if len(recs) > 1 and last.get("time", 0) > first.get("time", 0) and last.get("tokens", 0) > first.get("tokens", 0):
        last["tokens_per_second"] = (last["tokens"] - first["tokens"]) / (last["time"] - first["time"])
    return last


def collect(study: Study, cells: Optional[list[RunSpec]] = None) -> list[CellStatus]:
    cells = expand(study) if cells is None else cells  # `status --all-cells` passes others too
    rows, states = [], {}
    for c in cells:
        rd = RunDir(study.study_dir / c.key)
        states[c.key] = rd.state() if rd.exists() else {}
    live = set()
    for kind in ("slurm", "local"):
        ids = {s.get("job_id") for s in states.values() if s.get("executor") == kind}
        live |= scheduler.live_slurm_jobs(ids) if kind == "slurm" else scheduler.live_local_jobs(ids)
    for c in cells:
        s = states[c.key]
        state = s.get("state", "NEW") if s else "NEW"
        alive = bool(s.get("job_id")) and s.get("job_id") in live
        if state == "PENDING" and alive:
            state = "QUEUED"
        elif state == "PENDING" and s.get("attempts"):
            state = "INTERRUPTED"      # checkpointed; the next submit resumes it
        elif state == "RUNNING" and not alive:
            state = "LOST"             # its job is gone without a word; the next submit resumes it
        if state in ("NEW", "QUEUED", "PENDING", "INTERRUPTED") and is_branch(c) and \
                not branch_ready(study.study_dir, c):
            state = "WAITING"          # a WSD branch whose trunk has not written its branch point
        rd = RunDir(study.study_dir / c.key)
        m = _last_metrics(rd)
        if state == "DONE":  # the whole run's tokens/s, as result.json has it
            m["tokens_per_second"] = (rd.result() or {}).get("tokens_per_second", m.get("tokens_per_second"))
        error = s.get("error")
        if state == "WAITING":
            error = _waiting_on(study, c)
        rows.append(CellStatus(c.key, state, s.get("attempts", 0), s.get("job_id"), m.get("tokens", 0),
                               c.tokens, m.get("loss"), m.get("tokens_per_second"), error))
    return rows


def _waiting_on(study: Study, cell: RunSpec) -> str:
    t = RunDir(study.study_dir / cell.trunk["key"])
    s = t.state() if t.exists() else {}
    what = s.get("state", "not submitted") if s else "not submitted"
    return (f"waiting on trunk {t.key} ({what}) to reach step {cell.trunk['step']}"
            + (f": {s['error']}" if what == "FAILED" and s.get("error") else ""))


def trunk_status(study: Study, cells: Optional[list[RunSpec]] = None) -> list[TrunkProgress]:
    """Each WSD trunk's progress: its step against its last branch step, the branch points written,
    and which branches can start."""
    cells = expand(study) if cells is None else cells
    return [progress(study.study_dir, t) for t in trunks_of(cells).values()]


def format_trunks(trunks: list[TrunkProgress]) -> str:
    if not trunks:
        return ""
    rows = [[t.key, t.state, f"{t.step}/{t.last_step}", short_count(t.tokens), f"{len(t.points)}",
             str(len(t.ready)), str(len(t.waiting)), t.job_id or "-"] for t in trunks]
    table = format_table(["trunk", "state", "step", "tokens", "points", "ready", "waiting", "job"], rows,
                         {2, 3, 4, 5, 6})
    errors = [f"{t.key}: {t.error}" for t in trunks if t.state == "FAILED" and t.error]
    return "\n".join(["", "WSD trunks (points: branch checkpoints written; ready: branches that can start)",
                      table] + errors)


def format_status(rows: list[CellStatus]) -> str:
    header = ["key", "state", "attempts", "job", "tokens", "budget", "loss", "tok/s", "ETA"]
    table = format_table(header, [[r.key, r.state, str(r.attempts), r.job_id or "-", short_count(r.tokens),
                             short_count(r.budget), f"{r.loss:.4f}" if r.loss is not None else "-",
                             short_count(r.tokens_per_second) if r.tokens_per_second else "-",
                             duration(r.eta_seconds) if r.eta_seconds is not None else "-"] for r in rows], {2, 4, 5, 6, 7, 8})
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    errors = [f"{r.key}: {r.error}" for r in rows if r.state in ("FAILED", "WAITING") and r.error]
    return "\n".join([table, "", "  ".join(f"{k} {v}" for k, v in sorted(counts.items()))] + errors)


def cancel(study: Study, cells: Optional[list[str]] = None) -> list[str]:
    """Cancel the live jobs of the study's cells (all, or those whose keys start with one of `cells`)."""
    done = []
    every = expand(study)
    for row in collect(study, every):
        if cells and not any(row.key.startswith(c) for c in cells):
            continue
        if row.state in ("RUNNING", "QUEUED", "WAITING") and row.job_id:   # WAITING: maybe held by Slurm
            rd = RunDir(study.study_dir / row.key)
            scheduler.cancel(rd.state().get("executor", "slurm"), [row.job_id])
            try:  # a cell that finished meanwhile stays DONE
                rd.update(allowed_from={"PENDING", "RUNNING"}, cancelled=True)
            except TransitionError:
                continue
            done.append(row.key)
    for t in trunks_of(every).values():   # a WSD trunk: every segment job still queued or running
        if cells and not any(t.key.startswith(c) for c in cells):
            continue
        rd = RunDir(study.study_dir / t.key)
        s = rd.state() if rd.exists() else {}
        ids = {s.get("job_id"), *(s.get("segment_jobs") or {}).values()} - {None}
        kind = s.get("executor", "slurm")
        live = scheduler.live_slurm_jobs(ids) if kind == "slurm" else scheduler.live_local_jobs(ids)
        if live and s.get("state") in ("PENDING", "RUNNING"):
            scheduler.cancel(kind, sorted(live))
            try:
                rd.update(allowed_from={"PENDING", "RUNNING"}, cancelled=True)
            except TransitionError:
                continue
            done.append(t.key)
    return done
