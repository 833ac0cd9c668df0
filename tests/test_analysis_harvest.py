"""Harvesting run directories into DataFrames, and the import boundary of analysis/."""

import json
import subprocess
import sys

import numpy as np
import pytest

from analysis.errors import InputError
from analysis.fitcsv import fit_points_csv
from analysis.harvest import fit_points, harvest_curves, harvest_results


def law(N, D):
    return 1.8 + 400 / N**0.34 + 2000 / D**0.37


def make_run(root, study, key, N, D, state="DONE", setup="interleaved", broken_metrics=False):
    d = root / study / key
    d.mkdir(parents=True)
    (d / "spec.json").write_text(json.dumps({"family": "qwen2.5", "member": key, "setup": setup, "init": "twist"}))
    (d / "state.json").write_text(json.dumps({"state": state, "attempts": 1, "job_ids": ["1_0"]}))
    lines = [json.dumps({"step": s, "tokens": D * s / 10, "flops": 6 * N * D * s / 10,
                         "loss": law(N, D * s / 10), "lr": 1e-4}) for s in range(1, 11)]
    if broken_metrics:
        lines.append('{"step": 11, "tok')
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if state == "DONE":
        (d / "result.json").write_text(json.dumps({
            "key": key, "study": study, "family": "qwen2.5", "member": key, "init": "twist", "setup": setup,
            "variant": None, "params": {"total": N * 1.2, "embedding": N * 0.2, "nonembedding": N,
                                        "output_head": N * 0.1, "new_rows": 502},
            "tokens": D, "flops": 6 * N * D, "loss": law(N, D) + 0.01,
            "val_loss": {"text": 3.0, "interleaved": 2.5, "speech": law(N, D)},
            "eval": {"swuggy": 0.7, "sblimp": 0.55, "ssc": 0.6, "tsc": 0.8},
            "wall_seconds": 100.0, "tokens_per_second": D / 100, "mlflow_run_id": "abc"}))
    return d


@pytest.fixture
def study(tmp_path):
    for i, N in enumerate(np.geomspace(1e8, 1e10, 5)):
        for j, r in enumerate((5, 20, 80)):
            make_run(tmp_path, "s1", f"n{i}-d{j}", N, N * r, broken_metrics=(i == 0 and j == 0))
    make_run(tmp_path, "s1", "pending", 1e9, 1e10, state="RUNNING")
    return tmp_path


def test_results_frame(study):
    frame = harvest_results(study, "s1")
    assert len(frame) == 16
    assert (frame["state"] == "DONE").sum() == 15
    row = frame[frame["key"] == "n0-d0"].iloc[0]
    assert row["params_nonembedding"] == pytest.approx(1e8)
    assert row["eval_ssc"] == pytest.approx(0.6)
    assert row["setup"] == "interleaved"
    pending = frame[frame["key"] == "pending"].iloc[0]
    assert pending["state"] == "RUNNING" and np.isnan(pending["loss"])


def test_curves_skip_half_written_lines(study):
    curves = harvest_curves(study, "s1")
    assert curves.attrs["skipped_lines"] == 1
    assert len(curves) == 16 * 10
    assert {"key", "step", "tokens", "flops", "loss", "lr"} <= set(curves.columns)


def test_harvest_to_fit_round_trip(study, tmp_path):
    pts = fit_points(harvest_results(study), params_col="params_nonembedding", loss_col="val_loss_speech")
    assert len(pts) == 15
    p = tmp_path / "points.csv"
    pts.to_csv(p, index=False)
    out = fit_points_csv(p, n_bootstrap=0)
    fit = out["groups"]["interleaved"]
    assert fit["alpha"] == pytest.approx(0.34, rel=1e-5)
    assert fit["beta"] == pytest.approx(0.37, rel=1e-5)


def test_unreadable_json_names_the_file(study):
    bad = study / "s1" / "n1-d1" / "result.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="n1-d1/result.json"):
        harvest_results(study, "s1")
    with pytest.raises(InputError, match="no such study"):
        harvest_results(study, "nope")


def test_analysis_never_imports_torch_or_training_code():
    code = (
        "import sys, importlib, pkgutil, analysis\n"
        "for m in pkgutil.iter_modules(analysis.__path__):\n"
        "    importlib.import_module('analysis.' + m.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'scaling', 'sweeps')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_report_writes_figures_and_tables(study, tmp_path):
    from analysis.report import write_report

    frame = harvest_results(study, "s1")
    path = write_report(frame, harvest_curves(study, "s1"), tmp_path / "out", params_col="params_nonembedding",
                        group_cols=("setup",), n_bootstrap=10, extrapolation=False)
    text = path.read_text()
    assert "| interleaved |" in text and "chinchilla (published)" in text
    for name in ("isoflop.png", "metrics.png", "allocation.png", "fits.json", "report.html"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    fits = json.loads((tmp_path / "out" / "fits.json").read_text())
    assert fits["groups"]["interleaved"]["approach3"]["alpha"] == pytest.approx(0.34, rel=1e-4)


def test_harvest_keeps_every_result_field(study):
    frame = harvest_results(study, "s1")
    for col in ("tokens_budget", "cost_flops", "steps", "flops_convention", "params_new_row_params",
                "params_vocab_rows"):
        assert col in frame.columns


def test_pair_counts_come_from_the_manifest_or_eval_n(tmp_path):
    manifest = tmp_path / "swuggy.jsonl"
    manifest.write_text("".join(json.dumps({"id": i, "positive": "a", "negative": "b"}) + "\n" for i in range(37)) + "\n")
    a = make_run(tmp_path / "runs", "s", "a", 1e8, 2e9)
    b = make_run(tmp_path / "runs", "s", "b", 2e8, 2e9)
    for d in (a, b):
        spec = json.loads((d / "spec.json").read_text())
        spec["eval"] = {"benchmarks": [{"name": "swuggy", "manifest": str(manifest)},
                                       {"name": "ssc", "manifest": str(tmp_path / "gone.jsonl")}]}
        (d / "spec.json").write_text(json.dumps(spec))
    res = json.loads((b / "result.json").read_text())
    res["eval_n"] = {"swuggy": 500}
    (b / "result.json").write_text(json.dumps(res))
    frame = harvest_results(tmp_path / "runs", "s").set_index("key")
    assert frame.loc["a", "n_pairs_swuggy"] == 37  # one pair per non-blank line
    assert frame.loc["b", "n_pairs_swuggy"] == 500  # recorded with the score: wins
    assert np.isnan(frame.loc["a", "n_pairs_ssc"])  # manifest gone: unknown, no interval
