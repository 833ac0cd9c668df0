"""A study as the MLflow UI shows it, checked through a real `mlflow server`'s REST API with plain HTTP:
the tiny study (one IsoFLOP budget, 6 cells) trained with `launch.py submit --executor debug` and
reported with `launch.py report` against the server; then `launch.py ui` on a study's SQLite store."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from fixtures_data import tiny_copy
from mlflow_server import MlflowServer, free_port

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
STUDY = "dash"
CELL_TAGS = ("family", "member", "init", "setup", "tokens_budget", "flops", "params", "state", "study", "key",
             "executor", "job_id")


def api(base: str, path: str, body: dict | None = None, **query) -> dict:
    """GET (or POST `body` as JSON) `<base>/api/2.0/mlflow/<path>` and return the JSON answer."""
    url = f"{base}/api/2.0/mlflow/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def search(base: str, exp_id: str, flt: str = "") -> list[dict]:
    return api(base, "runs/search", {"experiment_ids": [exp_id], "filter": flt, "max_results": 1000}).get("runs", [])


def tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def history(base: str, run_id: str, key: str) -> dict[int, float]:
    out = api(base, "metrics/get-history", run_id=run_id, metric_key=key, max_results=25000)
    return {int(m["step"]): m["value"] for m in out.get("metrics", [])}


def one_budget(data: dict) -> None:
    data["name"] = STUDY
    data["grid"]["flops"] = [5.0e9]   # 3 members x (interleaved + textless twin): 6 fast cells


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with MlflowServer(tmp_path_factory.mktemp("mlflow")) as srv:
        yield srv


@pytest.fixture(scope="module")
def study(tmp_path_factory, server):
    """The 6-cell study trained and reported against the server; its run dirs and experiment."""
    tmp = tmp_path_factory.mktemp("dash")

    def edit(data):
        one_budget(data)
        data["tracking"] = {"enabled": True, "uri": server.uri}

    path = tiny_copy(tmp, edit)
    t0 = time.monotonic()
    res = run_cli("submit", str(path), "--executor", "debug")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    t1 = time.monotonic()
    res = run_cli("report", str(path))
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    print(f"submit {t1 - t0:.0f} s, report {time.monotonic() - t1:.0f} s")
    study_dir = tmp / "runs" / STUDY
    specs = {p.parent.name: json.loads(p.read_text()) for p in study_dir.glob("*/spec.json")}
    assert len(specs) == 6
    exp = api(server.uri, "experiments/get-by-name", experiment_name=STUDY)["experiment"]
    return {"path": path, "dir": study_dir, "specs": specs, "exp": exp, "tmp": tmp}


def test_one_experiment_per_study_with_a_description(server, study):
    exp = study["exp"]
    exp_tags = {t["key"]: t["value"] for t in exp.get("tags", [])}
    note = exp_tags["mlflow.note.content"]
    assert f"study `{STUDY}`" in note and "6 cells" in note and "setup interleaved, textless" in note
    assert "compute 5e+09 FLOPs" in note and str(study["dir"].resolve()) in note
    (report,) = search(server.uri, exp["experiment_id"], "tags.kind = 'report'")
    assert f"(#/experiments/{exp['experiment_id']}/runs/{report['info']['run_id']})" in note   # links the report
    assert exp_tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(exp_tags["mlflow.sharedViewState.slm-scaling"])
    assert "tags.`setup`" in view["selectedColumns"] and "metrics.`loss`" in view["selectedColumns"]
    names = [e["name"] for e in api(server.uri, "experiments/search", {"max_results": 100})["experiments"]]
    assert names.count(STUDY) == 1


def test_one_run_per_cell_named_by_key_with_filter_tags(server, study):
    runs = search(server.uri, study["exp"]["experiment_id"], "tags.kind = 'cell'")
    assert sorted(r["info"]["run_name"] for r in runs) == sorted(study["specs"])
    for run in runs:
        key = run["info"]["run_name"]
        spec, t = study["specs"][key], tags(run)
        state = json.loads((study["dir"] / key / "state.json").read_text())
        assert set(CELL_TAGS) <= set(t), key
        assert {k: t[k] for k in ("key", "study", "family", "member", "init", "setup")} == \
            {k: str(spec[k]) for k in ("key", "study", "family", "member", "init", "setup")}
        assert t["tokens_budget"] == str(spec["tokens"]) and t["params"] == str(spec["params"]["total"])
        assert t["flops"] == "5e+09" and t["state"] == "DONE" and run["info"]["status"] == "FINISHED"
        assert t["executor"] == "debug" and t["job_id"] == state["job_id"]
        assert t["mlflow.note.content"].startswith(f"**{key}**") and "**Result**" in t["mlflow.note.content"]


def test_filter_strings_select_cells(server, study):
    exp_id = study["exp"]["experiment_id"]
    textless = sorted(k for k, s in study["specs"].items() if s["setup"] == "textless")
    assert len(textless) == 3
    assert sorted(r["info"]["run_name"] for r in search(server.uri, exp_id, "tags.setup = 'textless'")) == textless
    d16 = search(server.uri, exp_id, "tags.setup = 'interleaved' and tags.member = 'd16' and tags.state = 'DONE'")
    assert [study["specs"][r["info"]["run_name"]]["member"] for r in d16] == ["d16"]
    assert search(server.uri, exp_id, "tags.state = 'FAILED'") == []


def test_metric_histories_are_stepped_by_tokens(server, study):
    runs = search(server.uri, study["exp"]["experiment_id"], "tags.kind = 'cell'")
    for run in runs:
        key, run_id = run["info"]["run_name"], run["info"]["run_id"]
        lines = [json.loads(l) for l in (study["dir"] / key / "metrics.jsonl").read_text().splitlines()]
        metric_keys = {m["key"] for m in run["data"]["metrics"]}
        assert {"loss", "lr", "tokens_per_second", "val_loss/speech", "eval/swuggy", "final/loss"} <= metric_keys
        assert not [k for k in metric_keys if k.startswith(("val_loss.", "val_loss_", "eval."))]  # one spelling
        for metric in ("loss", "lr", "tokens_per_second", "val_loss/speech", "eval/swuggy"):
            want = {l["tokens"]: l[metric] for l in lines if metric in l}
            assert want and history(server.uri, run_id, metric) == pytest.approx(want), (key, metric)
        assert max(history(server.uri, run_id, "loss")) == study["specs"][key]["tokens"]


def test_the_report_run_holds_the_figures(server, study):
    (report,) = search(server.uri, study["exp"]["experiment_id"], "tags.kind = 'report'")
    assert report["info"]["run_name"] == "report" and report["info"]["status"] == "FINISHED"
    assert tags(report)["mlflow.note.content"].startswith(f"# Scaling report: {STUDY}")
    files = api(server.uri, "artifacts/list", run_id=report["info"]["run_id"]).get("files", [])
    names = {f["path"] for f in files}
    pngs = sorted(n for n in names if n.endswith(".png"))
    assert {"report.md", "report.html", "fits.json"} <= names and pngs
    assert pngs == sorted(p.name for p in (study["dir"] / "report").glob("*.png"))
    url = f"{server.uri}/get-artifact?" + urllib.parse.urlencode({"path": pngs[0], "run_uuid": report["info"]["run_id"]})
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.read(8) == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------ launch.py ui


def test_ui_print_command_binds_localhost(tmp_path):
    path = tiny_copy(tmp_path, one_budget)
    res = run_cli("ui", str(path), "--print-command", "--port", "5123")
    assert res.returncode == 0, res.stderr
    line = res.stdout.strip()
    db = (tmp_path / "runs" / STUDY / "mlflow.db").resolve()
    assert "-m mlflow ui" in line and f"--backend-store-uri sqlite:///{db}" in line
    assert "--host 127.0.0.1" in line and "--port 5123" in line and len(res.stdout.splitlines()) == 1


def test_ui_on_a_server_study_prints_its_experiment_url(server, study):
    res = run_cli("ui", str(study["path"]), "--no-browser")
    assert res.returncode == 0, res.stderr
    exp_id = study["exp"]["experiment_id"]
    assert (f"{server.uri}/#/experiments/{exp_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey=slm-scaling") in res.stdout


def test_ui_serves_the_study_store(tmp_path, study):
    """The trained run dirs copied to a study without a server, synced to its SQLite store, and shown by
    `launch.py ui` on a free port: the page and the API answer, SIGTERM stops it."""
    path = tiny_copy(tmp_path, one_budget)
    copy = tmp_path / "runs" / STUDY
    for key in study["specs"]:
        (copy / key).mkdir(parents=True)
        for name in ("spec.json", "state.json", "metrics.jsonl", "result.json"):
            (copy / key / name).write_bytes((study["dir"] / key / name).read_bytes())
    res = run_cli("sync", str(path))
    assert res.returncode == 0 and "synced 6 run(s)" in res.stdout, res.stderr[-2000:]

    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "ui", str(path), "--no-browser", "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()  # printed once the UI answers /health
        base = f"http://127.0.0.1:{port}"
        assert first.startswith(f"MLflow UI of study {STUDY}: {base}/#/experiments/"), first
        with urllib.request.urlopen(f"{base}/", timeout=30) as r:
            assert r.status == 200 and b"<html" in r.read(2000).lower()
        exp = api(base, "experiments/get-by-name", experiment_name=STUDY)["experiment"]
        assert f"/#/experiments/{exp['experiment_id']}/runs?" in first
        runs = search(base, exp["experiment_id"], "tags.kind = 'cell' and tags.state = 'DONE'")
        assert sorted(r["info"]["run_name"] for r in runs) == sorted(study["specs"])
        note = {t["key"]: t["value"] for t in exp["tags"]}["mlflow.note.content"]
        assert "6 cells" in note and str(copy.resolve()) in note
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)


# ------------------------------------------------------------------------------------------------ descriptions


def _fake_cell(run_dir: Path, key: str, setup: str = "interleaved") -> dict:
    spec = {"key": key, "study": "s", "family": "fam", "member": "m1", "setup": setup, "init": "random",
            "variant": None, "tokens": 1000, "flops": 6.0e9, "flops_convention": "6ND",
            "params": {"total": 1_000_000, "nonembedding": 900_000}}
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text(json.dumps(spec))
    return spec


def test_the_study_description_follows_the_grid(tmp_path):
    """The dashboard is written by the study-level commands, not by cells: a cell's mirror leaves the
    one-line default; `write_dashboard` (submit, sync, report) summarises the run dirs as they are now and
    keeps a description somebody wrote by hand."""
    from mlflow import MlflowClient

    from scaling.tracking import Mirror, default_uri, spec_tags
    from sweeps.dashboard import write_dashboard
    from sweeps.study import load_study

    path = tiny_copy(tmp_path)
    study = load_study(path)
    study_dir = study.study_dir
    uri = default_uri(study_dir)
    study_dir.mkdir(parents=True)
    client = MlflowClient(uri)

    def note() -> str:
        return client.get_experiment_by_name("tiny").tags["mlflow.note.content"]

    spec = _fake_cell(study_dir / "tune" / "fam-m1" / "0", "trial-0")
    m = Mirror(study_dir / "tune" / "fam-m1" / "0", uri, "tiny", spec["key"], spec_tags(spec), spec,
               experiment_description="slm-scaling study tiny")
    assert m.start() and m.finish("FINISHED")
    assert note() == "slm-scaling study tiny"                 # a cell writes no study description
    _fake_cell(study_dir / "cell-b", "cell-b", "textless")
    _fake_cell(study_dir / "cell-a", "cell-a")
    write_dashboard(study, uri)
    assert note().split("\n")[0] == ("**slm-scaling study `tiny`**: 2 cells; family `fam` (m1); setup interleaved, "
                                     "textless; init random; compute 6e+09 FLOPs (6ND); 1k tokens.")
    _fake_cell(study_dir / "cell-c", "cell-c")
    write_dashboard(study, uri)
    assert note().startswith("**slm-scaling study `tiny`**: 3 cells;")
    exp_id = client.get_experiment_by_name("tiny").experiment_id
    client.set_experiment_tag(exp_id, "mlflow.note.content", "my own notes")
    write_dashboard(study, uri)
    assert note() == "my own notes"
