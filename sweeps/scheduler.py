"""What the scheduler knows, asked in one call per question (never one `sacct` per cell)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Iterable, Optional


def slurm_available() -> bool:
    return shutil.which("squeue") is not None and shutil.which("sbatch") is not None


def max_array_size() -> Optional[int]:
    """The cluster's MaxArraySize (tasks 0..N-1 fit an array of N), or None when it cannot be read."""
    if not shutil.which("scontrol"):
        return None
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.M)
    return int(m.group(1)) if m else None


def live_slurm_jobs(job_ids: Iterable[str]) -> set[str]:
    """The ids among `job_ids` (plain or `<array>_<task>`) that squeue still lists (queued or running)."""
    ids = {str(j) for j in job_ids if j}
    if not ids or not slurm_available():
        return set()
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %A"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    listed: set[str] = set()
    for token in out.split():
        listed |= expand_ids(token)
    return {j for j in ids if j in listed}


def expand_ids(token: str) -> set[str]:
    """squeue's id forms: `123`, `124_1`, and pending array ranges `124_[2-5,7%2]` -> each task id."""
    m = re.fullmatch(r"(\d+)_\[([^\]]*)\]", token)
    if not m:
        return {token}
    base, spec = m.group(1), m.group(2).split("%")[0]
    out = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit():
            out |= {f"{base}_{i}" for i in range(int(lo), int(hi if hi.isdigit() else lo) + 1)}
    return out


def live_local_jobs(job_ids: Iterable[str]) -> set[str]:
    """Local executor jobs are processes: alive when the pid exists and is not a zombie."""
    alive = set()
    for j in job_ids:
        if not j or not str(j).isdigit():
            continue
        try:
            with open(f"/proc/{int(j)}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            if state != "Z":
                alive.add(str(j))
        except (OSError, IndexError):
            continue
    return alive


def cancel(kind: str, job_ids: Iterable[str]) -> list[str]:
    ids = [str(j) for j in job_ids if j]
    if not ids:
        return []
    if kind == "slurm":
        subprocess.run(["scancel", *ids], check=False, timeout=60)
        return ids
    done = []
    for j in ids:
        if j.isdigit():
            try:
                os.kill(int(j), 15)
                done.append(j)
            except OSError:
                pass
    return done
