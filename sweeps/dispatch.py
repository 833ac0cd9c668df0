"""`launch.py submit`: submit a study's cells through submitit (slurm / local / debug), idempotently.

A submission holds the study's submit lock while it decides and submits (a second `submit`, `tune` or
demo waits), and decides per cell from its run dir (state.json and its lease), checked against the
scheduler: DONE -> skip; a live job or a live trainer (the run dir's lease) -> skip; FAILED -> retry
while failures <= executor.max_retries; anything else (never run, interrupted, its job gone) -> submit,
and training resumes from the newest checkpoint. Submitting itself is sweeps.lifecycle's (the path
`tune` and the demo share): node allocation, the code snapshot, arrays, the debug executor in-process.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from common.locks import describe_holder
from common.rundir import RunDir

from . import scheduler
from .cell_job import CellJob
from .grid import expand
from .lifecycle import JobRequest, check_tracking, study_lock, submit_cells
from .preflight import preflight
from .rundirs import ensure_run_dir
from .study import Study
from .trunks import Trunk, branch_ready, ensure_trunk_dir, is_branch, trunks_of

@dataclass
class Decision:
    key: str
    action: str      # submit | skip
    reason: str


@dataclass
class SubmitReport:
    decisions: list[Decision] = field(default_factory=list)
    job_ids: dict[str, str] = field(default_factory=dict)   # cell key -> job id
    arrays: int = 0
    snapshot: Optional[Path] = None
    nodes: dict[str, int] = field(default_factory=dict)     # cell key -> nodes its job asks for
    ran: dict[str, str] = field(default_factory=dict)       # debug executor: cell key -> state after running
    trunks: list[Decision] = field(default_factory=list)    # WSD trunks: what was decided for each

    @property
    def submitted(self) -> list[str]:
        return [d.key for d in self.decisions if d.action == "submit"]

    @property
    def failed_in_process(self) -> list[str]:
        """Cells the debug executor ran here that did not end DONE."""
        cells = {d.key for d in self.decisions}   # a trunk's segment ends PENDING on purpose
        return [k for k, state in self.ran.items() if state != "DONE" and k in cells]


def decide(study: Study, keys: list[str], kind: str) -> list[Decision]:
    """What a submit would do with each cell, from the run dirs and one scheduler query."""
    rds = {k: RunDir(study.study_dir / k) for k in keys}
    states = {k: rd.state() for k, rd in rds.items()}
    live = _live(kind, states)
    out = []
    for k in keys:
        s = states[k]
        state = s.get("state", "PENDING")
        if state == "DONE":
            out.append(Decision(k, "skip", "done"))
        elif state == "FAILED":  # FAILED names the last job, which ended (a retry resets it to PENDING)
            failures = s.get("failures", 1)
            if failures > study.executor.max_retries:
                out.append(Decision(k, "skip", f"failed {failures}x, retry limit {study.executor.max_retries}"))
            else:
                out.append(Decision(k, "submit", f"retry {failures}/{study.executor.max_retries}"))
        elif s.get("job_id") in live:
            out.append(Decision(k, "skip", f"job {s['job_id']} is live"))
        elif rds[k].path.exists() and rds[k].leased():
            out.append(Decision(k, "skip", f"being trained ({describe_holder(rds[k].lease_holder())})"))
        elif s.get("attempts", 0) > 0:
            out.append(Decision(k, "submit", "resume"))
        else:
            out.append(Decision(k, "submit", "new"))
    return out


@dataclass
class TrunkPlan:
    """What a submit does with a study's WSD trunks: a decision per trunk, the jobs to submit (trunk
    segments before the branches that wait on them), and the branches that must wait on a trunk that
    cannot run."""
    decisions: list[Decision] = field(default_factory=list)
    requests: list[JobRequest] = field(default_factory=list)     # trunk segments, then waiting branches
    held: dict[str, str] = field(default_factory=dict)           # branch key -> why it is not submitted
    resets: list[str] = field(default_factory=list)              # DONE trunks whose branch list grew


def decide_trunks(study: Study, cells: list, decisions: list[Decision], kind: str) -> TrunkPlan:
    """For every trunk with a branch to submit whose branch point does not exist: submit the trunk up to
    the branch steps needed (Slurm: one segment job per step, each after the previous; local/debug: one
    job) unless its job is live, and have each such branch start after the segment that writes its
    point. Branches of a trunk past its retry limit are held (`status` shows them waiting on it)."""
    out = TrunkPlan()
    ts = trunks_of(cells)
    if not ts:
        return out
    cell_of = {c.key: c for c in cells}
    todo = {d.key for d in decisions if d.action == "submit"}
    states = {t: RunDir(study.study_dir / t).state() for t in ts}
    live = _live(kind, states)
    for t in ts.values():
        rd = RunDir(study.study_dir / t.key)
        s = states[t.key]
        waiting = sorted((k for k in t.branches if k in todo and not branch_ready(study.study_dir, cell_of[k])),
                         key=lambda k: t.branches[k])
        if not waiting:
            reason = "every branch point written" if s.get("state") == "DONE" else "no branch waits on it"
            out.decisions.append(Decision(t.key, "skip", reason))
            continue
        need = sorted({t.branches[k] for k in waiting})
        segs = {int(b): j for b, j in (s.get("segment_jobs") or {}).items()}
        if s.get("job_id") in live or (rd.path.exists() and rd.leased()):
            what = f"job {s['job_id']} is live" if s.get("job_id") in live else \
                f"being trained ({describe_holder(rd.lease_holder())})"
            out.decisions.append(Decision(t.key, "skip", what))
            for k in waiting:   # after the live segment that writes its point (else the trunk's last job)
                b = t.branches[k]
                after = next((segs[x] for x in sorted(segs) if x >= b and segs[x] in live), s.get("job_id"))
                out.requests.append(JobRequest(cell_of[k], study.study_dir / k, _branch_kwargs(kind), after))
            continue
        if s.get("state") == "FAILED" and s.get("failures", 1) > study.executor.max_retries:
            why = (f"waiting on trunk {t.key}, which failed {s.get('failures', 1)}x "
                   f"(retry limit {study.executor.max_retries}): {s.get('error', '')}").rstrip(": ")
            out.decisions.append(Decision(t.key, "skip", f"failed {s.get('failures', 1)}x, retry limit "
                                                         f"{study.executor.max_retries}"))
            out.held.update({k: why for k in waiting})
            continue
        if s.get("state") == "DONE":
            out.resets.append(t.key)
        reason = "new" if not s.get("attempts") else ("grows" if s.get("state") == "DONE" else "resume")
        out.decisions.append(Decision(t.key, "submit", f"{reason} to step{'s' if len(need) > 1 else ''} "
                                                       + ", ".join(map(str, need))))
        spec = t.spec
        stops = need if kind == "slurm" else [need[-1]]   # Slurm: segments, so branches start early
        prev = None
        for b in stops:
            name = f"{t.key}@{b}"
            out.requests.append(JobRequest(spec, study.study_dir / t.key, {"until_step": b}, prev, name))
            prev = name
        for k in waiting:
            b = t.branches[k]
            seg = next(x for x in stops if x >= b)
            out.requests.append(JobRequest(cell_of[k], study.study_dir / k, _branch_kwargs(kind),
                                           f"{t.key}@{seg}"))
    return out


def _branch_kwargs(kind: str) -> dict:
    return {"trunk_wait": True} if kind == "local" else {}


def _live(kind: str, states: dict[str, dict]) -> set[str]:
    ids = {s.get("job_id") for s in states.values() if s.get("job_id") and s.get("executor") == kind}
    return scheduler.live_slurm_jobs(ids) if kind == "slurm" else scheduler.live_local_jobs(ids)


def _hold(decisions: list[Decision], trunks: TrunkPlan) -> None:
    for d in decisions:
        if d.key in trunks.held:
            d.action, d.reason = "skip", trunks.held[d.key]


def submit(study: Study, kind: Optional[str] = None, dry_run: bool = False,
           log: Callable[[str], None] = print, job_class: type = CellJob, wait: bool = True) -> SubmitReport:
    """Submit every cell that needs it, holding the study's submit lock (wait=False: fail at once when
    another submit holds it); returns what was decided and the job ids. A dry run takes no lock and
    writes nothing. `job_class` is the callable run per cell (CellJob; benchmarks pass a no-op)."""
    kind = kind or study.executor.kind
    check_tracking(study, kind)
    source = study.source
    study = dataclasses.replace(study, root=str(Path(study.root).resolve()))
    study.source = source  # not an init field: replace() drops it
    cells = expand(study)
    preflight(study, cells)  # bad data is one line before any run dir or job exists
    if dry_run:
        decisions = decide(study, [c.key for c in cells], kind)
        trunks = decide_trunks(study, cells, decisions, kind)
        _hold(decisions, trunks)
        return SubmitReport(decisions=decisions, trunks=trunks.decisions)
    study.study_dir.mkdir(parents=True, exist_ok=True)
    with study_lock(study.study_dir, wait=wait, log=log):
        report = SubmitReport(decisions=decide(study, [c.key for c in cells], kind))
        for t in trunks_of(cells).values():
            ensure_trunk_dir(study.study_dir, t)
        trunks = decide_trunks(study, cells, report.decisions, kind)
        _hold(report.decisions, trunks)
        report.trunks = trunks.decisions
        todo = {d.key for d in report.decisions if d.action == "submit"}
        if not todo:
            return report
        for key in trunks.resets:   # a DONE trunk whose grid grew trains on from its last branch point
            RunDir(study.study_dir / key).update("PENDING", reset=True)
        with_trunk = {r.path.name for r in trunks.requests}
        run = [(cell, ensure_run_dir(study, cell)) for cell in cells if cell.key in todo]
        run = trunks.requests + [(c, p) for c, p in run if c.key not in with_trunk]
        done = submit_cells(study, kind, run, job_class=job_class, log=log)
    for d in report.decisions + report.trunks:
        if d.key in done.skipped:
            d.action, d.reason = "skip", done.skipped[d.key]
    report.job_ids, report.nodes, report.arrays = done.job_ids, done.nodes, done.arrays
    report.snapshot, report.ran = done.snapshot, done.ran
    return report
