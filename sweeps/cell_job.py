"""The callable a scheduler runs for one cell: small, picklable, and given only its run directory.

On SIGUSR2 (Slurm preemption / time limit, submitit's signal) the training loop checkpoints at the next
step boundary and returns INTERRUPTED; the job then hands the signal to submitit's own handler, which
calls `checkpoint()` (the same callable, same run dir) and requeues the job. The requeued job resumes
from the newest checkpoint in the run dir: resume is keyed to the run dir, never to the job id.
"""
from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from typing import Iterator, Optional

import submitit

from common.locks import FileLock, LockBusy
from common.rundir import LeaseBusy, RunDir


@contextlib.contextmanager
def _slot(folder: Optional[str], count: int) -> Iterator[None]:
    """Hold one of `count` lock-file slots in `folder` for the block (no folder: no limit).

    The local executor starts every job at once; slots make at most `count` cells train at a time on
    one machine while the others wait before importing torch (a few MB each)."""
    if not folder or count < 1:
        yield
        return
    while True:
        for i in range(count):
            lock = FileLock(Path(folder) / f"slot-{i}.lock")
            try:
                lock.acquire(wait=False)
            except LockBusy:
                continue
            try:
                yield
            finally:
                lock.release()
            return
        time.sleep(0.5)


def wait_for_trunk(run_dir: str, poll_s: float = 1.0) -> None:
    """A WSD branch on the local executor: wait (before taking a slot) until its trunk has written its
    branch point, or the trunk stops trying (failed, or neither trained nor queued); the training then
    starts, or says it is waiting on the trunk. Slurm branches wait through job dependencies instead."""
    from scaling.spec import RunSpec   # light: the spec dataclasses
    from .scheduler import live_local_jobs
    from .trunks import branch_ready

    rd = RunDir(Path(run_dir))
    spec = RunSpec.from_json(rd.spec(), str(rd.path))
    if spec.role != "cell" or not spec.trunk:
        return
    trunk = RunDir(rd.path.parent / spec.trunk["key"])
    while not branch_ready(rd.path.parent, spec):
        s = trunk.state()
        if s.get("state") in ("FAILED", "DONE"):
            return
        if not trunk.leased() and not live_local_jobs({s.get("job_id")}):
            return
        time.sleep(poll_s)


class CellJob(submitit.helpers.Checkpointable):
    def __init__(self, run_dir: str, threads: int = 0, slots: Optional[str] = None, max_parallel: int = 0,
                 until_step: Optional[int] = None, trunk_wait: bool = False):
        self.run_dir = str(run_dir)
        self.threads = threads   # CPU threads for torch (the cell's cpus_per_task); 0 leaves torch's default
        self.slots = slots       # local executor: lock-file folder capping the cells that train at once
        self.max_parallel = max_parallel
        self.until_step = until_step    # a WSD trunk's segment job: stop at this branch step
        self.trunk_wait = trunk_wait    # a WSD branch on the local executor: wait for its branch point

    def __call__(self) -> dict:
        if self.trunk_wait:
            wait_for_trunk(self.run_dir)
        with _slot(self.slots, self.max_parallel):
            return self._run()

    def _run(self) -> dict:
        from scaling.train import INTERRUPTED, train_cell   # torch: imported once a slot is free

        if self.threads:
            import torch  # heavy: torch only once a cell runs

            torch.set_num_threads(self.threads)
        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # one task per GPU: the process group comes from Slurm's variables
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        job_id = env.job_id   # submitit's spelling (`<array>_<task>`), the one submit recorded
        stop = {"signal": None}
        try:
            status = train_cell(Path(self.run_dir), log=lambda line: print(line, flush=True), stop_signals=stop,
                                job_id=job_id, until_step=self.until_step)
        except LeaseBusy as e:  # a duplicate job of a cell another process trains: leave everything as is
            print(f"{e}", flush=True)
            return {"run_dir": self.run_dir, "status": "BUSY"}
        if status == INTERRUPTED and stop["signal"] == signal.SIGUSR2:
            handler = signal.getsignal(signal.SIGUSR2)
            if callable(handler):  # submitit's: checkpoint() + requeue + exit
                handler(signal.SIGUSR2, None)
        return {"run_dir": self.run_dir, "status": status}

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        # the training state is already on disk in the run dir: requeue the same callable
        return submitit.helpers.DelayedSubmission(CellJob(self.run_dir, self.threads, self.slots, self.max_parallel,
                                                          self.until_step, self.trunk_wait))


class NoopCellJob:
    """Same shape as CellJob and does nothing: for measuring dispatch overhead (bench/submit_overhead.py)."""

    def __init__(self, run_dir: str, threads: int = 0, **_):
        self.run_dir = str(run_dir)

    def __call__(self) -> str:
        return self.run_dir
