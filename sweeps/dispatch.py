"""Submit a study's cells through submitit (slurm / local / debug), idempotently.

A resubmission decides per cell from its run dir (state.json), checked against the scheduler:
DONE -> skip; a live job -> skip; FAILED -> retry while failures <= executor.max_retries; anything else
(never run, interrupted, its job gone) -> submit, and training resumes from the newest checkpoint.
The code jobs run is snapshotted into the study dir first, so editing the checkout while jobs wait in
the queue changes nothing.

Each cell gets the study's GPUs (nodes x gpus_per_node), or more when its memory needs them
(sweeps.cost.cell_allocation, in whole nodes); cells that need different resources go in separate
arrays.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from scaling import rundir
from scaling.spec import RunSpec

from . import scheduler
from .cell_job import CellJob
from .cost import cell_allocation
from .grid import expand
from .preflight import preflight
from .rundirs import ensure_run_dir
from .study import Study, StudyError

CODE_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("scaling", "sweeps", "analysis")


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

    @property
    def submitted(self) -> list[str]:
        return [d.key for d in self.decisions if d.action == "submit"]


def _live(kind: str, states: dict[str, dict]) -> set[str]:
    ids = {s.get("job_id") for s in states.values() if s.get("job_id") and s.get("executor") == kind}
    return scheduler.live_slurm_jobs(ids) if kind == "slurm" else scheduler.live_local_jobs(ids)


def decide(study: Study, keys: list[str], kind: str) -> list[Decision]:
    """What a submit would do with each cell, from the run dirs and one scheduler query."""
    states = {k: rundir.read_state(study.study_dir / k) for k in keys}
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
        elif s.get("attempts", 0) > 0:
            out.append(Decision(k, "submit", "resume"))
        else:
            out.append(Decision(k, "submit", "new"))
    return out


def snapshot_code(study_dir: Path) -> Path:
    """Copy the packages jobs import into `<study>/code/<content hash>/` (reused when unchanged)."""
    files = []
    for pkg in PACKAGES:
        files += sorted(p for p in (CODE_ROOT / pkg).rglob("*.py"))
    files.append(CODE_ROOT / "launch.py")
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(CODE_ROOT)).encode())
        h.update(f.read_bytes())
    dest = study_dir / "code" / h.hexdigest()[:12]
    if not dest.exists():
        tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
        for f in files:
            target = tmp / f.relative_to(CODE_ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
        os.replace(tmp, dest)
    return dest


@contextlib.contextmanager
def _detached_output(kind: str) -> Iterator[None]:
    """Local jobs inherit our stdout/stderr (they log to their own files): give them /dev/null so a
    pipe reading `submit`'s output does not wait for every job to end."""
    if kind != "local":
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def _prepare_tracking(study: Study) -> None:
    """Create the experiment (and a SQLite schema) once, before many jobs race to do it."""
    if not study.tracking.enabled:
        return
    from scaling import tracking

    uri = study.tracking.uri or tracking.default_uri(study.study_dir)
    try:
        from mlflow import MlflowClient

        tracking._ensure_experiment(MlflowClient(tracking_uri=uri), study.tracking.experiment or study.name,
                                    f"slm-scaling study {study.name}", uri)
    except Exception as e:  # the jobs' own mirrors cope with an unreachable server
        print(f"warning: MLflow at {tracking.redact_uri(uri)} not ready ({type(e).__name__}); jobs will retry",
              file=sys.stderr)


@contextlib.contextmanager
def _in_dir(path: Path) -> Iterator[None]:
    """Jobs start in the submitting directory and import from it first: make that the snapshot."""
    old = Path.cwd()
    old_path = list(sys.path)
    os.chdir(path)
    sys.path.insert(0, str(path))
    try:
        yield
    finally:
        os.chdir(old)
        sys.path[:] = old_path


def make_executor(study: Study, kind: str, folder: Path, nodes: Optional[int] = None):
    """A submitit executor for the study's cells; `nodes` (default executor.nodes) for cells whose
    memory needs more GPUs. One task per GPU; on a `cpu` executor gpus_per_node counts the tasks
    (processes) per node and no GPU is asked for."""
    import submitit

    ex = study.executor
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=kind)
    gpus = ex.gpus_per_node if ex.gpu_type.lower() != "cpu" else 0
    common = {"timeout_min": ex.slurm.time_min, "name": f"slm-{study.name}"}
    if kind == "slurm":
        s = ex.slurm
        params = {**common, "nodes": nodes or ex.nodes, "tasks_per_node": ex.gpus_per_node,
                  "cpus_per_task": s.cpus_per_task,
                  "slurm_signal_delay_s": s.signal_delay_s, "slurm_array_parallelism": s.array_parallelism}
        if gpus:
            params["gpus_per_node"] = gpus
        if s.mem_gb is not None:
            params["mem_gb"] = s.mem_gb
        for name in ("partition", "account", "qos", "constraint"):
            if getattr(s, name):
                params[f"slurm_{name}"] = getattr(s, name)
        if s.additional_parameters:
            params["slurm_additional_parameters"] = dict(s.additional_parameters)
        if s.setup:
            params["slurm_setup"] = list(s.setup)
        executor.update_parameters(**params)
    elif kind == "local":
        executor.update_parameters(**common, cpus_per_task=ex.slurm.cpus_per_task, gpus_per_node=gpus)
    else:
        executor.update_parameters(**common)
    return executor


def group_by_nodes(study: Study, cells: list[RunSpec], log: Callable[[str], None] = print
                   ) -> dict[int, list[RunSpec]]:
    """The cells by the nodes their jobs ask for (first appearance order): the study's nodes, or more
    for cells whose memory needs more GPUs than the study gives. Warns about cells that fit no count."""
    groups: dict[int, list[RunSpec]] = {}
    cache: dict = {}
    for cell in cells:
        alloc = cell_allocation(study, cell, cache)
        nodes = study.executor.nodes if alloc is None else alloc.nodes
        if alloc is not None and not alloc.fits:
            m = alloc.memory_allocated
            log(f"warning: {cell.key}: needs {m.total / (1 << 30):.1f} GiB per GPU on {m.gpus} "
                f"{study.executor.gpu_type} GPUs and fits no GPU count (training.sharding "
                f"{cell.training.sharding}); see `launch.py plan`")
        groups.setdefault(nodes, []).append(cell)
    return groups


def local_parallelism(array_parallelism: int, threads: int) -> int:
    """Cells the local executor trains at once: the study's array_parallelism, at most one per
    `threads` CPU cores of this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(array_parallelism, cores // max(threads, 1)))


def _check_tracking(study: Study, kind: str) -> None:
    if kind == "slurm" and study.tracking.enabled and not (study.tracking.uri or "").startswith(("http://", "https://")):
        raise StudyError(f"{study.source}: tracking.uri: the slurm executor needs an MLflow server that jobs "
                         "reach over HTTP (many jobs must never write one SQLite file); start one with "
                         "`launch.py tracking-server STUDY` and set tracking.uri (or pass --tracking-uri), "
                         "or set tracking.enabled: false")


def submit(study: Study, kind: Optional[str] = None, dry_run: bool = False,
           log: Callable[[str], None] = print, job_class: type = CellJob) -> SubmitReport:
    """Submit every cell that needs it; returns what was decided and the job ids.

    `job_class` is the callable run per cell (CellJob; benchmarks pass a no-op of the same shape)."""
    kind = kind or study.executor.kind
    _check_tracking(study, kind)
    source = study.source
    study = dataclasses.replace(study, root=str(Path(study.root).resolve()))
    study.source = source  # not an init field: replace() drops it
    cells = expand(study)
    preflight(study, cells)  # issue 16: bad data is one line before any run dir or job exists
    report = SubmitReport(decisions=decide(study, [c.key for c in cells], kind))
    todo = {d.key for d in report.decisions if d.action == "submit"}
    if dry_run or not todo:
        return report
    study_dir = study.study_dir
    groups = group_by_nodes(study, [c for c in cells if c.key in todo], log)
    runs: dict[int, list[tuple[str, Path]]] = {}
    for nodes, group in groups.items():
        runs[nodes] = [(cell.key, ensure_run_dir(study, cell)) for cell in group]
        report.nodes.update({cell.key: nodes for cell in group})
    report.snapshot = snapshot_code(study_dir)
    _prepare_tracking(study)
    limit = study.executor.slurm.max_array_size or (scheduler.max_array_size() if kind == "slurm" else None)
    threads = study.executor.slurm.cpus_per_task
    extra = {}
    if kind == "local":  # every local job starts at once: cap how many train together (lock-file slots)
        extra = {"slots": str(study_dir / "jobs" / "slots"),
                 "max_parallel": local_parallelism(study.executor.slurm.array_parallelism, threads)}
    with _in_dir(report.snapshot), _detached_output(kind):
        for nodes, to_run in runs.items():
            _submit_group(study, kind, nodes, to_run, limit, threads, extra, report, job_class)
    return report


def _submit_group(study: Study, kind: str, nodes: int, to_run: list[tuple[str, Path]], limit: Optional[int],
                  threads: int, extra: dict, report: SubmitReport, job_class: type) -> None:
    """Cells of the same resources: one array per `limit` cells."""
    executor = make_executor(study, kind, study.study_dir / "jobs", nodes=nodes)
    chunk = max(1, limit) if limit else len(to_run)
    for start in range(0, len(to_run), chunk):
        part = to_run[start:start + chunk]
        jobs = []
        if kind == "debug":
            jobs = [executor.submit(job_class(str(rd), threads)) for _, rd in part]
        else:
            with executor.batch():
                for _, rd in part:
                    jobs.append(executor.submit(job_class(str(rd), threads, **extra)))
        report.arrays += 1
        for (key, rd), job in zip(part, jobs):
            report.job_ids[key] = str(job.job_id)
            state = rundir.read_state(rd)
            rundir.update_state(rd, "PENDING", job_id=str(job.job_id), executor=kind,
                                job_ids=state.get("job_ids", []) + [str(job.job_id)],
                                submitted=state.get("submitted", 0) + 1)
        if kind == "debug":
            for job in jobs:
                with contextlib.suppress(Exception):
                    job.result()  # the debug executor runs on result()
