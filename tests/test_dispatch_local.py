"""Dispatch through submitit's local and debug executors: every cell DONE, idempotent resubmission,
failures retried within the limit, dry runs that write nothing."""
import json
import time
from pathlib import Path


from fixtures_data import deep_bad_units, tiny_copy

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "tiny.yaml"


def states(study_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in study_dir.glob("*/state.json")}


def wait_all(study_dir: Path, n: int, timeout: float = 480, attempts: int = 1) -> dict[str, dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = states(study_dir)
        if len(s) == n and all(v["state"] in ("DONE", "FAILED") and (v["state"] == "DONE" or v["attempts"] >= attempts)
                               for v in s.values()):
            return s
        time.sleep(1)
    raise AssertionError(f"not finished: { {k: v['state'] for k, v in states(study_dir).items()} }")


def test_local_executor_idempotent(tmp_path, cli):
    def edit(d):
        # a corpus whose row 261 is malformed: it passes the preflight (200 rows) and fails in training
        d["grid"]["variants"] = {"broken": {"data.corpora": [
            {"path": "tiny-data/units-bad.jsonl", "format": "units", "alignments": "tiny-data/align"},
            {"path": "tiny-data/text.jsonl", "format": "text"}]}}
        d["grid"]["flops"] = [5.0e9]
        d["grid"]["textless_twin"] = False
        d["executor"]["max_retries"] = 1
        d["executor"]["slurm"]["array_parallelism"] = 1     # the local executor trains one cell at a time
    study = tiny_copy(tmp_path, edit)
    deep_bad_units(tmp_path / "tiny-data")
    dry = cli("submit", str(study), "--dry-run")
    assert dry.returncode == 0 and "would submit 6 of 6 cells" in dry.stdout, dry.stderr
    assert not (tmp_path / "runs").exists()                                    # a dry run writes nothing

    res = cli("submit", str(study))
    assert res.returncode == 0, res.stderr
    assert "submitted 6 of 6 cells" in res.stdout
    study_dir = tmp_path / "runs" / "tiny"
    final = wait_all(study_dir, 6)
    broken = {k for k, v in final.items() if v["state"] == "FAILED"}
    assert len(broken) == 3 and all("units-bad.jsonl" in final[k]["error"] for k in broken), final
    done = {k for k, v in final.items() if v["state"] == "DONE"}
    assert len(done) == 3
    spans = []
    for k in done:
        result = json.loads((study_dir / k / "result.json").read_text())
        assert result["tokens"] == result["tokens_budget"]
        times = [json.loads(l)["time"] for l in (study_dir / k / "metrics.jsonl").read_text().splitlines()]
        spans.append((min(times), max(times)))
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans     # never two cells training at once
    # MLflow (the embedded SQLite store in the study dir) holds one run per finished cell
    from mlflow import MlflowClient
    client = MlflowClient(f"sqlite:///{study_dir}/mlflow.db")
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    assert {r.info.run_name for r in runs if r.info.status == "FINISHED"} == done

    status = cli("status", str(study))
    assert status.returncode == 0 and "DONE 3" in status.stdout and "FAILED 3" in status.stdout

    again = cli("submit", str(study))                                            # retries only the failures
    assert "submitted 3 of 6 cells" in again.stdout, again.stdout
    assert sum("submit (retry 1/1)" in l for l in again.stdout.splitlines()) == 3
    final = wait_all(study_dir, 6, attempts=2)
    assert all(final[k]["failures"] == 2 for k in broken)
    assert all(final[k]["attempts"] == 1 for k in done)                          # the finished cells ran once
    third = cli("submit", str(study))                                            # retry limit reached
    assert "submitted 0 of 6 cells" in third.stdout
    assert sum("retry limit 1" in l for l in third.stdout.splitlines()) == 3


def test_debug_executor_in_process(tmp_path):
    from sweeps.dispatch import submit
    from sweeps.study import load_study

    def edit(d):
        d["families"]["ladder"]["members"] = {"d16": d["families"]["ladder"]["members"]["d16"]}
        d["grid"] = {"tokens": [3000]}
        d["tracking"] = {"enabled": False}
    study = load_study(tiny_copy(tmp_path, edit))
    report = submit(study, kind="debug")
    assert len(report.submitted) == 1
    (key,) = report.submitted
    assert json.loads((tmp_path / "runs" / "tiny" / key / "state.json").read_text())["state"] == "DONE"
    assert submit(study, kind="debug").submitted == []


def test_debug_executor_never_debugs_and_submit_fails(tmp_path, cli):
    """A cell that fails while the debug executor runs it in-process: no (Pdb) prompt (submitit's debug
    job opens one on result()), and `submit` exits 1 naming the cell."""
    import subprocess
    import sys

    def edit(d):
        d["families"]["ladder"]["members"] = {"d16": d["families"]["ladder"]["members"]["d16"]}
        d["grid"] = {"tokens": [3000]}
        d["tracking"] = {"enabled": False}
    study = tiny_copy(tmp_path, edit)
    deep_bad_units(tmp_path / "tiny-data", "units.jsonl")   # a bad row past what the preflight reads
    res = subprocess.run([sys.executable, str(ROOT / "launch.py"), "submit", str(study), "--executor", "debug"],
                         capture_output=True, text=True, timeout=300, input="c\nc\nc\n")
    assert "(Pdb)" not in res.stdout + res.stderr
    assert res.returncode == 1, res.stdout + res.stderr
    (key,) = [l.split(":")[0] for l in res.stdout.splitlines() if ": submit (" in l]
    assert f"1 of 1 cells run in this process did not finish: {key} (FAILED)" in res.stderr, res.stderr


def test_code_snapshot_is_reused_and_isolated(tmp_path):
    from sweeps.lifecycle import snapshot_code

    a = snapshot_code(tmp_path)
    b = snapshot_code(tmp_path)
    assert a == b and (a / "scaling" / "train.py").read_bytes() == (ROOT / "scaling" / "train.py").read_bytes()
    assert (a / "launch.py").exists() and (a / "sweeps" / "cell_job.py").exists()


def test_cancel_then_resume(tmp_path, cli):
    def edit(d):
        d["families"]["ladder"]["members"] = {"d16": d["families"]["ladder"]["members"]["d16"]}
        d["grid"] = {"tokens": [600000]}
        d["training"]["log_every"] = 1
        d["tracking"] = {"enabled": False}
    study = tiny_copy(tmp_path, edit)
    assert cli("submit", str(study)).returncode == 0
    study_dir = tmp_path / "runs" / "tiny"
    deadline = time.time() + 240
    while time.time() < deadline:
        lines = [l for p in study_dir.glob("*/metrics.jsonl") for l in p.read_text().splitlines() if l.strip()]
        if lines and json.loads(lines[-1])["step"] >= 20:
            break
        time.sleep(0.2)
    res = cli("cancel", str(study))
    assert res.returncode == 0 and "cancelled 1 cell(s)" in res.stdout, res.stdout + res.stderr
    deadline = time.time() + 120
    while time.time() < deadline:                      # the cell checkpoints on SIGTERM and stops
        (s,) = states(study_dir).values()
        if s.get("interrupted") and "INTERRUPTED" in cli("status", str(study)).stdout:
            break
        time.sleep(1)
    else:
        raise AssertionError(f"not interrupted: {states(study_dir)}")
    again = cli("submit", str(study))
    assert "submit (resume)" in again.stdout, again.stdout
    (final,) = wait_all(study_dir, 1, attempts=2).values()
    assert final["state"] == "DONE" and final["attempts"] == 2
    (key,) = states(study_dir)
    assert json.loads((study_dir / key / "result.json").read_text())["tokens"] == 600000
