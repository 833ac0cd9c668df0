"""What `report` and `sync` publish for a study: the report (analysis) or the run dirs (scaling.tracking)
into MLflow, each followed by the study's dashboard (sweeps.dashboard), written once per command."""
from __future__ import annotations

from typing import Optional

from analysis.commands import report_study
from common.mlflow_contract import default_uri
from scaling.tracking import sync_all

from .dashboard import write_dashboard
from .membership import select_cells
from .study import Study


def report(study: Study, out_dir=None, mlflow: bool = True, params_col: str = "params_total",
           loss_col: str = "val_loss_speech", n_bootstrap: int = 200, all_cells: bool = False) -> dict:
    """The study's report over this study file's cells (`all_cells`: every run dir), logged to MLflow as a
    report run that the dashboard links; analysis.commands.report_study's result."""
    _, keys, _ = select_cells(study, all_cells)
    uri = None
    if study.tracking.enabled and mlflow:
        uri = study.tracking.uri or default_uri(study.study_dir.resolve())
    out = report_study(study.study_dir, out_dir=out_dir, tracking_uri=uri,
                       experiment=study.tracking.experiment or study.name, params_col=params_col,
                       loss_col=loss_col, n_bootstrap=n_bootstrap, cell_keys=keys)
    if uri and out.get("mlflow_run_id"):
        write_dashboard(study, uri, report_run_id=out["mlflow_run_id"])
    return out


def sync(study: Study, uri: Optional[str] = None) -> dict[str, int]:
    """Replay every run dir of the study into MLflow (only what the store lacks), then the dashboard;
    {cell key: points written}."""
    uri = uri or study.tracking.uri
    written = sync_all(study.study_dir, uri=uri, experiment=study.tracking.experiment)
    if written:
        write_dashboard(study, uri or default_uri(study.study_dir.resolve()))
    return written
