"""A real single-node Slurm cluster (with accounting) for tests, brought up by
`scripts/slurm/start.sh`, plus small helpers that ask it about jobs.

    info = ensure_slurm()          # {"partition": "debug", "cpus": 2, "max_array_size": 1001}
    info = ensure_slurm(4)         # same cluster, MaxArraySize=4 (slurmctld is restarted, jobs kept)

`ensure_slurm` raises `SlurmUnavailable` (tests skip on it) when the script cannot run here: not
root, or the packages are missing and there is no apt-get. Any other failure is a RuntimeError
carrying the tail of the script's output (which includes the daemons' log tails)."""
from __future__ import annotations

import datetime as _dt
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Optional, Union

ROOT = Path(__file__).resolve().parents[1]
START_SCRIPT = ROOT / "scripts" / "slurm" / "start.sh"
STOP_SCRIPT = ROOT / "scripts" / "slurm" / "stop.sh"
DEFAULT_MAX_ARRAY_SIZE = 1001
TERMINAL_STATES = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
    "PREEMPTED", "TIMEOUT", "REVOKED",
})

_READY = re.compile(r"slurm ready: partition (\S+), cpus (\d+), mem (\d+) MB, MaxArraySize (\d+)")


class SlurmUnavailable(Exception):
    """Slurm cannot be brought up on this machine (e.g. not root, no apt-get); `reason` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _tail(text: str, n: int = 60) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def ensure_slurm(max_array_size: Optional[int] = None, timeout_s: float = 600.0) -> dict:
    """Run `scripts/slurm/start.sh` (idempotent: about 1-3 s when the cluster is already up, about
    30 s on a fresh machine including apt-get) and return
    `{"partition", "cpus", "max_array_size", "mem_mb"}`.
    `max_array_size=None` means the default (1001), so calling `ensure_slurm()` after
    `ensure_slurm(2)` restores it."""
    env = dict(os.environ)
    size = DEFAULT_MAX_ARRAY_SIZE if max_array_size is None else int(max_array_size)
    env["SLURM_TEST_MAX_ARRAY_SIZE"] = str(size)
    try:
        proc = subprocess.run(["bash", str(START_SCRIPT)], capture_output=True, text=True, env=env,
                              stdin=subprocess.DEVNULL, timeout=timeout_s)
    except FileNotFoundError as e:
        raise SlurmUnavailable(f"cannot run bash: {e}") from e
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or "") + (e.stderr or "")
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        raise RuntimeError(f"{START_SCRIPT} did not finish in {timeout_s:.0f} s:\n{_tail(out)}") from e
    if proc.returncode == 3:
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "start.sh exited 3"
        reason = reason.removeprefix("slurm unavailable: ")
        raise SlurmUnavailable(reason)
    m = _READY.search(proc.stdout)
    if proc.returncode != 0 or not m:
        raise RuntimeError(f"{START_SCRIPT} failed (exit {proc.returncode}):\n"
                           f"{_tail(proc.stdout + proc.stderr)}")
    return {"partition": m.group(1), "cpus": int(m.group(2)), "mem_mb": int(m.group(3)),
            "max_array_size": int(m.group(4))}


def stop_slurm() -> None:
    """Stop the daemons (`scripts/slurm/stop.sh`); packages and state are kept."""
    subprocess.run(["bash", str(STOP_SCRIPT)], check=True, capture_output=True, text=True, timeout=120)


def squeue_ids() -> list[str]:
    """Ids of all jobs in the queue (pending, running, completing...), array tasks one per line:
    `["123", "124_0", "124_1", ...]` (a pending array may show as one `124_[2-3]` row per range)."""
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def _sacct_time(ts: Union[float, int, _dt.datetime]) -> str:
    if isinstance(ts, _dt.datetime):
        ts = ts.timestamp()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(float(ts)))


def sacct_jobs(since_ts: Union[float, int, _dt.datetime], duplicates: bool = False) -> list[dict]:
    """Jobs known to accounting that were eligible/started since `since_ts` (epoch seconds or a
    datetime), allocations only (`sacct -X`). Each row:
    `{"job_id": "124_1", "job_id_raw": "126", "array_job_id": "124", "array_task": 1, "name": ...,
      "state": "COMPLETED", "state_raw": "CANCELLED by 0", "exit_code": "0:0", "start", "end"}`;
    `array_task` is None for a plain job (and for a still-pending array range like `124_[2-3]`).
    With `duplicates=True` (`sacct -D`), earlier runs of requeued jobs are listed too (state
    REQUEUED, ...)."""
    fields = ["JobID", "JobIDRaw", "JobName", "State", "ExitCode", "Start", "End"]
    cmd = ["sacct", "-X", "-n", "-P", "--format=" + ",".join(fields), "-S", _sacct_time(since_ts),
           "-E", "now"]
    if duplicates:
        cmd.append("-D")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) != len(fields):
            continue
        job_id, raw, name, state, exit_code, start, end = parts
        array_job_id, task = job_id, None
        if "_" in job_id:
            array_job_id, _, t = job_id.partition("_")
            task = int(t) if t.isdigit() else None
        rows.append({"job_id": job_id, "job_id_raw": raw, "array_job_id": array_job_id,
                     "array_task": task, "name": name, "state": state.split()[0] if state else "",
                     "state_raw": state, "exit_code": exit_code, "start": start, "end": end})
    return rows


def sacct_state(job_id: str, since_ts: Union[float, int, _dt.datetime]) -> Optional[str]:
    """The accounting state of one job (`"123"` or `"124_1"`), or None if sacct does not know it yet."""
    for row in sacct_jobs(since_ts):
        if row["job_id"] == job_id or row["job_id_raw"] == job_id:
            return row["state"]
    return None


def wait_for_sacct_state(job_id: str, since_ts: Union[float, int, _dt.datetime],
                         timeout: float = 60.0, states=TERMINAL_STATES) -> str:
    """Poll sacct until `job_id` is in one of `states` (default: any terminal state); return it."""
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = sacct_state(job_id, since_ts)
        if state in states:
            return state
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} not in {sorted(states)} after {timeout:.0f} s (last: {state})")


def wait_for_empty_queue(timeout: float = 60.0) -> None:
    """Return once `squeue` lists no job at all; TimeoutError (naming the jobs left) otherwise."""
    deadline = time.monotonic() + timeout
    ids: list[str] = []
    while time.monotonic() < deadline:
        ids = squeue_ids()
        if not ids:
            return
        time.sleep(0.5)
    raise TimeoutError(f"slurm queue not empty after {timeout:.0f} s: {ids[:20]}")
