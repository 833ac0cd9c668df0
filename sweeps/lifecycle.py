"""The one lifecycle of cells, shared by `submit`, `tune` and `demo`: hold the study's submit lock,
submit run dirs through submitit (node allocation, code snapshot, job arrays chunked to the cluster's
limit, in-process runs for the debug executor), and wait for them (progress, retries, lost jobs).

Each caller adds only its own part: `submit` decides which cells need a job (sweeps.dispatch), `tune`
asks and tells optuna and prunes, the demo prints its progress lines.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import submitit

from common.locks import FileLock, LockBusy, describe_holder, holder_info
from common.mlflow_contract import default_uri
from common.rundir import RunDir, TransitionError
from scaling.spec import RunSpec

from . import scheduler
from .cell_job import CellJob
from .cost import cell_allocation
from .dashboard import write_dashboard
from .study import Study, StudyError

CODE_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "scaling", "sweeps", "analysis")
SUBMIT_LOCK = ".submit.lock"


# ------------------------------------------------------------------------------------ the study lock


@contextlib.contextmanager
def study_lock(study_dir: Path, wait: bool = True, log: Callable[[str], None] = print) -> Iterator[None]:
    """One submit at a time per study (`submit`, `tune`, the demo): held around deciding and submitting.
    A second one waits (saying who holds it), or with wait=False fails at once with StudyError."""
    path = Path(study_dir) / SUBMIT_LOCK

    def waiting(holder: dict) -> None:
        log(f"waiting for the study's submit lock ({describe_holder(holder)}) ...")

    lock = FileLock(path, holder_info())
    try:
        lock.acquire(wait=wait, on_wait=waiting)
    except LockBusy as e:
        raise StudyError(f"{study_dir}: another submit holds the study's lock ({describe_holder(e.holder)}); "
                         "run again when it ends, or without --no-wait to wait for it") from None
    try:
        yield
    finally:
        lock.release()


# ------------------------------------------------------------------------------------ the code snapshot


def snapshot_code(study_dir: Path) -> Path:
    """The packages jobs import, copied once into `<study>/code/<content hash>/`: content-addressed and
    written once (built in a private folder, renamed into place; a concurrent writer of the same hash
    loses the rename and drops its copy), so jobs never see a folder change under them."""
    files = []
    for pkg in PACKAGES:
        files += sorted(p for p in (CODE_ROOT / pkg).rglob("*.py"))
    files.append(CODE_ROOT / "launch.py")
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(CODE_ROOT)).encode())
        h.update(f.read_bytes())
    dest = Path(study_dir) / "code" / h.hexdigest()[:12]
    if dest.exists():
        return dest
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for f in files:
        target = tmp / f.relative_to(CODE_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    try:
        os.rename(tmp, dest)   # fails when another writer got there first: same content, keep theirs
    except OSError:
        if not dest.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


# ------------------------------------------------------------------------------------ executors


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


def check_tracking(study: Study, kind: str) -> None:
    if kind == "slurm" and study.tracking.enabled and not (study.tracking.uri or "").startswith(("http://", "https://")):
        raise StudyError(f"{study.source}: tracking.uri: the slurm executor needs an MLflow server that jobs "
                         "reach over HTTP (many jobs must never write one SQLite file); start one with "
                         "`launch.py tracking-server STUDY` and set tracking.uri (or pass --tracking-uri), "
                         "or set tracking.enabled: false")


def prepare_tracking(study: Study) -> None:
    """Create the experiment (and a SQLite schema) and write the study's dashboard once per submit,
    before many jobs race to log (an unreachable server is a warning: the jobs' mirrors cope)."""
    if study.tracking.enabled:
        write_dashboard(study, study.tracking.uri or default_uri(study.study_dir))


# ------------------------------------------------------------------------------------ submitting


@dataclass
class Submitted:
    job_ids: dict[str, str] = field(default_factory=dict)    # cell key -> job id
    nodes: dict[str, int] = field(default_factory=dict)      # cell key -> nodes its job asks for
    arrays: int = 0
    snapshot: Optional[Path] = None
    skipped: dict[str, str] = field(default_factory=dict)    # cell key -> why it was not submitted after all
    ran: dict[str, str] = field(default_factory=dict)        # debug: cell key -> its state after running
    segments: dict[str, dict[int, str]] = field(default_factory=dict)   # trunk -> {until step: job id}


@dataclass
class JobRequest:
    """One job beyond a plain cell's: extra job arguments (a WSD trunk segment's `until_step`, a local
    branch's `trunk_wait`) and the job it starts after (`after`: the `name` of an earlier request of
    the same submission, or a live job id). Slurm holds a job with `after` through a dependency
    (afterany: the job itself checks what it needs); the local and debug executors run requests in
    order and a local branch waits in its own job."""
    spec: RunSpec
    path: Path
    kwargs: dict = field(default_factory=dict)
    after: Optional[str] = None
    name: Optional[str] = None


def submit_cells(study: Study, kind: str, cells: list, job_class: type = CellJob,
                 log: Callable[[str], None] = print, tracked: bool = True) -> Submitted:
    """Submit one job per (spec, run dir) or JobRequest, the caller holding the study lock; results are
    keyed by the run dir's name (a grid cell's key, a tune trial's folder). Each run dir is marked PENDING
    before its job exists (one that turned DONE, or whose lease a live process holds, is skipped), jobs
    go out as arrays per node count chunked to the cluster's limit (requests with a dependency one by
    one, in order), and each job id is recorded once. The debug executor runs each job here and now
    (never entering a debugger)."""
    out = Submitted()
    todo: list[JobRequest] = []
    marked: dict[Path, bool] = {}
    for item in cells:
        req = item if isinstance(item, JobRequest) else JobRequest(item[0], Path(item[1]))
        req.path = Path(req.path)
        if req.path not in marked:   # a trunk's segments share its run dir: marked once
            rd = RunDir(req.path)
            marked[req.path] = False
            if rd.leased():
                out.skipped[rd.key] = f"being trained ({describe_holder(rd.lease_holder())})"
                continue
            try:
                rd.update("PENDING", allowed_from={"PENDING", "FAILED", "RUNNING"})
            except TransitionError as e:
                out.skipped[rd.key] = str(e)
                continue
            marked[req.path] = True
        if marked[req.path]:
            todo.append(req)
    if not todo:
        return out
    out.snapshot = snapshot_code(study.study_dir)
    if tracked:
        prepare_tracking(study)
    limit = study.executor.slurm.max_array_size or (scheduler.max_array_size() if kind == "slurm" else None)
    threads = study.executor.slurm.cpus_per_task
    extra = {}
    if kind == "local":  # every local job starts at once: cap how many train together (lock-file slots)
        extra = {"slots": str(study.study_dir / "jobs" / "slots"),
                 "max_parallel": local_parallelism(study.executor.slurm.array_parallelism, threads)}
    ordered = any(r.after or r.kwargs for r in todo)   # a WSD study: trunks before their branches
    plain = [] if ordered else todo
    by_name: dict[str, str] = {}

    def record(req: JobRequest, job, nodes: int) -> None:
        job_id = str(job.job_id)
        out.job_ids[req.path.name] = job_id
        out.nodes[req.path.name] = nodes
        by_name[req.name or req.path.name] = job_id
        RunDir(req.path).add_job(job_id, executor=kind, submitted=True)
        if "until_step" in req.kwargs:   # a trunk: which job writes which branch point (for later submits)
            segs = out.segments.setdefault(req.path.name, {})
            segs[int(req.kwargs["until_step"])] = job_id
            with contextlib.suppress(TransitionError):
                RunDir(req.path).update(segment_jobs={str(b): j for b, j in segs.items()})

    with _in_dir(out.snapshot), _detached_output(kind):
        groups = group_by_nodes(study, [r.spec for r in todo], log)
        nodes_of = {id(spec): n for n, group in groups.items() for spec in group}
        req_of = {id(r.spec): r for r in plain}
        for nodes, group in groups.items():   # plain cells: arrays per node count
            part_all = [req_of[id(spec)] for spec in group if id(spec) in req_of]
            if not part_all:
                continue
            executor = make_executor(study, kind, study.study_dir / "jobs", nodes=nodes)
            chunk = max(1, limit) if limit else len(part_all)
            for start in range(0, len(part_all), chunk):
                part = part_all[start:start + chunk]
                if kind == "debug":
                    jobs = [executor.submit(job_class(str(r.path), threads)) for r in part]
                else:
                    with executor.batch():
                        jobs = [executor.submit(job_class(str(r.path), threads, **extra)) for r in part]
                out.arrays += 1
                for r, job in zip(part, jobs):
                    record(r, job, nodes)
                if kind == "debug":
                    for r, job in zip(part, jobs):
                        out.ran[r.path.name] = run_in_process(job, r.path)
        for r in (todo if ordered else []):   # one by one, in order
            nodes = nodes_of[id(r.spec)]
            executor = make_executor(study, kind, study.study_dir / "jobs", nodes=nodes)
            after = by_name.get(r.after, r.after) if r.after else None
            if kind == "slurm" and after:
                added = dict(study.executor.slurm.additional_parameters or {})
                added["dependency"] = f"afterany:{after}"
                executor.update_parameters(slurm_additional_parameters=added)
            job = executor.submit(job_class(str(r.path), threads, **(extra if kind == "local" else {}), **r.kwargs))
            out.arrays += 1
            record(r, job, nodes)
            if kind == "debug":
                out.ran[r.path.name] = run_in_process(job, r.path)
    return out


def run_in_process(job, run_dir: Path) -> str:
    """Run a debug-executor job now, without submitit's post-mortem debugger (`job.result()` opens a
    pdb prompt on any failure); returns the cell's state afterwards (the run dir holds the error)."""
    saved = dict(os.environ)
    os.environ.update(job.environ)   # what submitit's debug job sets up: its job id, for JobEnvironment
    try:
        job.exception()              # runs the callable, returns its exception instead of debugging it
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return RunDir(run_dir).state().get("state", "PENDING")


# ------------------------------------------------------------------------------------ waiting


@dataclass
class Watched:
    """What the wait loop knows of one cell."""
    key: str
    path: Path
    state: dict = field(default_factory=dict)
    missing: int = 0        # polls in a row its job was not live while the cell was not finished
    lost: int = 0           # times its job ended without finishing the cell


def wait_cells(cells: dict[str, Path], kind: str, max_retries: int,
               resubmit: Callable[[list[str]], None],
               on_end: Callable[[Watched, str], None] = lambda w, how: None,
               on_live: Callable[[Watched], bool] = lambda w: False,
               on_poll: Callable[[dict[str, Watched]], None] = lambda ws: None,
               poll_s: float = 2.0, timeout_s: Optional[float] = None) -> dict[str, str]:
    """Wait until every cell is DONE or given up; returns {key: DONE | FAILED | LOST | STOPPED}.

    Each poll reads every open cell's state and asks the scheduler once which jobs live. A DONE cell
    ends; a FAILED one is resubmitted while its failures <= max_retries; a cell whose job is gone twice
    in a row (one scheduler query can miss a job) without finishing is resubmitted (it resumes from its
    checkpoint) up to max_retries + 1 times, then LOST. `on_live(w)` returning True stops watching a
    cell whose job lives (tune's pruning: it cancels the job itself), `on_end(w, how)` is told each
    ending, `on_poll` sees every open cell once per poll (progress lines)."""
    open_ = {k: Watched(k, Path(p)) for k, p in cells.items()}
    ended: dict[str, str] = {}
    t0 = time.monotonic()
    while open_:
        for w in open_.values():
            w.state = RunDir(w.path).state()
        live = _live(kind, {w.state.get("job_id") for w in open_.values()})
        again: list[str] = []
        for key, w in list(open_.items()):
            s = w.state.get("state")
            how = None
            if s == "DONE":
                how = "DONE"
            elif s == "FAILED":
                if w.state.get("failures", 1) > max_retries:
                    how = "FAILED"
                else:
                    again.append(key)
            elif w.state.get("job_id") in live:
                w.missing = 0
                if on_live(w):
                    how = "STOPPED"
            else:
                w.missing += 1
                if w.missing >= 2 or kind == "debug":
                    w.lost += 1
                    if w.lost > max_retries + 1:
                        how = "LOST"
                    else:
                        again.append(key)
            if how is not None:
                ended[key] = how
                del open_[key]
                on_end(w, how)
        if again:
            resubmit(again)
            for key in again:
                open_[key].missing = 0
        if not open_:
            break
        on_poll(open_)
        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
            break
        if kind != "debug" or not again:
            time.sleep(poll_s)
    return ended


def _live(kind: str, job_ids: set) -> set[str]:
    ids = {j for j in job_ids if j}
    if not ids or kind == "debug":
        return set()
    return scheduler.live_slurm_jobs(ids) if kind == "slurm" else scheduler.live_local_jobs(ids)
