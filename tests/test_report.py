"""The scaling report of a synthetic study with known laws, written by ``report_study`` and logged
to MLflow: figures, markdown, HTML, fits.json, the MLflow report run."""
from __future__ import annotations

import base64
import json
import os
import re

import numpy as np
import pytest
from test_report_fixture import BUDGETS, INTERLEAVED, TEXTLESS, build_study

from analysis.commands import report_study
from analysis.figures import FIGURES
from analysis.harvest import harvest_results
from analysis.report import write_report

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

MAIN = {"qwen2.5 / interleaved": INTERLEAVED, "qwen2.5 / textless": TEXTLESS}
PNGS = [name for name, _ in FIGURES]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """One noise-free report via report_study, logged to a SQLite MLflow store; shared by the tests
    of this module (fitting and rendering take seconds)."""
    root = tmp_path_factory.mktemp("runs")
    study_dir = build_study(root)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cwd = os.getcwd()
    os.chdir(root)  # anything MLflow would put in the working directory lands in tmp
    try:
        result = report_study(study_dir, tracking_uri=uri, n_bootstrap=30)
    finally:
        os.chdir(cwd)
    out = result["out_dir"]
    return {"study_dir": study_dir, "uri": uri, "result": result, "out": out, "md": result["report_md"].read_text(),
            "html": result["report_html"].read_text(), "fits": json.loads(result["fits_json"].read_text())}


def test_report_study_returns_every_path(sample):
    r = sample["result"]
    assert r["out_dir"] == sample["study_dir"] / "report" and r["n_runs"] == 54
    assert [p.name for p in r["figures"]] == PNGS
    assert (r["report_md"].name, r["report_html"].name, r["fits_json"].name) == ("report.md", "report.html",
                                                                                   "fits.json")
    assert sample["fits"]["n_done"] == 54 and sample["fits"]["n_runs"] == 56


def test_mlflow_report_run_holds_every_file(sample):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=sample["uri"])
    run = client.get_run(sample["result"]["mlflow_run_id"])
    assert run.info.run_name == "report" and run.data.tags["kind"] == "report"
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == sample["study_dir"].name
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert set(PNGS) | {"report.md", "report.html", "fits.json"} <= logged
    local = client.download_artifacts(run.info.run_id, "isoflop.png", str(sample["study_dir"].parent))
    assert open(local, "rb").read() == (sample["out"] / "isoflop.png").read_bytes()
    assert run.data.metrics["qwen2.5_interleaved/approach3.a"] == pytest.approx(INTERLEAVED.a, rel=1e-3)
    assert run.data.metrics["qwen2.5_textless/approach3.a"] == pytest.approx(TEXTLESS.a, rel=1e-3)
    assert run.data.params["params_col"] == "params_total"
    assert not (sample["study_dir"].parent / "mlruns").exists()  # artifacts went beside the database


def assert_real_png(path):
    """A PNG file matplotlib can read, of a sensible size, that is not one flat colour."""
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert len(data) > 8_000, (path, len(data))
    img = mpimg.imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 400, (path, img.shape)
    assert float(np.asarray(img[..., :3]).std()) > 0.02, path


def test_every_figure_is_written_and_readable(sample):
    for name in PNGS:
        assert_real_png(sample["out"] / name)


def test_markdown_links_every_figure_with_a_sentence(sample):
    md = sample["md"]
    for name in PNGS:
        link = re.search(rf"!\[[^\]]+\]\({re.escape(name)}\)\n\n\*([^*]+)\*", md)
        assert link, name
        assert len(link.group(1).split()) > 12  # a caption, not a label
    for section in ("Groups side by side", "Pairwise comparisons", "Extrapolation check", "Refused fits"):
        assert f"## {section}" in md or f"### {section}" in md


def test_html_is_self_contained_and_embeds_every_figure(sample):
    html = sample["html"]
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(uris) == len(PNGS)
    embedded = {base64.b64decode(u) for u in uris}
    for name in PNGS:
        assert (sample["out"] / name).read_bytes() in embedded
    assert "<style>" in html and "<table>" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # no external assets
    assert "<script" not in html and "<link" not in html


def test_fits_recover_each_groups_law(sample):
    groups = sample["fits"]["groups"]
    assert set(MAIN) <= set(groups)
    for label, law in MAIN.items():
        g = groups[label]
        a3 = g["approach3"]
        assert a3["alpha"] == pytest.approx(law.alpha, rel=1e-3)
        assert a3["beta"] == pytest.approx(law.beta, rel=1e-3)
        assert a3["a"] == pytest.approx(law.a, rel=1e-3)
        assert a3["intervals"]["a"]["p2.5"] <= a3["a"] + 1e-9 <= a3["intervals"]["a"]["p97.5"] + 2e-9
        table = g["allocation"]
        assert [r["extrapolated"] for r in table] == [False] * len(BUDGETS) + [True, True]
        for row in table[:len(BUDGETS)]:
            assert row["n_opt"] == pytest.approx(float(law.allocation(row["flops"]).n_opt), rel=1e-3)
            assert row["n_opt_p2.5"] <= row["n_opt"] * (1 + 1e-6)
        assert g["approach2"]["a"] == pytest.approx(law.a, abs=0.03)
        assert g["approach2"]["dropped_budgets"] == []
        assert g["loss_compute"]["gamma"] > 0
        assert g["metric_laws"]["ssc"]["gamma"] == pytest.approx(law.ssc[1], abs=0.002)
        assert g["metric_laws"]["tsc"]["gamma"] == pytest.approx(law.tsc[1], abs=0.002)


def test_extrapolation_check_is_accurate_on_noise_free_data(sample):
    for label in MAIN:
        ex = sample["fits"]["groups"][label]["extrapolation"]
        assert ex["held_out_flops"] == pytest.approx(max(BUDGETS), rel=0.01)
        assert ex["n_held_out"] == 5 and ex["n_fit"] == 20
        assert ex["approach3"]["max_rel_error"] < 1e-4
        assert ex["loss_compute"]["rel_error"] < 5e-3
        assert ex["n_opt"]["ratio"] == pytest.approx(1.0, abs=0.05)
    assert "Extrapolation check" in sample["md"] and "held-out" in sample["md"]


def test_groups_are_compared_side_by_side(sample):
    fits = sample["fits"]
    setup = [c for c in fits["comparisons"] if c["differs_in"] == "setup"]
    assert len(setup) == 1 and setup[0]["groups"] == list(MAIN)
    assert setup[0]["a"][0] > setup[0]["a"][1]  # interleaved puts more compute into model size
    assert setup[0]["tokens_per_param"][0] < setup[0]["tokens_per_param"][1]
    md = sample["md"]
    assert "| qwen2.5 / interleaved |" in md and "| cuervo_marxer_speech (published) |" in md
    assert "SIMS Fig. 1 interleaved (published; fitted on about 2e18-7e20 FLOPs; drawn in metrics.png)" in md


def test_refused_fits_are_recorded_listed_and_noted(sample):
    fits = sample["fits"]
    llama = fits["groups"]["llama3.2 / interleaved"]
    assert llama["approach3"] == {"error": llama["approach3"]["error"]}
    assert llama["approach3"]["error"].startswith("TooFewPoints: ")
    assert llama["loss_compute"]["error"].startswith("TooFewPoints: ")
    where = {r["where"] for r in fits["refusals"]}
    assert "groups.llama3.2 / interleaved.approach3" in where
    assert "groups.llama3.2 / interleaved.metric_laws.ssc" in where
    refused_section = sample["md"].split("## Refused fits", 1)[1]
    assert "llama3.2 / interleaved.approach3" in refused_section


def test_report_without_fits_metrics_or_curves_still_draws_everything(tmp_path):
    """Only 4 runs at one budget (every fit refuses), no eval scores, no training curves."""
    root = tmp_path / "runs"
    build_study(root)
    frame = harvest_results(root)
    frame = frame[frame["family"] == "llama3.2"].drop(columns=[c for c in frame.columns if c.startswith("eval_")])
    md = write_report(frame, None, tmp_path / "out", n_bootstrap=0).read_text()
    for name in PNGS:
        assert_real_png(tmp_path / "out" / name)
    fits = json.loads((tmp_path / "out" / "fits.json").read_text())
    assert len(fits["refusals"]) >= 4 and fits["metric_cols"] == []
    assert all(f"]({name})" in md for name in PNGS)


def test_report_of_no_finished_runs_is_all_notes(tmp_path):
    import pandas as pd

    md = write_report(pd.DataFrame(), None, tmp_path, n_bootstrap=0).read_text()
    fits = json.loads((tmp_path / "fits.json").read_text())
    assert fits["groups"] == {} and fits["refusals"][0]["error"].startswith("TooFewPoints: ")
    for name in PNGS:
        assert_real_png(tmp_path / name)
    assert "no finished run" in md
