"""The MLflow contract every package shares (torch-free, and mlflow itself is imported only inside the
functions that talk to a server): tag names and limits, the saved dashboard view, the one map from MLflow
run statuses to cell states, secret redaction, where a study's SQLite store and artifacts live, and
creating a study's experiment. `scaling.tracking` (the per-run mirror), `sweeps.dashboard` (the study's
description and report link) and `analysis.mlflow_io` (harvest and report runs) all read it from here.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

MAX_PARAM_VAL_LENGTH = 6000     # MLflow 3's limit on a param value (mlflow.utils.validation)
MAX_KEY_LENGTH = 250            # MLflow's limit on param, metric and tag names
MAX_TAG_LENGTH = 8000           # MLflow's limit on run tag values
MAX_PARAMS_PER_BATCH = 100      # log_batch limits
MAX_METRICS_PER_BATCH = 1000
FINAL_PREFIX = "final/"         # result.json's numbers as metrics final/<dotted key>
NOTE_TAG = "mlflow.note.content"   # what the MLflow UI shows as a run's or experiment's description
RUN_DIR_TAG = "slm.run_dir"
STATUSES = ("FINISHED", "FAILED", "KILLED")
KIND_TAG = "kind"              # cell | report | tune | tune-trial
CELL_KIND = "cell"
STATE_TAG = "state"            # RUNNING / DONE / FAILED / INTERRUPTED (PENDING before a first start)
PARENT_TAG = "mlflow.parentRunId"   # nests a tune trial under its tune run in the UI
REPORT_RUN_NAME = "report"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"   # the MLflow 3 UI: a classic runs table, no type prompt
EXPERIMENT_KIND = "custom_model_development"
REPORT_LINE = "**Report**:"    # the experiment description's report line
# A saved runs-table view of the MLflow UI (an experiment tag the UI reads when the page URL carries
# `viewStateShareKey=<VIEW_KEY>`): the cell tags and losses as columns, newest runs first.
VIEW_KEY = "slm-scaling"
VIEW_TAG = "mlflow.sharedViewState." + VIEW_KEY
VIEW_COLUMNS = tuple(f"tags.`{t}`" for t in ("state", "family", "member", "init", "setup", "tokens_budget",
                                             "flops")) + ("metrics.`loss`", "metrics.`val_loss/speech`")
DASHBOARD_VIEW = json.dumps({"searchFilter": "", "orderByKey": "attributes.start_time", "orderByAsc": False,
                             "selectedColumns": list(VIEW_COLUMNS), "runsHiddenMode": "SHOW_ALL"})
# The one map from an MLflow run status to a cell state (a KILLED run was interrupted: it resumes)
STATUS_TO_STATE = {"FINISHED": "DONE", "FAILED": "FAILED", "KILLED": "INTERRUPTED", "RUNNING": "RUNNING",
                   "SCHEDULED": "PENDING"}
END_STATE = {k: STATUS_TO_STATE[k] for k in STATUSES}
STUDY_HEADER = "**slm-scaling study "   # how study_description starts
_PLAIN_DESCRIPTION = re.compile(r"slm-scaling study \S*")   # the one-line default (dispatch, train)

# --------------------------------------------------------------------------------------------------
# Secrets


_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>,;]+")
_QUERY_PARAM = re.compile(r"([?&][\w.\-]+)=([^&\s'\"#/]*)")
_SECRET_PARAM = re.compile(
    r"token|secret|passw|pwd|signature|^sig$|credential|api[-_]?key|^key$|access[-_]?key|auth",
    re.IGNORECASE)


def redact_uri(uri: str) -> str:
    """`uri` without `user:password@` and without query parameters that carry secrets (`token`,
    `access_token`, `api_key`, `password`, `sig`, ...). Anything that is not a URI is returned as is."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return re.sub(r"//[^/@\s]*@", "//", uri)
    netloc = parts.netloc.rpartition("@")[2]
    pairs = [p for p in parts.query.split("&") if p]
    kept = [p for p in pairs if not _SECRET_PARAM.search(p.split("=", 1)[0])]
    if netloc == parts.netloc and len(kept) == len(pairs):
        return uri  # untouched: don't let urlunsplit re-spell e.g. sqlite:////abs/path
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(kept), parts.fragment))


def redact_text(text: str) -> str:
    """`text` with every URI in it passed through `redact_uri`, and the value of any other secret-named
    query parameter (`...?token=...` in an error message) replaced by `***`: for params, tags, logs."""
    text = _URI_IN_TEXT.sub(lambda m: redact_uri(m.group(0)), text)
    return _QUERY_PARAM.sub(lambda m: f"{m.group(1)}=***" if _SECRET_PARAM.search(m.group(1).lstrip("?&"))
                            else m.group(0), text)


def default_uri(study_dir: Path) -> str:
    """The laptop default: an SQLite file in the study directory (`sqlite:///<abs study_dir>/mlflow.db`)."""
    return f"sqlite:///{Path(study_dir).resolve()}/mlflow.db"


def clip(s: str, limit: int) -> str:
    return s if len(s) <= limit else s[: limit - 3] + "..."


def error_code(exc: Exception) -> str:
    return str(getattr(exc, "error_code", ""))


def artifact_location(uri: str) -> Optional[str]:
    """Beside a SQLite store, `<its folder>/mlartifacts` (else MLflow would use ./mlruns of whatever
    directory a job runs in); None for servers, which choose their own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return None


def ensure_experiment(client, name: str, description=None, uri: Optional[str] = None) -> str:
    """Id of the experiment called `name`, created (or restored) if needed, tagged as a classic
    (custom model development) experiment with the dashboard view (`VIEW_TAG`) for the MLflow 3 UI,
    with its description set: a string replaces a different description, except the one-line default
    `slm-scaling study NAME`, which is only written where there is none (it never replaces a fuller
    description, such as the study's dashboard that sweeps.dashboard writes)."""
    from mlflow.exceptions import MlflowException  # heavy: mlflow only when talking to a store
    exp = client.get_experiment_by_name(name)
    if exp is None:
        tags = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, VIEW_TAG: DASHBOARD_VIEW}
        if isinstance(description, str) and description:
            tags[NOTE_TAG] = description
        try:
            exp_id = client.create_experiment(name, tags=tags,
                                              artifact_location=artifact_location(uri) if uri else None)
        except MlflowException as e:  # another job created it between our two calls
            if error_code(e) != "RESOURCE_ALREADY_EXISTS":
                raise
        else:
            return exp_id
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise MlflowException(f"experiment {name!r} vanished")
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    current = exp.tags.get(NOTE_TAG)
    plain_now = not current or bool(_PLAIN_DESCRIPTION.fullmatch(current))
    text = None
    if description and (plain_now or not _PLAIN_DESCRIPTION.fullmatch(description)):
        text = description
    if text and current != text:
        set_experiment_tag(client, exp.experiment_id, NOTE_TAG, text)
    for key, value in ((EXPERIMENT_KIND_TAG, EXPERIMENT_KIND), (VIEW_TAG, DASHBOARD_VIEW)):
        if key not in exp.tags:  # a user's own choice stays
            client.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def set_experiment_tag(client, experiment_id: str, key: str, value: str) -> None:
    client.set_experiment_tag(experiment_id, key, clip(redact_text(value), 20000))


