"""Advisory file locks with a named holder: one process at a time holds a lock file, and the file says
who (host, pid, job id, command, since), so a waiter or a refused second process can say who holds it.

Locks are `flock(2)` on a lock file that is never deleted. The kernel releases a lock when its holder
dies (crash, SIGKILL), so a lock whose holder is gone is free again without any clean-up. On a cluster's
shared file system this relies on the file system honouring locks across nodes (NFSv4 and Lustre with
`-o flock` do; Linux maps flock to POSIX locks on NFS); see the README, "Locks and leases".
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Optional


class LockBusy(RuntimeError):
    """The lock is held by another process; `holder` is what it wrote into the lock file."""

    def __init__(self, path: Path, holder: dict):
        self.path, self.holder = Path(path), holder
        super().__init__(f"{path}: held by {describe_holder(holder)}")


class LocksUnsupported(RuntimeError):
    """The file system refuses flock (e.g. NFS mounted with `nolock`, Lustre without `flock`)."""


def describe_holder(holder: dict) -> str:
    if not holder:
        return "another process (it wrote nothing yet)"
    parts = [f"pid {holder.get('pid')} on {holder.get('host')}"]
    if holder.get("job_id"):
        parts.append(f"job {holder['job_id']}")
    if holder.get("command"):
        parts.append(f"`{holder['command']}`")
    if holder.get("since"):
        parts.append(f"since {holder['since']}")
    return ", ".join(parts)


def current_job_id() -> str:
    """This process's scheduler job id as submit recorded it: `<array>_<task>` for a Slurm array task
    (SLURM_JOB_ID alone is the task's raw id, another spelling of the same job), else the plain id."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or env.get("SUBMITIT_LOCAL_JOB_ID") or ""


def holder_info(**extra: object) -> dict:
    """Who we are, for the lock file."""
    job = current_job_id()
    info = {"host": socket.gethostname(), "pid": os.getpid(), "job_id": job,
            "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200],
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    info.update({k: v for k, v in extra.items() if v is not None})
    return info


def read_holder(path: Path) -> dict:
    try:
        text = Path(path).read_text()
        return json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}


class FileLock:
    """`with FileLock(path): ...` holds `path` exclusively for the block (blocking); `acquire(wait=False)`
    raises LockBusy at once when another process holds it. Not re-entrant: a second FileLock on the same
    path in the same process is another holder (flock locks belong to the open file)."""

    def __init__(self, path: Path, info: Optional[dict] = None, write_holder: bool = True):
        self.path = Path(path)
        self.info = info
        self.write_holder = write_holder
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: bool = True, timeout_s: Optional[float] = None,
                on_wait: Optional[Callable[[dict], None]] = None, poll_s: float = 0.2) -> "FileLock":
        """Take the lock. wait=False: LockBusy at once if held. With wait, `on_wait(holder)` is called
        once when the lock is found busy; LockBusy after `timeout_s` (None: wait for ever)."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: already held by this FileLock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        told = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise LocksUnsupported(f"{self.path}: the file system refuses locks ({e.strerror}); "
                                               "see the README, 'Locks and leases'") from None
                if not wait or (deadline is not None and time.monotonic() >= deadline):
                    raise LockBusy(self.path, read_holder(self.path))
                if on_wait is not None and not told:
                    on_wait(read_holder(self.path))
                    told = True
                time.sleep(poll_s)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        if self.write_holder:
            data = json.dumps(self.info or holder_info()).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self.write_holder:
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
