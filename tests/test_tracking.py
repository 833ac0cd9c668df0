"""scaling.tracking against a real MLflow server (and a plain SQLite store): live mirroring, resume,
a server outage in the middle of a run (logging never waits on it), idempotent sync, and no secrets in
anything logged. tests/test_tracking_postgres.py: the same on PostgreSQL, with a killed server."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage pings from a test machine

from mlflow import MlflowClient  # noqa: E402

from scaling.tracking import (MAX_PARAM_VAL_LENGTH, Mirror, default_uri, flatten,  # noqa: E402
                              read_record, redact_text, redact_uri, spec_tags, sync)

SECRET = "hunter2"
TOKEN = "tok3n-value"
KEYS = ("step", "flops", "loss", "lr", "tokens_per_second")


import mlflow_server  # noqa: E402  (tests/ is on sys.path)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One light MLflow server for the whole module (about 10 s to start)."""
    with mlflow_server.MlflowServer(tmp_path_factory.mktemp("mlflow-server")) as srv:
        yield srv


def with_credentials(uri: str) -> str:
    """The server's URI with a user and password in it (the server ignores them)."""
    return uri.replace("http://", f"http://bob:{SECRET}@")


def make_run_dir(root: Path, key: str, study: str = "study-a") -> tuple[Path, dict]:
    """A run directory with a spec.json whose data URL carries a password and a token."""
    spec = {"key": key, "study": study, "family": "qwen2.5", "member": "0.5B", "setup": "interleaved",
            "init": "textlm", "variant": None, "tokens": 4096,
            "data": {"train": f"https://alice:{SECRET}@data.example.org/shards?token={TOKEN}&split=train",
                     "mirrors": [f"s3://key:{SECRET}@bucket/a", "file:///data/b"]},
            "training": {"lr": 0.001, "batch_tokens": 4096, "note": "x" * 7000}}
    run_dir = root / study / key
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text(json.dumps(spec))
    return run_dir, spec


def record(i: int) -> dict:
    """The i-th metrics.jsonl line of a toy run (tokens = 1024 per step)."""
    line = {"step": i, "tokens": 1024 * i, "flops": 6.0e9 * i, "loss": 5.0 / i, "lr": 1e-3,
            "tokens_per_second": 5000.0}
    if i % 2 == 0:
        line["val_loss/text"] = 4.0 / i
    return line


def append(run_dir: Path, line: dict) -> None:
    """What the training loop does first: the run directory is the source of truth."""
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")


def expected_points(run_dir: Path) -> set[tuple[str, int]]:
    """Every (metric key, step) that metrics.jsonl holds."""
    out = set()
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out |= {(k, rec["tokens"]) for k in rec if k != "tokens"}
    return out


def logged_points(client: MlflowClient, run_id: str, keys) -> list[tuple[str, int]]:
    """Every (key, step) MLflow holds for `keys`, repeats included."""
    return [(k, m.step) for k in keys for m in client.get_metric_history(run_id, k)]


def wait_acked(run_dir: Path, lines: int, timeout_s: float = 30.0) -> None:
    """Wait until mlflow.json says MLflow has acknowledged the first `lines` lines of metrics.jsonl."""
    deadline = time.monotonic() + timeout_s
    while read_record(run_dir).get("acked_lines", 0) < lines:
        assert time.monotonic() < deadline, read_record(run_dir)
        time.sleep(0.05)


def new_mirror(run_dir: Path, spec: dict, uri: str, **kw) -> Mirror:
    return Mirror(run_dir, uri, spec["study"], spec["key"], tags=spec_tags(spec), params=spec,
                  experiment_description="toy study", **kw)


# --------------------------------------------------------------------------------------------------
# Pure functions


def test_redact_uri_removes_credentials_and_token_params():
    assert redact_uri(f"http://bob:{SECRET}@host:5000/x") == "http://host:5000/x"
    assert redact_uri(f"https://u:p@ss@h/p?token={TOKEN}&a=1&access_token=z") == "https://h/p?a=1"
    assert redact_uri("sqlite:////abs/study/mlflow.db") == "sqlite:////abs/study/mlflow.db"
    assert redact_uri("not a uri") == "not a uri"
    # error messages quote URLs in pieces: secret-named query values are masked wherever they appear
    message = f"url: /?token={TOKEN}/api&a=1 and http://u:{SECRET}@h/"
    assert redact_text(message) == "url: /?token=***/api&a=1 and http://h/"


def test_flatten_nests_stringifies_and_truncates():
    flat = flatten({"a": {"b": [1, 2], "c": None, "d": {}}, "long": "y" * 10_000, "f": 0.5})
    assert flat["a.b"] == "[1, 2]" and flat["a.c"] == "null" and flat["a.d"] == "{}"
    assert flat["f"] == "0.5"
    assert len(flat["long"]) == MAX_PARAM_VAL_LENGTH == 6000


# --------------------------------------------------------------------------------------------------
# Against a real server


def test_mirror_logs_params_and_metrics_and_a_resumed_job_continues_the_run(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="scaling.tracking")
    run_dir, spec = make_run_dir(tmp_path, "qwen2.5-0.5B-4K-aaaa0001")
    uri = with_credentials(server.uri)
    first = new_mirror(run_dir, spec, uri)
    assert first.start()
    for i in (1, 2):
        append(run_dir, record(i))
        assert first.log_record(record(i))

    assert first.finish("KILLED")  # preempted
    resumed = new_mirror(run_dir, spec, uri)  # a requeued job: new process, same run dir
    assert resumed.start() and resumed.run_id == first.run_id
    for i in (3, 4):
        append(run_dir, record(i))
        assert resumed.log_record(record(i))
    assert resumed.set_tags({"slurm_job_id": "123"})
    assert resumed.finish("FINISHED", {"tokens": 4096, "loss": 1.25, "val_loss": {"text": 1.0},
                                       "params": {"total": 494032768}, "key": spec["key"]})

    client = MlflowClient(server.uri)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == spec["key"]
    assert run.data.params["training.lr"] == "0.001" and run.data.params["key"] == spec["key"]
    assert run.data.tags["family"] == "qwen2.5" and run.data.tags["slurm_job_id"] == "123"
    assert run.data.metrics["final/val_loss.text"] == 1.0
    assert run.data.metrics["final/params.total"] == 494032768
    assert sorted(m.step for m in client.get_metric_history(first.run_id, "loss")) == [1024, 2048, 3072, 4096]
    assert [m.step for m in client.get_metric_history(first.run_id, "val_loss/text")] == [2048, 4096]

    exp = client.get_experiment_by_name(spec["study"])
    assert exp.tags["mlflow.note.content"] == "toy study"
    runs = client.search_runs([exp.experiment_id], f"attributes.run_name = '{spec['key']}'")
    assert [r.info.run_id for r in runs] == [first.run_id]

    saved = (run_dir / "mlflow.json").read_text()
    assert json.loads(saved)["run_id"] == first.run_id and json.loads(saved)["uri"] == server.uri
    everything = saved + json.dumps(run.data.params) + json.dumps(run.data.tags) + caplog.text
    assert SECRET not in everything and TOKEN not in everything
    assert run.data.params["data.train"] == "https://data.example.org/shards?split=train"


def test_server_stopped_mid_run_then_sync_fills_the_gap(server, tmp_path, caplog):
    run_dir, spec = make_run_dir(tmp_path, "qwen2.5-0.5B-4K-aaaa0002")
    mirror = new_mirror(run_dir, spec, with_credentials(server.uri), backoff_s=1.0, finish_timeout_s=1.0)
    assert mirror.start()
    for i in (1, 2):
        append(run_dir, record(i))
        assert mirror.log_record(record(i))
    wait_acked(run_dir, 2)

    server.stop()
    try:
        stall = 0.0
        for i in range(3, 9):
            append(run_dir, record(i))
            t = time.perf_counter()
            assert mirror.log_record(record(i))  # queued: the training step never waits on the network
            stall = max(stall, time.perf_counter() - t)
            time.sleep(0.3)  # the sender meanwhile fails and backs off
        assert stall < 0.05
        assert mirror.behind and read_record(run_dir)["behind"] is True
        assert mirror.finish("KILLED") is False  # the job ends while the server is away
        assert read_record(run_dir)["acked_lines"] == 2
    finally:
        server.start()

    written = sync(run_dir)  # URI from mlflow.json (credentials stripped; the server needs none)
    wanted = expected_points(run_dir)
    client = MlflowClient(server.uri)
    got = logged_points(client, mirror.run_id, KEYS + ("val_loss/text",))
    assert sorted(got) == sorted(wanted)  # every (key, step) exactly once
    assert written == len([p for p in wanted if p[1] > 2048])  # only what MLflow had not acknowledged
    assert sync(run_dir) == 0
    record_now = read_record(run_dir)
    assert record_now["behind"] is False and record_now["run_id"] == mirror.run_id
    assert record_now["acked_lines"] == 8
    assert client.get_run(mirror.run_id).info.status == "RUNNING"  # no result.json yet
    assert SECRET not in caplog.text


def test_a_mirror_that_never_reached_the_server_catches_up_at_finish(server, tmp_path):
    run_dir, spec = make_run_dir(tmp_path, "qwen2.5-0.5B-4K-aaaa0003")
    dead = new_mirror(run_dir, spec, f"http://127.0.0.1:{mlflow_server.free_port()}", finish_timeout_s=0.5)
    t = time.monotonic()
    assert dead.start() is False
    for i in (1, 2, 3):
        append(run_dir, record(i))
        assert dead.log_record(record(i))  # queued; the sender cannot send it
    assert dead.finish("FAILED") is False
    assert time.monotonic() - t < 15 and dead.run_id is None and read_record(run_dir)["behind"] is True

    requeued = new_mirror(run_dir, spec, server.uri)  # the next attempt reaches the server
    assert requeued.start() and requeued.behind
    append(run_dir, record(4))
    assert requeued.log_record(record(4))
    assert requeued.finish("FINISHED", {"tokens": 4096, "loss": 1.25})

    client = MlflowClient(server.uri)
    got = logged_points(client, requeued.run_id, KEYS + ("val_loss/text",))
    assert sorted(got) == sorted(expected_points(run_dir))
    assert read_record(run_dir)["behind"] is False
    assert sync(run_dir) == 0


# --------------------------------------------------------------------------------------------------
# No server: the laptop path


def test_sqlite_default_uri_without_a_server(tmp_path):
    run_dir, spec = make_run_dir(tmp_path, "qwen2.5-0.5B-4K-aaaa0004")
    uri = default_uri(run_dir.parent)
    assert uri == f"sqlite:///{(tmp_path / 'study-a').resolve()}/mlflow.db"
    mirror = new_mirror(run_dir, spec, uri)
    assert mirror.start()
    for i in (1, 2):
        append(run_dir, record(i))
        assert mirror.log_record(record(i))
    assert mirror.finish("done", {"tokens": 2048, "loss": 2.5})
    client = MlflowClient(uri)
    assert client.get_run(mirror.run_id).info.status == "FINISHED"
    assert sorted(logged_points(client, mirror.run_id, ("loss",))) == [("loss", 1024), ("loss", 2048)]

    # a run directory that never had a mirror: sync creates its run from spec.json
    other, other_spec = make_run_dir(tmp_path, "qwen2.5-0.5B-4K-aaaa0005")
    for i in (1, 2, 3):
        append(other, record(i))
    (other / "result.json").write_text(json.dumps({"tokens": 3072, "loss": 1.5, "val_loss": {"text": 1.4}}))
    written = sync(other)  # default URI: the study's SQLite file
    run_id = read_record(other)["run_id"]
    run = client.get_run(run_id)
    assert run.info.run_name == other_spec["key"] and run.info.status == "FINISHED"
    assert written == len(expected_points(other)) + 3  # + final/tokens, final/loss, final/val_loss.text
    assert sync(other) == 0


def test_user_http_settings_win(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "17")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    dead = Mirror(tmp_path, f"http://127.0.0.1:{mlflow_server.free_port()}", "e", "r", {}, {},
                  finish_timeout_s=0.1)
    assert dead.start() is False and dead.log_metrics({"loss": 1.0}, 1)
    assert dead.finish() is False
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "17"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
