"""The MLflow mirror against a real `mlflow server` (2 workers) on the project's real PostgreSQL
(scripts/postgres/start.sh): concurrent creates and a create whose answer was lost leave a cell one
run; a server SIGKILLed and restarted mid-run loses and duplicates nothing; no credentials anywhere."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow import MlflowClient  # noqa: E402

import mlflow_server  # noqa: E402  (tests/ is on sys.path)
import postgres  # noqa: E402
from common.rundir import RunDir  # noqa: E402
from scaling.tracking import Mirror, ensure_cell_run, read_record, spec_tags, sync  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-pw"
KEYS = ("step", "flops", "loss", "lr", "tokens_per_second")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    try:
        pg = postgres.Postgres().start()
    except postgres.Unavailable as e:
        pytest.skip(f"PostgreSQL cannot run here: {e}")
    try:
        with mlflow_server.MlflowServer(tmp_path_factory.mktemp("mlflow-pg"), backend_store_uri=pg.uri,
                                        workers=2, env=pg.env, start_timeout_s=240) as srv:
            yield srv
    finally:
        pg.stop()


def make_run_dir(root: Path, key: str) -> tuple[Path, dict]:
    spec = {"key": key, "study": "pg-study", "family": "llama", "member": "d32", "setup": "interleaved",
            "init": "random", "tokens": 20480, "data": {"train": f"https://alice:{SECRET}@data.example.org/x"}}
    run_dir = root / "pg-study" / key
    RunDir(run_dir).create(spec)
    return run_dir, spec


def line(i: int) -> dict:
    return {"step": i, "tokens": 1024 * i, "flops": 6.0e9 * i, "loss": 5.0 / i, "lr": 1e-3,
            "tokens_per_second": 5000.0 + i, "time": 1.7e9 + i}


def cell_runs(client: MlflowClient, key: str) -> list:
    exp = client.get_experiment_by_name("pg-study")
    return client.search_runs([exp.experiment_id], f"tags.key = '{key}'") if exp else []


def _ensure(run_dir: str, uri: str, at: float, out) -> None:
    time.sleep(max(at - time.time(), 0))  # every process creates at the same moment
    spec = RunDir(run_dir).spec()
    out.put(ensure_cell_run(uri, "pg-study", Path(run_dir), spec))


def test_concurrent_creates_of_one_cell_leave_one_run(server, tmp_path):
    # six submits / jobs of one cell at the same instant: none finds an mlflow.json yet
    run_dir, _ = make_run_dir(tmp_path, "llama-d32-20K-cafe0001")
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    at = time.time() + 2.0
    procs = [ctx.Process(target=_ensure, args=(str(run_dir), server.uri, at, out)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    ids = {out.get(timeout=5) for _ in procs}
    runs = cell_runs(MlflowClient(server.uri), "llama-d32-20K-cafe0001")
    assert len(runs) == 1 and ids == {runs[0].info.run_id} and read_record(run_dir)["run_id"] in ids
    assert runs[0].info.status == "SCHEDULED"  # made up front, no job has started it


def test_a_create_whose_answer_was_lost_is_found_not_repeated(server, tmp_path):
    run_dir, spec = make_run_dir(tmp_path, "llama-d32-20K-cafe0002")
    first = Mirror(run_dir, server.uri, "pg-study", spec["key"], spec_tags(spec), spec, finish_timeout_s=5)
    assert first.start()
    (run_dir / "mlflow.json").unlink()  # the job died before it could record the run it made
    retry = Mirror(run_dir, server.uri, "pg-study", spec["key"], spec_tags(spec), spec, finish_timeout_s=5)
    assert retry.start() and retry.run_id == first.run_id
    assert retry.finish("FINISHED") and first.finish("FINISHED")
    assert [r.info.run_id for r in cell_runs(MlflowClient(server.uri), spec["key"])] == [first.run_id]


def test_server_killed_and_restarted_mid_run_loses_and_duplicates_nothing(server, tmp_path, caplog):
    run_dir, spec = make_run_dir(tmp_path, "llama-d32-20K-cafe0003")
    uri = server.uri.replace("http://", f"http://bob:{SECRET}@")
    lease = RunDir(run_dir).lease()   # as a training process: it alone appends metrics
    mirror = Mirror(run_dir, uri, "pg-study", spec["key"], spec_tags(spec), spec, backoff_s=1.0)
    assert mirror.start()
    stall = 0.0

    def log(i: int) -> None:
        nonlocal stall
        lease.append_metrics(line(i))
        t = time.perf_counter()
        assert mirror.log_record(line(i))
        stall = max(stall, time.perf_counter() - t)

    for i in range(1, 6):
        log(i)
    deadline = time.monotonic() + 30
    while read_record(run_dir).get("acked_lines", 0) < 5:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    server.kill()  # SIGKILL, workers and all
    for i in range(6, 16):
        log(i)
        time.sleep(0.1)
    server.start()
    for i in range(16, 21):
        log(i)
    assert mirror.finish("FINISHED", {"tokens": 20480, "loss": 0.25})
    assert stall < 0.05

    client = MlflowClient(server.uri)
    got = [(k, m.step) for k in KEYS for m in client.get_metric_history(mirror.run_id, k)]
    assert sorted(got) == sorted((k, 1024 * i) for k in KEYS for i in range(1, 21))  # each exactly once
    assert client.get_run(mirror.run_id).data.metrics["final/loss"] == 0.25
    assert sync(run_dir) == 0
    record = read_record(run_dir)
    assert record["acked_lines"] == 20 and record["behind"] is False
    run = client.get_run(mirror.run_id)
    everything = (run_dir / "mlflow.json").read_text() + json.dumps(run.data.params) + \
        json.dumps(run.data.tags) + caplog.text
    assert SECRET not in everything and run.data.params["data.train"] == "https://data.example.org/x"


def test_tracking_server_refuses_a_bad_store_url_without_echoing_its_password(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), "tracking-server",
                           str(ROOT / "examples" / "tiny.yaml"), "--root", str(tmp_path),
                           "--backend-store-uri", f"ftp://mlflow:{SECRET}@127.0.0.1/x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "--backend-store-uri" in proc.stderr and SECRET not in proc.stderr
