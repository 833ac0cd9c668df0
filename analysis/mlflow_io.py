"""MLflow as a second source and a sink: harvest a study's experiment, log a report run.

The training cell mirrors each run directory to MLflow (``scaling.tracking``): one experiment
per study, run name = cell key, tags key/study/family/member/setup/init/variant, params = the
flattened spec, and every numeric leaf of result.json as a ``final/<dotted key>`` metric.
``harvest_mlflow`` turns that back into the frame ``harvest_results`` gives from run
directories; ``log_report`` stores a written report as a run named ``report``.
mlflow is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np

from analysis.errors import InputError
from common.mlflow_contract import (CELL_KIND, FINAL_PREFIX, KIND_TAG, MAX_TAG_LENGTH, NOTE_TAG, REPORT_RUN_NAME,
                                    RUN_DIR_TAG, STATUS_TO_STATE, ensure_experiment, redact_uri)
from analysis.harvest import SPEC_KEYS, apply_labels, apply_result, empty_row, tidy_frame

REPORT_TAG = (KIND_TAG, "report")
MAX_NOTE = MAX_TAG_LENGTH


def _client(uri: str):

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    from mlflow import MlflowClient  # heavy: mlflow kept off import (see module docstring)

    return MlflowClient(tracking_uri=uri)


def result_from_metrics(metrics: dict) -> dict:
    """Rebuild a result.json-shaped dict from ``final/<dotted key>`` metrics.

    ``final/params.total`` -> {"params": {"total": v}}; ``final/flops`` -> {"flops": v}; the first
    dot splits the section from the name, so benchmark names may hold dots themselves.
    """
    result: dict = {}
    for name, value in metrics.items():
        if not name.startswith(FINAL_PREFIX):
            continue
        key = name[len(FINAL_PREFIX):]
        section, dot, rest = key.partition(".")
        if dot:
            result.setdefault(section, {})
            if isinstance(result[section], dict):
                result[section][rest] = value
        else:
            result[key] = value
    return result


def _param_value(text: str):
    """A flattened-spec param back to a value: JSON where it parses ("null" -> None), else the string."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _search_all(client, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def harvest_mlflow(uri: str, experiment: str):
    """DataFrame with one row per cell run of ``experiment``: the columns of ``harvest_results``.

    Labels come from the run tags (falling back to the spec params), numbers from the
    ``final/...`` metrics, the state from the run status (FINISHED -> DONE, FAILED/KILLED ->
    FAILED, RUNNING -> RUNNING). ``run_dir`` is the run's ``slm.run_dir`` tag, ``mlflow_run_id``
    the run id, ``attempts`` is NaN (MLflow does not know it). Runs of another kind than cell (the
    report run, tuning runs) are skipped. Raises InputError when the experiment does not exist.
    """
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise InputError(f"{redact_uri(uri)}: no MLflow experiment named {experiment!r}")
    rows = []
    for run in _search_all(client, exp.experiment_id):
        tags = run.data.tags
        if tags.get(REPORT_TAG[0], CELL_KIND) != CELL_KIND:  # the report run, tuning runs
            continue
        params = {k: _param_value(v) for k, v in run.data.params.items()}
        state = STATUS_TO_STATE.get(run.info.status, "PENDING")
        row = {"run_dir": tags.get(RUN_DIR_TAG),
               **empty_row(tags.get("study") or params.get("study") or experiment,
                           tags.get("key") or run.info.run_name, state)}
        apply_labels(row, params)
        apply_labels(row, {k: tags[k] for k in SPEC_KEYS if k in tags})  # tags win over params
        apply_result(row, result_from_metrics(run.data.metrics))
        row["attempts"] = np.nan
        row["mlflow_run_id"] = run.info.run_id
        rows.append(row)
    return tidy_frame(rows)


# ----------------------------------------------------------------------------- report run


def _slug(label: str) -> str:
    """A group label as an MLflow key part: 'qwen2.5 / interleaved' -> 'qwen2.5_interleaved'."""
    return re.sub(r"[^\w.\-]+", "_", label).strip("_") or "all"


def _num(x):
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) else None


def report_metrics(fits: dict) -> dict:
    """Key numbers of a fits.json as flat MLflow metrics ``<group>/<what>`` (refused fits are absent)."""
    out = {"n_runs": fits.get("n_runs"), "n_done": fits.get("n_done"), "n_refusals": len(fits.get("refusals", []))}
    for label, g in fits.get("groups", {}).items():
        s = _slug(label)
        a3 = g.get("approach3", {})
        for k in ("E", "A", "B", "alpha", "beta", "a", "b"):
            out[f"{s}/approach3.{k}"] = a3.get(k)
        for k in ("a", "alpha", "beta"):
            iv = a3.get("intervals", {}).get(k, {})
            out[f"{s}/approach3.{k}_p2.5"] = iv.get("p2.5")
            out[f"{s}/approach3.{k}_p97.5"] = iv.get("p97.5")
        alloc = g.get("allocation")
        if isinstance(alloc, list):
            top = [r for r in alloc if not r.get("extrapolated")]
            if top:
                out[f"{s}/tokens_per_param_at_largest_budget"] = top[-1].get("tokens_per_param")
                out[f"{s}/n_opt_at_largest_budget"] = top[-1].get("n_opt")
        a2 = g.get("approach2", {})
        out[f"{s}/approach2.a"] = a2.get("a")
        out[f"{s}/approach2.a_p2.5"] = (a2.get("intervals") or {}).get("a", {}).get("p2.5")
        out[f"{s}/approach2.a_p97.5"] = (a2.get("intervals") or {}).get("a", {}).get("p97.5")
        out[f"{s}/loss_compute.gamma"] = g.get("loss_compute", {}).get("gamma")
        for m, law in g.get("metric_laws", {}).items():
            if law.get("law"):  # a trend the data carry; "no trend" leaves no number to chart
                out[f"{s}/metric.{m}.gamma"] = law.get("gamma")
                out[f"{s}/metric.{m}.gamma_p2.5"] = law.get("gamma_lo")
                out[f"{s}/metric.{m}.gamma_p97.5"] = law.get("gamma_hi")
        ex = g.get("extrapolation", {})
        out[f"{s}/extrapolation.approach3.mean_rel_error"] = ex.get("approach3", {}).get("mean_rel_error")
        out[f"{s}/extrapolation.approach3.max_rel_error"] = ex.get("approach3", {}).get("max_rel_error")
        out[f"{s}/extrapolation.loss_compute.rel_error"] = ex.get("loss_compute", {}).get("rel_error")
    return {k: _num(v) for k, v in out.items() if _num(v) is not None}


def _report_note(out: Path, fits: dict) -> str:
    """The report run's description: report.md up to its figures section (the figures are artifacts),
    cut to MLflow's tag limit."""
    md = out / "report.md"
    text = md.read_text(errors="replace") if md.is_file() else f"# {fits.get('title', 'Scaling report')}\n"
    text = text.split("\n## Figures", 1)[0].rstrip()
    text += "\n\nFigures, report.md, report.html and fits.json are this run's artifacts."
    if len(text) > MAX_NOTE:
        tail = "\n\n... (cut; the whole report is the artifact report.md)"
        text = text[:MAX_NOTE - len(tail)] + tail
    return text


def log_report(uri: str, experiment: str, out_dir, fits: dict) -> str:
    """Log a written report as a new MLflow run named ``report`` (tag kind=report); return its id.

    Every file directly in ``out_dir`` (PNGs, report.md, report.html, fits.json) becomes an
    artifact; key numbers of ``fits`` (``report_metrics``) are metrics and the report settings
    (params_col, loss_col, group_cols, groups, title) params. Each call creates a new run, so
    earlier reports stay browsable; the newest is the latest run tagged kind=report. The
    experiment is created if missing (for sqlite:/// stores with artifacts beside the database).
    The run's description is report.md's text (the study's dashboard, which links the newest report,
    is sweeps.dashboard's).
    """
    from mlflow.entities import Metric, Param  # heavy: mlflow kept off import (see module docstring)

    out = Path(out_dir)
    files = sorted(p for p in out.iterdir() if p.is_file())
    if not files:
        raise InputError(f"{out}: no report files to log")
    client = _client(uri)
    exp_id = ensure_experiment(client, experiment, f"slm-scaling study {experiment}", uri)
    run = client.create_run(exp_id, run_name=REPORT_RUN_NAME,
                            tags={REPORT_TAG[0]: REPORT_TAG[1], "study": str(experiment),
                                  "n_runs": str(fits.get("n_runs", "?")), NOTE_TAG: _report_note(out, fits)})
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in report_metrics(fits).items()]
        params = {"params_col": fits.get("params_col"), "loss_col": fits.get("loss_col"),
                  "group_cols": ",".join(fits.get("group_cols", [])), "groups": "; ".join(fits.get("groups", {})),
                  "title": fits.get("title"), "out_dir": str(out.resolve())}
        client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items() if v is not None])
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i:i + 1000])
        for path in files:
            client.log_artifact(run_id, str(path))
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id
