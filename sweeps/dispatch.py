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
from .lifecycle import check_tracking, study_lock, submit_cells
from .preflight import preflight
from .rundirs import ensure_run_dir
from .study import Study

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

    @property
    def submitted(self) -> list[str]:
        return [d.key for d in self.decisions if d.action == "submit"]

    @property
    def failed_in_process(self) -> list[str]:
        """Cells the debug executor ran here that did not end DONE."""
        return [k for k, state in self.ran.items() if state != "DONE"]


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


def _live(kind: str, states: dict[str, dict]) -> set[str]:
    ids = {s.get("job_id") for s in states.values() if s.get("job_id") and s.get("executor") == kind}
    return scheduler.live_slurm_jobs(ids) if kind == "slurm" else scheduler.live_local_jobs(ids)


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
        return SubmitReport(decisions=decide(study, [c.key for c in cells], kind))
    study.study_dir.mkdir(parents=True, exist_ok=True)
    with study_lock(study.study_dir, wait=wait, log=log):
        report = SubmitReport(decisions=decide(study, [c.key for c in cells], kind))
        todo = {d.key for d in report.decisions if d.action == "submit"}
        if not todo:
            return report
        run = [(cell, ensure_run_dir(study, cell)) for cell in cells if cell.key in todo]
        done = submit_cells(study, kind, run, job_class=job_class, log=log)
    for d in report.decisions:
        if d.key in done.skipped:
            d.action, d.reason = "skip", done.skipped[d.key]
    report.job_ids, report.nodes, report.arrays = done.job_ids, done.nodes, done.arrays
    report.snapshot, report.ran = done.snapshot, done.ran
    return report
