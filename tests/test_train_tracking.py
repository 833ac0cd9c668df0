"""The training cell mirrored to a real `mlflow server` on 127.0.0.1: params, metrics stepped by tokens,
one run across a preemption, and a server outage mid-run repaired by `launch.py sync`."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from fixtures_data import make_corpus, tiny_study
from mlflow_server import MlflowServer

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with MlflowServer(tmp_path_factory.mktemp("mlflow")) as srv:
        yield srv


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def _study(tmp_path: Path, corpus: dict, uri: str, tokens: int, name: str) -> Path:
    data = tiny_study(tmp_path, corpus, "llama", tokens=tokens)
    data["name"] = name
    data["tracking"] = {"enabled": True, "uri": uri}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _popen(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"})


def _wait_for_step(run_root: Path, step: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        for p in run_root.glob("*/metrics.jsonl"):
            lines = [l for l in p.read_text().splitlines() if l.strip()]
            if lines and json.loads(lines[-1])["step"] >= step:
                return
        time.sleep(0.01)
    raise AssertionError("the run did not reach the step in time")


def _history(client, run_id, key):
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def test_cell_mirrors_and_resumes_same_run(tmp_path, corpus, server):
    study = _study(tmp_path, corpus, server.uri, 16000, "tracked")
    proc = _popen("train", str(study), "--cell", "tiny")
    run_root = tmp_path / "runs" / "tracked"
    _wait_for_step(run_root, 12, proc)
    proc.send_signal(signal.SIGUSR2)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 3, out[-2000:]
    proc = _popen("train", str(study), "--cell", "tiny")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-2000:]

    (run_dir,) = [p.parent for p in run_root.glob("*/spec.json")]
    result = json.loads((run_dir / "result.json").read_text())
    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name("tracked")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_name == run_dir.name       # one run across the requeue
    run = runs[0]
    assert run.info.run_id == result["mlflow_run_id"] and run.info.status == "FINISHED"
    assert run.data.params["training.lr"] == "0.003" and run.data.params["tokens"] == "16000"
    assert run.data.tags["family"] == "tiny" and run.data.tags["setup"] == "interleaved"
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    loss = _history(client, run.info.run_id, "loss")
    # every logged line is there, stepped by tokens; the resumed steps were logged again only where
    # the first attempt had logged past its checkpoint
    assert {l["tokens"]: l["loss"] for l in lines if "loss" in l}.items() <= loss.items()
    assert max(loss) == 16000
    assert _history(client, run.info.run_id, "val_loss/speech")[16000] == result["val_loss"]["speech"]


def test_server_down_mid_run_then_sync(tmp_path, corpus, server):
    study = _study(tmp_path, corpus, server.uri, 24000, "outage")
    proc = _popen("train", str(study), "--cell", "tiny")
    run_root = tmp_path / "runs" / "outage"
    _wait_for_step(run_root, 5, proc)
    server.stop()
    try:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-2000:]                              # training went on
    finally:
        server.start()
    (run_dir,) = [p.parent for p in run_root.glob("*/spec.json")]
    assert json.loads((run_dir / "state.json").read_text())["state"] == "DONE"
    res = subprocess.run([sys.executable, str(ROOT / "launch.py"), "sync", str(study)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    client = MlflowClient(server.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("outage").experiment_id])
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for key in ("loss", "lr", "val_loss/text", "eval/swuggy"):
        want = {l["tokens"]: l[key] for l in lines if key in l}
        assert want and _history(client, run.info.run_id, key) == want, key
    assert run.info.status == "FINISHED"
    again = subprocess.run([sys.executable, str(ROOT / "launch.py"), "sync", str(study)], capture_output=True,
                           text=True, timeout=300)
    assert ": 0 metric points written" in again.stdout
