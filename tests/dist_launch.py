"""Start one cell as N processes on this machine (gloo), the way torchrun or Slurm would: RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT per process. The test keeps each process's handle,
so it can signal one rank alone."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(run_dir: Path, world: int, log_dir: Path) -> list[subprocess.Popen]:
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": "1"}
        if world == 1:
            for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
                env.pop(k)
        out = open(log_dir / f"rank{rank}.log", "ab")
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "train", str(run_dir)],
                                      cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT))
    return procs


def wait(procs: list[subprocess.Popen], timeout: float = 600) -> list[int]:
    return [p.wait(timeout=timeout) for p in procs]
