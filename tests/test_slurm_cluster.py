"""submitit against a real single-node Slurm with accounting (scripts/slurm/start.sh): results,
arrays, failures, checkpoint/requeue on USR2, and MaxArraySize enforcement. No mocks.

Skips only when start.sh says Slurm cannot run here (not root, no apt-get)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit
from submitit.core.utils import FailedJobError

from slurm_cluster import (DEFAULT_MAX_ARRAY_SIZE, SlurmUnavailable, TERMINAL_STATES, ensure_slurm,
                           sacct_jobs, sacct_state, wait_for_empty_queue, wait_for_sacct_state)

# The job processes cannot import this test module (tests/ is not on their sys.path): ship the
# functions and classes defined here by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def slurm():
    try:
        info = ensure_slurm()
    except SlurmUnavailable as e:
        pytest.skip(f"real Slurm unavailable: {e.reason}")
    assert info["partition"] == "debug"
    assert info["max_array_size"] == DEFAULT_MAX_ARRAY_SIZE
    return info


def _executor(folder: Path) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    ex.update_parameters(slurm_partition="debug", cpus_per_task=1, mem_gb=0.5, timeout_min=5)
    return ex


def _result(job, since: float, timeout: float = 60.0):
    """job.result(), once sacct says the job ended (so a broken cluster fails the test instead of
    hanging it, and a requeue in flight is not mistaken for the end)."""
    wait_for_sacct_state(job.job_id, since, timeout=timeout)
    return job.result()


# ---- job functions (pickled by value) ----

def _affine(x, a=3, b=1):
    import os
    return {"value": a * x + b, "task": os.environ.get("SLURM_ARRAY_TASK_ID"),
            "job": os.environ.get("SLURM_JOB_ID")}


def _boom(tag):
    raise ValueError(f"deliberate failure {tag}")


class _Counter(submitit.helpers.Checkpointable):
    """Counts steps, writing progress to a file; on USR2 submitit pickles it (with the count so far)
    and requeues, the next run resumes from that count."""

    def __init__(self):
        self.next_step = 0
        self.resumed_from = []

    def __call__(self, progress_file, n_steps, step_s):
        self.resumed_from.append(self.next_step)
        while self.next_step < n_steps:
            time.sleep(step_s)
            self.next_step += 1
            Path(progress_file).write_text(str(self.next_step))
        return {"steps": self.next_step, "resumed_from": list(self.resumed_from)}


# ---- tests ----

def test_single_job_returns_its_value(slurm, tmp_path):
    t0 = time.time() - 2
    job = _executor(tmp_path / "jobs").submit(_affine, 5, b=2)
    out = _result(job, t0)
    assert out["value"] == 17
    assert out["job"] == job.job_id
    assert wait_for_sacct_state(job.job_id, t0) == "COMPLETED"


def test_batch_array_of_four(slurm, tmp_path):
    t0 = time.time() - 2
    ex = _executor(tmp_path / "jobs")
    with ex.batch():
        jobs = [ex.submit(_affine, i) for i in range(4)]
    array_ids = {j.job_id.split("_")[0] for j in jobs}
    assert len(array_ids) == 1, [j.job_id for j in jobs]          # one sbatch --array
    results = [_result(j, t0) for j in jobs]
    assert [r["value"] for r in results] == [1, 4, 7, 10]
    assert sorted(r["task"] for r in results) == ["0", "1", "2", "3"]
    rows = [r for r in sacct_jobs(t0) if r["array_job_id"] in array_ids]
    assert sorted(r["array_task"] for r in rows) == [0, 1, 2, 3]
    assert {r["state"] for r in rows} == {"COMPLETED"}


def test_failing_job_raises_and_is_failed_in_sacct(slurm, tmp_path):
    t0 = time.time() - 2
    job = _executor(tmp_path / "jobs").submit(_boom, "xyz-42")
    with pytest.raises(FailedJobError) as err:
        _result(job, t0)
    assert "deliberate failure xyz-42" in str(err.value)
    assert wait_for_sacct_state(job.job_id, t0) == "FAILED"
    row = next(r for r in sacct_jobs(t0) if r["job_id"] == job.job_id)
    assert row["exit_code"] != "0:0"


def test_checkpointable_is_requeued_on_usr2_and_resumes(slurm, tmp_path):
    t0 = time.time() - 2
    progress = tmp_path / "progress.txt"
    n_steps = 10
    job = _executor(tmp_path / "jobs").submit(_Counter(), str(progress), n_steps, 0.5)
    deadline = time.monotonic() + 60
    while not (progress.exists() and progress.read_text().strip() and int(progress.read_text()) >= 2):
        assert time.monotonic() < deadline, f"job {job.job_id} made no progress: {sacct_jobs(t0)}"
        state = sacct_state(job.job_id, t0)
        assert state not in TERMINAL_STATES, f"job {job.job_id} ended early: {state}"
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True, timeout=30)
    # requeue: cred_expire (5 s) + scheduling; about 17 s in all on these machines
    try:
        wait_for_sacct_state(job.job_id, t0, timeout=120, states={"COMPLETED"})
    except TimeoutError as e:
        raise AssertionError(f"{e}; sacct -D: {sacct_jobs(t0, duplicates=True)}") from None
    out = job.result()
    assert out["steps"] == n_steps
    assert len(out["resumed_from"]) == 2, out                     # ran twice
    assert out["resumed_from"][0] == 0 and 2 <= out["resumed_from"][1] < n_steps, out
    states = [r["state"] for r in sacct_jobs(t0, duplicates=True) if r["job_id"] == job.job_id]
    assert "REQUEUED" in states and states[-1] == "COMPLETED", states


def test_max_array_size_is_enforced_then_restored(slurm, tmp_path):
    wait_for_empty_queue(60)       # the limit change restarts slurmctld
    sbatch = ["sbatch", "--parsable", "-p", "debug", "-c", "1", "--mem=100M", "-o", "/dev/null",
              f"--chdir={tmp_path}"]
    try:
        info = ensure_slurm(2)
        assert info["max_array_size"] == 2
        refused = subprocess.run(sbatch + ["--array=0-4", "--wrap", "true"],
                                 capture_output=True, text=True, timeout=30)
        assert refused.returncode != 0, f"array 0-4 accepted with MaxArraySize=2: {refused.stdout}"
        assert "array" in refused.stderr.lower(), refused.stderr
        held = subprocess.run(sbatch + ["--hold", "--array=0-1", "--wrap", "true"],
                              capture_output=True, text=True, timeout=30)
        assert held.returncode == 0, held.stderr                  # within the limit: accepted
        subprocess.run(["scancel", held.stdout.strip().split(";")[0]], check=True, timeout=30)
    finally:
        info = ensure_slurm()
    assert info["max_array_size"] == DEFAULT_MAX_ARRAY_SIZE
    wait_for_empty_queue(30)
