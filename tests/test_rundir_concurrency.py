"""The run dir under many writers at once, with real processes: locked state moves lose nothing and never
move DONE back, one trainer per cell (a second `train` exits with the lease code, touching nothing, and
the survivor's result equals a single run's), the study's submit lock, the code snapshot race."""
import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.rundir import LEASE_BUSY_EXIT, LeaseBusy, RunDir, TransitionError
from fixtures_data import tiny_copy

ROOT = Path(__file__).resolve().parents[1]
CTX = mp.get_context("spawn")   # fresh interpreters: nothing shared but the files


def _add_jobs(path: str, worker: int, n: int, start) -> None:
    start.wait()
    rd = RunDir(path)
    for i in range(n):
        rd.add_job(f"{worker}-{i}", executor="local", submitted=True)
        rd.add_job("shared")                  # the same id from every worker: recorded once


def test_state_read_modify_writes_lose_nothing(tmp_path):
    rd = RunDir(tmp_path / "cell").create({"key": "cell"})
    start = CTX.Event()
    procs = [CTX.Process(target=_add_jobs, args=(str(rd.path), w, 40, start)) for w in range(6)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    state = rd.state()
    ids = state["job_ids"]
    assert len(ids) == len(set(ids)) == 6 * 40 + 1
    assert state["submitted"] == 6 * 40                   # every increment counted: no lost update


def _finish_at(path: str, delay: float, start) -> None:
    start.wait()
    time.sleep(delay)
    RunDir(path).update("DONE", allowed_from={"RUNNING"})


def _cancel_loop(path: str, seconds: float, start) -> None:
    start.wait()
    rd = RunDir(path)
    end = time.time() + seconds
    while time.time() < end:
        try:  # what `cancel` does to a cell it saw RUNNING: mark it, never move it
            rd.update(allowed_from={"PENDING", "RUNNING"}, cancelled=True)
        except TransitionError:
            pass
        try:  # and an old-style "cancelled means PENDING", refused once the cell is DONE
            if rd.state()["state"] == "DONE":
                rd.update("PENDING")
        except TransitionError:
            pass


def test_a_cell_that_finishes_while_cancelled_stays_done(tmp_path):
    rng = random.Random(0)
    for trial in range(8):
        rd = RunDir(tmp_path / f"cell{trial}").create({"key": "c"})
        rd.update("RUNNING")
        start = CTX.Event()
        procs = [CTX.Process(target=_finish_at, args=(str(rd.path), rng.uniform(0.05, 0.4), start)),
                 CTX.Process(target=_cancel_loop, args=(str(rd.path), 0.6, start))]
        for p in procs:
            p.start()
        start.set()
        for p in procs:
            p.join(60)
        assert procs[0].exitcode == 0 and rd.state()["state"] == "DONE"
    rd = RunDir(tmp_path / "done").create({"key": "d"})
    rd.update("RUNNING")
    rd.update("DONE")
    for bad in ("PENDING", "RUNNING", "FAILED"):
        with pytest.raises(TransitionError):
            rd.update(bad)
    assert rd.update("PENDING", reset=True)["state"] == "PENDING"      # only an explicit reset


def test_cancel_of_a_finished_cell_keeps_it_done(tmp_path):
    """`cancel` saw the cell RUNNING with a live job; it finished before cancel marked it."""
    from sweeps.status import cancel
    from sweeps.study import load_study

    study = load_study(tiny_copy(tmp_path))
    from sweeps.grid import expand
    from sweeps.rundirs import ensure_run_dir

    cell = expand(study)[0]
    rd = RunDir(ensure_run_dir(study, cell))
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        rd.update("RUNNING")
        rd.add_job(str(job.pid), executor="local")
        start = CTX.Event()
        finisher = CTX.Process(target=_finish_at, args=(str(rd.path), 0.0, start))
        finisher.start()
        start.set()
        cancel(study, [cell.key])
        finisher.join(60)
        assert rd.state()["state"] == "DONE"
        assert cancel(study, [cell.key]) == []               # a DONE cell is not cancelled again
    finally:
        job.kill()


def _hold_lease(path: str, ready, release) -> None:
    lease = RunDir(path).lease(job_id="123")
    ready.set()
    release.wait(60)
    lease.release()


def test_lease_is_exclusive_and_freed_when_its_holder_dies(tmp_path):
    rd = RunDir(tmp_path / "cell").create({"key": "cell"})
    ready, release = CTX.Event(), CTX.Event()
    holder = CTX.Process(target=_hold_lease, args=(str(rd.path), ready, release))
    holder.start()
    assert ready.wait(60)
    with pytest.raises(LeaseBusy) as e:
        rd.lease()
    assert e.value.holder["pid"] == holder.pid and e.value.holder["job_id"] == "123"
    assert rd.leased()
    os.kill(holder.pid, 9)                                # SIGKILL: no clean-up at all
    holder.join(30)
    with rd.lease() as lease:                              # taken over at once
        assert lease.held
    assert not rd.leased()


def _launch(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def _one_cell_study(tmp_path: Path, name: str) -> Path:
    def edit(d):
        d["name"] = name
        d["families"]["ladder"]["members"] = {"d32": {}}
        d["grid"] = {"tokens": [300000]}
        d["training"]["checkpoint_every_tokens"] = 60000
        d["tracking"] = {"enabled": False}
    return tiny_copy(tmp_path, edit)


def _comparable(rd: RunDir) -> tuple[dict, list[dict]]:
    result = rd.result()
    for k in ("wall_seconds", "tokens_per_second", "key"):
        result.pop(k)
    lines = [{k: v for k, v in m.items() if k not in ("time", "tokens_per_second")} for m in rd.metrics()]
    return result, lines


def test_two_trainers_of_one_cell_one_trains_one_exits(tmp_path):
    study = _one_cell_study(tmp_path / "a", "two")
    key = json.loads(subprocess.run([sys.executable, str(ROOT / "launch.py"), "plan", str(study), "--json"],
                                    capture_output=True, text=True, check=True).stdout)[0]["key"]
    procs = [_launch("train", str(study), "--cell", key) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, LEASE_BUSY_EXIT], outs
    busy = outs[[p.returncode for p in procs].index(LEASE_BUSY_EXIT)]
    assert busy[1].strip().count("\n") == 0 and "another process trains this cell" in busy[1], busy
    rd = RunDir(tmp_path / "a" / "runs" / "two" / key)
    state = rd.state()
    assert state["state"] == "DONE" and state["attempts"] == 1 and state["failures"] == 0
    assert "error" not in state

    ref_study = _one_cell_study(tmp_path / "b", "two")
    ref = _launch("train", str(ref_study), "--cell", key)
    ref.communicate(timeout=600)
    assert ref.returncode == 0
    a, b = _comparable(rd), _comparable(RunDir(tmp_path / "b" / "runs" / "two" / key))
    assert a == b                                          # bitwise: same losses, same curve, no extra rows
    steps = [m["step"] for m in rd.metrics() if "loss" in m]
    assert len(steps) == len(set(steps))


def test_submit_lock_no_wait_names_the_holder(tmp_path, cli):
    from common.locks import FileLock, holder_info
    from sweeps.lifecycle import SUBMIT_LOCK

    study = tiny_copy(tmp_path)
    study_dir = tmp_path / "runs" / "tiny"
    study_dir.mkdir(parents=True)
    with FileLock(study_dir / SUBMIT_LOCK, holder_info(job_id="")):
        res = cli("submit", str(study), "--no-wait", "--executor", "debug")
    assert res.returncode == 2 and f"pid {os.getpid()}" in res.stderr, res.stderr
    assert not any(p.name != SUBMIT_LOCK for p in study_dir.iterdir())   # nothing submitted, nothing written


def _snapshot(study_dir: str, start, out) -> None:
    from sweeps.lifecycle import snapshot_code

    start.wait()
    out.put(str(snapshot_code(Path(study_dir))))


def test_code_snapshot_race_writes_one_folder(tmp_path):
    start, out = CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=_snapshot, args=(str(tmp_path), start, out)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    paths = {out.get(timeout=120) for _ in procs}
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(paths) == 1
    assert [p.name for p in (tmp_path / "code").iterdir()] == [Path(paths.pop()).name]   # no leftovers
