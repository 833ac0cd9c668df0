"""analysis.mlflow_io.harvest_mlflow against the run-dir harvest, analysis.commands.recommend, and
the one-line refusal for a study with too few finished runs (report_study's report itself is
tested in test_report.py)."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from test_report_fixture import INTERLEAVED, MEMBERS, build_study, write_cell

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from analysis.commands import format_recommendation, recommend, report_study  # noqa: E402
from analysis.errors import InputError  # noqa: E402
from analysis.harvest import harvest_results  # noqa: E402


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The synthetic study (noise-free) and a SQLite tracking URI beside it."""
    root = tmp_path_factory.mktemp("runs")
    cwd = os.getcwd()
    os.chdir(root)  # anything MLflow puts in the working directory lands in tmp
    try:
        yield {"dir": build_study(root), "uri": f"sqlite:///{root / 'mlflow.db'}"}
    finally:
        os.chdir(cwd)


def _mirror(client, exp_id, run_dir):
    """Log one run directory the way the training cell's mirror does (scaling.tracking's helpers)."""
    from mlflow.entities import Metric, Param

    from scaling.tracking import RUN_DIR_TAG, final_metrics, flatten, spec_tags

    spec = json.loads((run_dir / "spec.json").read_text())
    state = json.loads((run_dir / "state.json").read_text())["state"]
    run = client.create_run(exp_id, run_name=spec["key"], tags={RUN_DIR_TAG: str(run_dir), **spec_tags(spec)})
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flatten(spec).items()])
    if (run_dir / "result.json").exists():
        finals, step = final_metrics(json.loads((run_dir / "result.json").read_text()))
        now = int(time.time() * 1000)
        client.log_batch(run.info.run_id, metrics=[Metric(k, v, now, step) for k, v in finals.items()])
    if state in ("DONE", "FAILED"):
        client.set_terminated(run.info.run_id, "FINISHED" if state == "DONE" else "FAILED")


def test_harvest_mlflow_gives_the_run_dir_frame(study, tmp_path):
    from mlflow import MlflowClient

    from analysis.mlflow_io import harvest_mlflow, log_report

    client = MlflowClient(tracking_uri=study["uri"])
    exp_id = client.create_experiment("mirrored", artifact_location=(study["dir"].parent / "art").as_uri())
    for run_dir in sorted(p for p in study["dir"].iterdir() if (p / "spec.json").exists()):
        _mirror(client, exp_id, run_dir)
    from_dirs = harvest_results(study["dir"].parent, study["dir"].name).set_index("key").sort_index()
    from_mlflow = harvest_mlflow(study["uri"], "mirrored").set_index("key").sort_index()
    assert set(from_mlflow.columns) == set(from_dirs.columns)
    assert list(from_mlflow.index) == list(from_dirs.index)
    for col in from_dirs.columns:
        if col in ("attempts", "mlflow_run_id"):
            continue
        a, b = from_dirs[col].to_numpy(), from_mlflow[col].to_numpy()
        if from_dirs[col].dtype.kind in "fi":
            np.testing.assert_allclose(b.astype(float), a.astype(float), rtol=1e-12, equal_nan=True, err_msg=col)
        else:
            assert [None if x != x else x for x in b] == [None if x != x else x for x in a], col
    # a report run in the same experiment is not a cell
    (tmp_path / "note.md").write_text("report")
    log_report(study["uri"], "mirrored", tmp_path, {"title": "t"})
    assert len(harvest_mlflow(study["uri"], "mirrored")) == len(from_dirs)


def test_harvest_mlflow_reads_what_sync_writes(study):
    """The real mirror (scaling.tracking.sync) on one run directory, read back."""
    from scaling.tracking import sync

    from analysis.mlflow_io import harvest_mlflow

    run_dir = next(p for p in sorted(study["dir"].iterdir()) if p.name.startswith("qwen2.5-textless"))
    sync(run_dir, uri=study["uri"], experiment="synced")
    row = harvest_mlflow(study["uri"], "synced").iloc[0]
    want = harvest_results(study["dir"].parent, study["dir"].name).set_index("key").loc[run_dir.name]
    assert row["key"] == run_dir.name and row["state"] == "DONE" and row["setup"] == "textless"
    for col in ("params_total", "tokens", "flops", "val_loss_speech", "eval_ssc", "eval_tsc"):
        assert row[col] == pytest.approx(want[col], rel=1e-12)
    assert np.isnan(row["val_loss_text"])


def test_recommend_finds_the_true_optimum_and_the_nearest_member(study):
    budget = 3e19
    rec = recommend(study["dir"], budget, MEMBERS, group={"setup": "interleaved"}, n_bootstrap=20)
    assert set(rec["groups"]) == {"qwen2.5 / interleaved", "llama3.2 / interleaved"}
    assert "error" in rec["groups"]["llama3.2 / interleaved"]
    g = rec["groups"]["qwen2.5 / interleaved"]
    truth = INTERLEAVED.allocation(budget)
    assert g["n_opt"] == pytest.approx(float(truth.n_opt), rel=0.01)
    assert g["d_opt"] == pytest.approx(float(truth.d_opt), rel=0.01)
    assert g["loss"] == pytest.approx(float(truth.loss_opt), rel=1e-4)
    assert g["intervals"]["n_opt"]["p2.5"] <= g["n_opt"] * (1 + 1e-6) <= g["intervals"]["n_opt"]["p97.5"] * (1 + 2e-6)
    # the group's own members only (issue 16: a group's law says nothing about another family's models)
    assert list(g["members"]) == ["qwen2.5"]
    mine = [m for m in MEMBERS if m["family"] == "qwen2.5"]
    nearest = min(mine, key=lambda m: abs(np.log(m["params_total"] / truth.n_opt)))
    pick = g["members"]["qwen2.5"]
    assert pick["member"] == nearest["member"]
    assert pick["tokens"] == pytest.approx(budget / (6 * nearest["params_total"]))
    assert pick["predicted_loss"] == pytest.approx(float(INTERLEAVED.loss(nearest["params_total"], pick["tokens"])),
                                                   rel=1e-4)
    text = format_recommendation(rec)
    assert g["members"]["qwen2.5"]["member"] in text and "no fit" in text


def test_recommend_matches_each_groups_setup_and_variant(study):
    """Members listed per setup (as `member_sizes` lists them): each group picks from its own setup's counts."""
    members = [{**m, "setup": setup, "variant": None, "params_total": m["params_total"] * scale}
               for m in MEMBERS if m["family"] == "qwen2.5"
               for setup, scale in (("interleaved", 1.0), ("textless", 0.8))]
    rec = recommend(study["dir"], 3e19, members, n_bootstrap=0)
    for label in ("qwen2.5 / interleaved", "qwen2.5 / textless"):
        g = rec["groups"][label]
        own = {m["member"]: m["params_total"] for m in members if m["setup"] == g["group"]["setup"]}
        pick = g["members"]["qwen2.5"]
        assert pick["params"] == own[pick["member"]]


def test_too_few_finished_runs_is_one_line(tmp_path):
    study_dir = tmp_path / "tiny"
    for m in (3, 4, 5, 6):
        write_cell(study_dir, "qwen2.5", "interleaved", "textlm", INTERLEAVED, m, 1e19)
    write_cell(study_dir, "qwen2.5", "interleaved", "textlm", INTERLEAVED, 7, 1e19, state="RUNNING")
    for call in (lambda: report_study(study_dir), lambda: recommend(study_dir, 1e20, MEMBERS)):
        with pytest.raises(InputError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg and "4 of 5 runs are DONE" in msg and "at least 6" in msg
