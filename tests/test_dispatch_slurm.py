"""Dispatch to a real single-node Slurm (scripts/slurm/start.sh) with an MLflow server that jobs reach
over HTTP: a whole study DONE in chunked arrays, idempotent resubmission checked through sacct,
preemption with `scancel --signal=USR2`, a failing cell retried alone."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from fixtures_data import deep_bad_units, tiny_copy as study_copy
from mlflow_server import MlflowServer
from slurm_cluster import SlurmUnavailable, ensure_slurm, sacct_jobs, squeue_ids, wait_for_empty_queue

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "tiny.yaml"


@pytest.fixture(scope="module")
def slurm():
    try:
        info = ensure_slurm()
    except SlurmUnavailable as e:
        pytest.skip(f"no Slurm test cluster here: {e.reason}")
    yield info
    ensure_slurm()  # leave the default MaxArraySize behind


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with MlflowServer(tmp_path_factory.mktemp("mlflow")) as srv:
        yield srv


def launch(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"})


def states(study_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in study_dir.glob("*/state.json")}


def _study_jobs(study_dir: Path) -> list[str]:
    """Ids of the queued or running jobs of the study whose runs folder is `study_dir` (jobs are named
    slm-<study name>)."""
    out = subprocess.run(["squeue", "-h", "-r", "-n", f"slm-{study_dir.name}", "-o", "%i"], capture_output=True,
                         text=True, check=True, timeout=30).stdout
    return out.split()


def wait_terminal(study_dir: Path, n: int, timeout: float = 600, min_attempts: int = 1) -> dict[str, dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = states(study_dir)
        if len(s) == n and all(v["state"] == "DONE" or (v["state"] == "FAILED" and v["attempts"] >= min_attempts)
                               for v in s.values()):
            # the run dir is marked first, then the job ends its MLflow run and exits: wait for the exit
            while _study_jobs(study_dir) and time.time() < deadline:
                time.sleep(0.5)
            return s
        time.sleep(1)
    raise AssertionError(f"cells not finished: { {k: (v['state'], v.get('attempts')) for k, v in states(study_dir).items()} }"
                         f" queue {squeue_ids()}")


def test_study_done_in_chunked_arrays_and_resubmit_is_noop(tmp_path, slurm, server):
    ensure_slurm(max_array_size=5)             # 12 cells -> arrays of at most 5 tasks
    study = study_copy(tmp_path)
    t0 = time.time() - 1
    res = launch("submit", str(study), "--executor", "slurm", "--tracking-uri", server.uri)
    assert res.returncode == 0, res.stderr
    assert "submitted 12 of 12 cells in 3 array(s)" in res.stdout, res.stdout
    study_dir = tmp_path / "runs" / "tiny"
    final = wait_terminal(study_dir, 12)
    assert all(v["state"] == "DONE" for v in final.values()), final
    jobs = sacct_jobs(t0)
    assert len(jobs) == 12 and len({j["array_job_id"] for j in jobs}) == 3
    assert max(j["array_task"] for j in jobs) == 4
    for key in final:
        result = json.loads((study_dir / key / "result.json").read_text())
        assert result["tokens"] == result["tokens_budget"] and result["mlflow_run_id"]
    client = MlflowClient(server.uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(final) and all(r.info.status == "FINISHED" for r in runs)

    wait_for_empty_queue(120)
    t1 = time.time() + 1
    time.sleep(2)
    again = launch("submit", str(study), "--executor", "slurm", "--tracking-uri", server.uri)
    assert again.returncode == 0 and "submitted 0 of 12 cells" in again.stdout, again.stdout
    time.sleep(2)
    assert sacct_jobs(t1) == []                                                 # nothing new reached Slurm
    assert squeue_ids() == []
    status = launch("status", str(study))
    assert "DONE 12" in status.stdout
    ensure_slurm()


def _one_cell(tmp_path: Path, name: str) -> Path:
    def edit(d):
        d["families"]["ladder"]["members"] = {"d16": d["families"]["ladder"]["members"]["d16"]}
        d["grid"] = {"tokens": [400000]}
        d["training"]["log_every"] = 1
        d["training"]["checkpoint_every_tokens"] = 10 ** 9   # only the preemption checkpoints
        d["name"] = name
    return study_copy(tmp_path, edit)


def _wait_step(study_dir: Path, step: int, timeout: float = 300) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for p in study_dir.glob("*/metrics.jsonl"):
            lines = [l for l in p.read_text().splitlines() if l.strip()]
            if lines and json.loads(lines[-1]).get("step", 0) >= step:
                return p.parent.name
        time.sleep(0.1)
    raise AssertionError(f"no cell reached step {step}; queue {squeue_ids()}")


def test_preempted_cell_requeues_and_matches(tmp_path, slurm, server):
    ref = _one_cell(tmp_path / "ref", "ref")
    pre = _one_cell(tmp_path / "pre", "pre")
    assert launch("submit", str(ref), "--executor", "slurm", "--tracking-uri", server.uri).returncode == 0
    res = launch("submit", str(pre), "--executor", "slurm", "--tracking-uri", server.uri)
    assert res.returncode == 0, res.stderr
    pre_dir = tmp_path / "pre" / "runs" / "pre"
    key = _wait_step(pre_dir, 60)
    job_id = json.loads((pre_dir / key / "state.json").read_text())["job_id"]
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    final = wait_terminal(pre_dir, 1, min_attempts=2)[key]
    ref_dir = tmp_path / "ref" / "runs" / "ref"
    (ref_key,) = wait_terminal(ref_dir, 1)
    assert final["state"] == "DONE" and final["attempts"] == 2, final
    log = "".join(p.read_text() for p in (pre_dir / "jobs").glob("*/*_log.out"))
    assert "resumed from step_" in log and "exiting for requeue" in log
    a = json.loads((pre_dir / key / "result.json").read_text())
    b = json.loads((ref_dir / ref_key / "result.json").read_text())
    assert a["loss"] == b["loss"] and a["val_loss"] == b["val_loss"]       # bitwise, CPU, 1 thread each
    client = MlflowClient(server.uri)
    runs = client.search_runs([client.get_experiment_by_name("pre").experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == a["mlflow_run_id"] and runs[0].info.status == "FINISHED"


def test_failed_cell_retried_alone(tmp_path, slurm):
    def edit(d):
        d["families"]["ladder"]["members"] = {"d16": d["families"]["ladder"]["members"]["d16"]}
        d["grid"] = {"tokens": [3000], "variants": {"broken": {"data.corpora": [   # fails past the preflight
            {"path": "tiny-data/units-bad.jsonl", "format": "units", "alignments": "tiny-data/align"},
            {"path": "tiny-data/text.jsonl", "format": "text"}]}}}
        d["tracking"] = {"enabled": False}
        d["name"] = "fails"
    study = study_copy(tmp_path, edit)
    deep_bad_units(tmp_path / "tiny-data")
    assert launch("submit", str(study), "--executor", "slurm").returncode == 0
    study_dir = tmp_path / "runs" / "fails"
    final = wait_terminal(study_dir, 2)
    (bad,) = [k for k, v in final.items() if v["state"] == "FAILED"]
    assert "units-bad.jsonl" in final[bad]["error"]
    wait_for_empty_queue(120)
    t1 = time.time() + 1
    time.sleep(2)
    again = launch("submit", str(study), "--executor", "slurm")
    assert "submitted 1 of 2 cells" in again.stdout and f"{bad}: submit (retry 1/2)" in again.stdout
    final = wait_terminal(study_dir, 2, min_attempts=2)
    assert final[bad]["failures"] == 2
    deadline = time.time() + 60                       # accounting records a finished job a little later
    while len(sacct_jobs(t1)) < 1 and time.time() < deadline:
        time.sleep(1)
    assert len(sacct_jobs(t1)) == 1                                            # only the failed cell ran again
    wait_for_empty_queue(60)


def test_two_task_sharded_cell_preempted_resumes_and_matches(tmp_path, slurm):
    """One cell as a 2-task Slurm job (one process per task, the process group from Slurm's variables
    through submitit), sharded with FSDP2 over gloo, preempted mid-run, requeued, resumed on 2 tasks:
    its losses match a single-process run of the same global batch within 1e-4 (fp32, CPU)."""
    import yaml

    from fixtures_data import make_corpus, tiny_study

    corpus = make_corpus(tmp_path / "corpus")

    def study(name: str, **training) -> Path:
        d = tmp_path / name
        d.mkdir()
        data = tiny_study(d, corpus, "llama", tokens=16000, **training)
        data["name"] = name
        data["eval"]["val_tokens"] = 1000
        data["executor"] = {"kind": "slurm", "gpu_type": "cpu", "peak_tflops": 0.2, "gpus_per_node": 2,
                            "slurm": {"cpus_per_task": 1, "mem_gb": 2, "time_min": 20}}
        path = d / "study.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    ref = study("ref", sharding="none", checkpoint_every_tokens=10 ** 9)   # (a keyed setting: same in both)
    res = launch("train", str(ref), "--cell", "tiny")                    # one process, unsharded
    assert res.returncode == 0, res.stderr[-2000:]
    pre = study("pre", sharding="fsdp", checkpoint_every_tokens=10 ** 9)
    res = launch("submit", str(pre), "--executor", "slurm")
    assert res.returncode == 0, res.stderr
    pre_dir = tmp_path / "pre" / "runs" / "pre"
    key = _wait_step(pre_dir, 15)
    job_id = json.loads((pre_dir / key / "state.json").read_text())["job_id"]
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    final = wait_terminal(pre_dir, 1, min_attempts=2)[key]
    assert final["state"] == "DONE" and final["attempts"] == 2, final
    log = "".join(p.read_text() for p in (pre_dir / "jobs").glob("*/*_log.out"))
    assert "resumed from step_" in log and "exiting for requeue" in log and "2 proc" in log
    a = json.loads((pre_dir / key / "result.json").read_text())
    assert a["world_size"] == 2 and a["sharded"] is True
    ref_dir = tmp_path / "ref" / "runs" / "ref"
    b = json.loads((ref_dir / key / "result.json").read_text())            # same key: sharding is not hashed
    la = {m["step"]: m["loss"] for m in map(json.loads, (pre_dir / key / "metrics.jsonl").read_text().splitlines()) if "loss" in m}
    lb = {m["step"]: m["loss"] for m in map(json.loads, (ref_dir / key / "metrics.jsonl").read_text().splitlines()) if "loss" in m}
    assert sorted(la) == sorted(lb)
    assert max(abs(la[s] - lb[s]) for s in la) < 1e-4
    assert all(abs(a["val_loss"][s] - b["val_loss"][s]) < 1e-4 for s in b["val_loss"])


def test_concurrent_submits_and_tune_give_each_cell_one_job(tmp_path, slurm):
    """Two `submit`s and a `tune` of one study at the same moment: they take the study's submit lock in
    turn, so sacct holds exactly one job per grid cell (and one per tuning trial)."""
    def edit(d):
        d["grid"]["flops"] = [5.0e9]
        d["tracking"] = {"enabled": False}
        d["name"] = "race"
    study = study_copy(tmp_path, edit)
    t0 = time.time() - 1
    env = {**os.environ, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    cmds = [["submit", str(study), "--executor", "slurm"], ["submit", str(study), "--executor", "slurm"],
            ["tune", str(study), "--member", "d32", "--trials", "2", "--tokens", "4096", "--executor", "slurm"]]
    procs = [subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *c], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for c in cmds]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    submitted = sorted(int(o[0].split("submitted ")[1].split()[0]) for o in outs[:2])
    assert submitted == [0, 6], outs                      # the second saw every cell live: submitted nothing
    study_dir = tmp_path / "runs" / "race"
    final = wait_terminal(study_dir, 6)
    assert all(v["state"] == "DONE" and len(v["job_ids"]) == 1 for v in final.values()), final
    jobs = [j for j in sacct_jobs(t0) if j["name"] == "slm-race"]   # not a late record of another test's job
    assert len(jobs) == 6 + 2, jobs                       # 6 grid cells + 2 trials, nothing twice
    wait_for_empty_queue(120)
