"""The run directory of one cell, and the only code that reads or writes its files.

    <run dir>/spec.json       the resolved RunSpec (written once at creation)
              state.json      PENDING / RUNNING / DONE / FAILED, attempts, failures, job ids, error
              metrics.jsonl   one line per logging step (x-axis: tokens seen); written by the lease holder
              result.json     the final result; written by the lease holder
              checkpoints/    step_<n>/ folders (scaling.checkpoint writes them under the lease)
              branch_points/  a WSD trunk's step_<n>/ checkpoints its branches start from (kept)
              lease           held (flock) by the one process that trains the cell, for its whole life
              .state.lock     held for the instant of each state.json read-modify-write

Rules (README, "Locks and leases"):
- every write is atomic (temporary file + fsync + rename): a kill at any moment leaves the old or the
  new file, never a half one;
- state.json changes are read-modify-writes under an exclusive lock, with checked transitions: nothing
  moves a DONE cell anywhere but an explicit `reset`; a FAILED cell goes back to PENDING only on a retry;
- one trainer per cell: a training process takes the lease before it writes anything; a second process
  gets `LeaseBusy` (the CLI exits with LEASE_BUSY_EXIT) and touches nothing; a lease whose holder died is
  free again (the kernel drops its lock);
- metrics.jsonl is append-only (whole lines, one write each) and trimmed back to the checkpoint a resumed
  run restarts from; a reader skips a line cut by a kill (no trailing newline) and unparsable lines.

Torch-free and light: analysis, sweeps and scaling all read run dirs through it.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from .locks import FileLock, LockBusy, describe_holder, holder_info, read_holder

STATES = ("PENDING", "RUNNING", "DONE", "FAILED")
SPEC, STATE, METRICS, RESULT = "spec.json", "state.json", "metrics.jsonl", "result.json"
LEASE, STATE_LOCK = "lease", ".state.lock"
CHECKPOINTS, LOGS, BRANCH_POINTS = "checkpoints", "logs", "branch_points"
LEASE_BUSY_EXIT = 4      # `launch.py train` when another process holds the cell's lease
NEW_STATE = {"state": "PENDING", "attempts": 0, "failures": 0, "job_ids": []}

# allowed moves of state.json's `state` (a move to the same state only changes fields)
TRANSITIONS = {
    "PENDING": {"PENDING", "RUNNING", "FAILED"},
    "RUNNING": {"RUNNING", "PENDING", "DONE", "FAILED"},
    "FAILED": {"FAILED", "PENDING", "RUNNING"},
    "DONE": {"DONE"},
}


def checkpoint_name(step: int) -> str:
    return f"step_{step:09d}"


def checkpoint_complete(path: Path) -> bool:
    """A checkpoint folder renamed into place with its metadata (scaling.checkpoint writes it)."""
    return (path / "meta.pt").is_file() and (path / ".metadata").is_file()


class RunDirError(ValueError):
    """A run-dir file that exists but does not parse (strict reads only); names the file."""


class TransitionError(RuntimeError):
    """A state change the run dir refuses (e.g. DONE -> PENDING without reset)."""


class LeaseBusy(RuntimeError):
    """Another live process trains this cell; `holder` says which."""

    def __init__(self, run_dir: Path, holder: dict):
        self.run_dir, self.holder = Path(run_dir), holder
        super().__init__(f"{run_dir}: another process trains this cell ({describe_holder(holder)}); nothing done")


# ------------------------------------------------------------------------------------------- files


def write_json(path: Path, data: Any) -> None:
    """Write `data` as JSON atomically (temporary file, fsync, rename)."""
    write_text(path, json.dumps(data, indent=1, default=_jsonable) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write `text` atomically: readers see the old file or the new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "as_dict"):
        return obj.as_dict()
    return str(obj)


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON in `path`, or `default` when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, NotADirectoryError):
        return default
    except ValueError:
        return default


def parse_lines(text: str) -> tuple[list[dict], int]:
    """metrics.jsonl text -> (records, lines skipped): a last line without its newline (cut by a kill)
    and lines that do not parse as JSON objects are skipped and counted."""
    out, skipped = [], 0
    lines = text.split("\n")
    if lines[-1].strip():   # the piece after the last newline is incomplete
        skipped += 1
    for line in lines[:-1]:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            skipped += 1
            continue
        if isinstance(rec, dict):
            out.append(rec)
        else:
            skipped += 1
    return out, skipped


def _load(path: Path, strict: bool) -> Optional[Any]:
    """JSON of `path`; None when missing; unparsable: None, or RunDirError naming the file (strict)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as e:
        if strict:
            raise RunDirError(f"{path}: unreadable JSON ({type(e).__name__}: {e})") from None
        return None


# ----------------------------------------------------------------------------------------- the owner


class RunDir:
    """One cell's run directory. Reading is free for anyone; state changes go through `update` (locked,
    checked); metrics and results are written through the `Lease` a trainer holds."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def key(self) -> str:
        return self.path.name

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def branch_points(self) -> Path:
        return self.path / BRANCH_POINTS

    def branch_point(self, step: int) -> Path:
        """A WSD trunk's checkpoint at `step`, the state its branch of that step starts from."""
        return self.branch_points / checkpoint_name(step)

    def branch_steps(self) -> list[int]:
        """The steps of this trunk's complete branch points, in order."""
        if not self.branch_points.is_dir():
            return []
        return sorted(int(p.name[5:]) for p in self.branch_points.glob("step_*")
                      if p.name[5:].isdigit() and checkpoint_complete(p))

    @property
    def logs(self) -> Path:
        return self.path / LOGS

    def exists(self) -> bool:
        return (self.path / SPEC).exists()

    # -- spec ------------------------------------------------------------------------------------

    def spec(self, strict: bool = False) -> dict:
        return _load(self.path / SPEC, strict) or {}

    def create(self, spec: dict, tracking_follows: bool = True, follows: tuple[str, ...] = ()) -> "RunDir":
        """Make the run dir with `spec` (written once; only its `tracking` section follows the study, since
        where results are mirrored is not part of the key, and the fields named in `follows`: a WSD
        trunk's branch list grows with the grid) and a PENDING state."""
        self.path.mkdir(parents=True, exist_ok=True)
        with self._state_lock():
            old = read_json(self.path / SPEC)
            names = (("tracking",) if tracking_follows else ()) + tuple(follows)
            if old is None:
                write_json(self.path / SPEC, spec)
            elif any(old.get(n) != spec.get(n) for n in names):
                write_json(self.path / SPEC, {**old, **{n: spec.get(n) for n in names}})
            if not (self.path / STATE).exists():
                write_json(self.path / STATE, {**NEW_STATE, "updated": _now()})
        return self

    # -- state -----------------------------------------------------------------------------------

    def state(self, strict: bool = False) -> dict:
        """state.json (a new cell's defaults when there is none)."""
        s = _load(self.path / STATE, strict)
        return dict(s) if isinstance(s, dict) else dict(NEW_STATE, job_ids=[])

    def update(self, state: Optional[str] = None, *, allowed_from: Optional[Iterable[str]] = None,
               reset: bool = False, **fields: Any) -> dict:
        """Locked read-modify-write of state.json: set `state` (checked against TRANSITIONS, and against
        `allowed_from` when given) and merge `fields`; returns the new state. Raises TransitionError and
        writes nothing when the move is refused. `reset=True` allows any move (an explicit reset)."""
        if state is not None and state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        with self._state_lock():
            current = self.state()
            old = current.get("state", "PENDING")
            if not reset:
                if allowed_from is not None and old not in set(allowed_from):
                    raise TransitionError(f"{self.path.name}: is {old}, not {'/'.join(sorted(allowed_from))}")
                if state is not None and state not in TRANSITIONS.get(old, set()):
                    raise TransitionError(f"{self.path.name}: {old} -> {state} refused")
                if state is None and old == "DONE" and fields:
                    raise TransitionError(f"{self.path.name}: is DONE; its state is not changed")
            if state is not None:
                current["state"] = state
            current.update(fields)
            current["updated"] = _now()
            write_json(self.path / STATE, current)
            return current

    def add_job(self, job_id: Optional[str], executor: Optional[str] = None, submitted: bool = False) -> dict:
        """Record a job of this cell (once, however often it is told): `job_id` becomes the current job;
        `submitted` counts a submission. A DONE cell only gains the id in its history."""
        with self._state_lock():
            current = self.state()
            ids = list(current.get("job_ids") or [])
            if job_id and str(job_id) not in ids:
                ids.append(str(job_id))
            current["job_ids"] = ids
            if job_id:
                current["job_id"] = str(job_id)
            if executor:
                current["executor"] = executor
            if submitted:
                current["submitted"] = current.get("submitted", 0) + 1
            current["updated"] = _now()
            write_json(self.path / STATE, current)
            return current

    def _state_lock(self) -> FileLock:
        return FileLock(self.path / STATE_LOCK, write_holder=False)

    # -- metrics and result ---------------------------------------------------------------------

    def metrics(self) -> list[dict]:
        return self.metrics_counted()[0]

    def metrics_counted(self) -> tuple[list[dict], int]:
        """(records, lines skipped) of metrics.jsonl."""
        try:
            return parse_lines((self.path / METRICS).read_text())
        except FileNotFoundError:
            return [], 0

    def has_metrics(self) -> bool:
        try:
            return (self.path / METRICS).stat().st_size > 0
        except FileNotFoundError:
            return False

    def tail_metrics(self, having: str = "loss", tail_bytes: int = 16384) -> list[dict]:
        """The complete metrics lines that have `having` in the file's last `tail_bytes` (a cheap read
        of a long file: the first line there may be cut, and is skipped)."""
        try:
            with open(self.path / METRICS, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(size - tail_bytes, 0))
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        if size > tail_bytes:
            text = text.split("\n", 1)[-1]
        return [rec for rec in parse_lines(text)[0] if having in rec]

    def last_metrics(self, having: str = "loss") -> dict:
        """The last complete metrics line that has `having`, reading only the file's tail."""
        recs = self.tail_metrics(having)
        return recs[-1] if recs else {}

    def result(self, strict: bool = False) -> Optional[dict]:
        r = _load(self.path / RESULT, strict)
        return r if isinstance(r, dict) else None

    def result_stamp(self) -> Optional[tuple[int, int]]:
        """(size, mtime ns) of result.json, None before the cell finished: a cheap change marker."""
        try:
            st = (self.path / RESULT).stat()
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def error_log(self) -> Path:
        return self.logs / "error.txt"

    # -- the lease -------------------------------------------------------------------------------

    def lease_holder(self) -> dict:
        return read_holder(self.path / LEASE)

    def leased(self) -> bool:
        """True when some live process holds the lease now."""
        lock = FileLock(self.path / LEASE, write_holder=False)
        try:
            lock.acquire(wait=False)
        except LockBusy:
            return True
        lock.release()
        return False

    def lease(self, job_id: Optional[str] = None) -> "Lease":
        """Take the lease (non-blocking): raises LeaseBusy when another live process holds it."""
        return Lease(self, job_id)


class Lease:
    """The one process that trains a cell holds this for its whole life; the writes only a trainer does
    (metrics, result, its state moves) go through it. Use as a context manager or call release()."""

    def __init__(self, rd: RunDir, job_id: Optional[str] = None):
        self.rd = rd
        self._lock = FileLock(rd.path / LEASE, holder_info(job_id=job_id))
        try:
            self._lock.acquire(wait=False)
        except LockBusy as e:
            raise LeaseBusy(rd.path, e.holder) from None

    @property
    def held(self) -> bool:
        return self._lock.held

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _check(self) -> None:
        if not self._lock.held:
            raise RuntimeError(f"{self.rd.path}: the lease was released")

    def append_metrics(self, line: dict) -> None:
        """Append one whole line (one write call, flushed)."""
        self._check()
        data = (json.dumps(line) + "\n").encode()
        fd = os.open(self.rd.path / METRICS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def trim_metrics(self, last_step: int) -> None:
        """Drop metric lines logged after the checkpoint a resumed run restarts from."""
        self._check()
        keep = [m for m in self.rd.metrics() if m.get("step", 0) <= last_step]
        write_text(self.rd.path / METRICS, "".join(json.dumps(m) + "\n" for m in keep))

    def write_result(self, result: dict) -> None:
        self._check()
        write_json(self.rd.path / RESULT, result)

    def write_error(self, text: str) -> None:
        self._check()
        self.rd.logs.mkdir(exist_ok=True)
        write_text(self.rd.error_log(), text)


# ------------------------------------------------------------------- plain functions (read-only helpers)


def branch_ready(run_dir: Path, trunk_key: str, step: int) -> bool:
    """Whether a WSD branch can train: it has a checkpoint of its own, or its trunk (beside it in the
    study dir) has written the branch point at `step`."""
    rd = RunDir(run_dir)
    own = rd.checkpoints
    if own.is_dir() and any(checkpoint_complete(p) for p in own.glob("step_*") if "." not in p.name):
        return True
    return checkpoint_complete(RunDir(rd.path.parent / trunk_key).branch_point(step))


def cell_dirs(study_dir: Path) -> list[Path]:
    """The run dirs of a study's cells, in name order: not its WSD trunks (role "trunk"), which train
    the state their branch cells start from and have no result of their own."""
    d = Path(study_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_dir() and RunDir(p).exists()
                  and RunDir(p).spec().get("role", "cell") != "trunk")


def read_state(run_dir: Path) -> dict:
    return RunDir(run_dir).state()


def read_metrics(run_dir: Path) -> list[dict]:
    return RunDir(run_dir).metrics()


def read_result(run_dir: Path) -> Optional[dict]:
    return RunDir(run_dir).result()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
