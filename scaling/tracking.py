"""Mirror a run directory to MLflow without ever breaking training.

The run directory (`spec.json`, `state.json`, `metrics.jsonl`, `result.json`) is the source of truth;
MLflow only mirrors it. `Mirror` logs live from the training loop and swallows every tracking error:
while the tracking server is unreachable it drops points, marks the run "behind" in
`<run_dir>/mlflow.json` and backs off. `sync` replays a run directory into MLflow idempotently, so a
mirror that fell behind (or a run that never had one) can be completed later.

`<run_dir>/mlflow.json` holds `{"run_id", "experiment_id", "uri", "behind"}` (the URI with credentials
removed). A requeued or resumed job reads it and continues the same MLflow run.

HTTP settings: MLflow's client defaults to a 120 s timeout and 7 retries with exponential back-off
(minutes per call against a dead server). `Mirror` sets `MLFLOW_HTTP_REQUEST_TIMEOUT=5` and
`MLFLOW_HTTP_REQUEST_MAX_RETRIES=0` in the process environment unless the user already set them (MLflow
reads both on every request); the mirror's own back-off (30 s without network attempts after a
failure) replaces MLflow's retries.
"""
from __future__ import annotations

import json
import logging
import math
import os
import posixpath
import re
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

try:  # MLflow 3: 6000 chars; fall back to that if the private constant moves
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
except ImportError:  # pragma: no cover
    MAX_PARAM_VAL_LENGTH = 6000
MAX_KEY_LENGTH = 250            # MLflow's limit on param, metric and tag names
MAX_TAG_LENGTH = 8000           # MLflow's limit on run tag values
MAX_PARAMS_PER_BATCH = 100      # log_batch limits
MAX_METRICS_PER_BATCH = 1000

RECORD_NAME = "mlflow.json"
FINAL_PREFIX = "final/"
NOTE_TAG = "mlflow.note.content"   # what the MLflow UI shows as the experiment description
RUN_DIR_TAG = "slm.run_dir"
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
STATUSES = ("FINISHED", "FAILED", "KILLED")
# Keys of a metrics.jsonl line that are not mirrored as metrics: `tokens` is the MLflow step itself.
NOT_METRICS = frozenset({"tokens", "time", "timestamp"})
SPEC_TAG_KEYS = ("key", "study", "family", "member", "setup", "init", "variant", "flops_convention")

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


# --------------------------------------------------------------------------------------------------
# Conversions


def default_uri(study_dir: Path) -> str:
    """The laptop default: an SQLite file in the study directory (`sqlite:///<abs study_dir>/mlflow.db`)."""
    return f"sqlite:///{Path(study_dir).resolve()}/mlflow.db"


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested dict -> `{"a.b.c": "value"}` for MLflow params: strings kept, everything else as JSON
    (lists, None, numbers), URIs redacted, keys made MLflow-valid, values cut to MLflow's length limit."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[_clean_key(key)] = _clip(redact_text(v if isinstance(v, str) else _to_json(v)),
                                         MAX_PARAM_VAL_LENGTH)
    return out


def numeric_leaves(d: dict, prefix: str = "") -> dict[str, float]:
    """Every numeric (not bool) leaf of a nested dict, under dotted keys."""
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(numeric_leaves(v, key))
        elif _is_number(v):
            out[key] = float(v)
    return out


def final_metrics(result: dict) -> tuple[dict[str, float], int]:
    """The metrics `finish`/`sync` log from `result.json` (numeric leaves as `final/<dotted key>`) and
    their step (the run's `tokens`, else 0)."""
    step = int(result["tokens"]) if _is_number(result.get("tokens")) else 0
    return {FINAL_PREFIX + k: v for k, v in numeric_leaves(result).items()}, step


def record_metrics(record: dict) -> tuple[dict[str, float], int]:
    """One metrics.jsonl line -> (metrics, step): numeric values except `tokens`, which is the step."""
    step = int(record.get("tokens", record.get("step", 0)))
    return {k: float(v) for k, v in record.items() if k not in NOT_METRICS and _is_number(v)}, step


def _record_ms(record: dict) -> Optional[int]:
    """A metrics.jsonl line's own wall time (`time`, epoch seconds) in ms, if it has one."""
    t = record.get("time", record.get("timestamp"))
    return int(t * 1000) if _is_number(t) and math.isfinite(t) else None


def spec_tags(spec: dict) -> dict[str, str]:
    """Run tags derived from a RunSpec dict (key, study, family, member, setup, init, variant, ...)."""
    return {k: str(spec[k]) for k in SPEC_TAG_KEYS if spec.get(k)}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _to_json(v: Any) -> str:
    try:
        return json.dumps(v, default=str)
    except ValueError:  # circular structures: still never fail
        return str(v)


def _clip(s: str, limit: int) -> str:
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _clean_key(key: str) -> str:
    """A name MLflow accepts: its character set, no `//` or `..` segments, at most 250 chars."""
    key = re.sub(r"[^/\w.\- ]", "_", key)
    key = posixpath.normpath(key).lstrip("/")
    if key in ("", ".") or key.startswith(".."):
        key = "_" + key
    return key[:MAX_KEY_LENGTH]


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i: i + size]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _metric_entities(metrics: dict, step: int, timestamp_ms: int) -> list:
    """MLflow Metric entities for the numeric values of `metrics` (others are skipped, not errors)."""
    from mlflow.entities import Metric
    out = []
    for k, v in metrics.items():
        if isinstance(v, (bool, str)):
            continue
        try:
            value = float(v)  # accepts numpy and 0-d torch scalars too
        except (TypeError, ValueError):
            continue
        out.append(Metric(_clean_key(str(k)), value, timestamp_ms, int(step)))
    return out


# --------------------------------------------------------------------------------------------------
# Run directory files


def read_record(run_dir: Path) -> dict:
    """`<run_dir>/mlflow.json`, or {} when it is absent or unreadable."""
    return _read_json(Path(run_dir) / RECORD_NAME) or {}


def _read_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _has_lines(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _write_record(run_dir: Path, record: dict) -> None:
    """Atomically replace `<run_dir>/mlflow.json` (a reader never sees half a file)."""
    path = Path(run_dir) / RECORD_NAME
    tmp = path.with_name(f".{RECORD_NAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)


def _read_points(path: Path) -> dict[str, dict[int, tuple[float, int]]]:
    """metrics.jsonl -> {key: {step: (value, timestamp_ms)}}; for a repeated (key, step) the last line
    wins; unparseable lines (a line cut by a crash) are skipped."""
    points: dict[str, dict[int, tuple[float, int]]] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return points
    now = _now_ms()
    for line in lines:
        try:
            record = json.loads(line)
            metrics, step = record_metrics(record)
        except (ValueError, TypeError, AttributeError):
            continue
        ts = _record_ms(record) or now
        for k, v in metrics.items():
            points.setdefault(_clean_key(k), {})[step] = (v, ts)
    return points


# --------------------------------------------------------------------------------------------------
# MLflow operations (these raise; `Mirror` catches, `sync` lets the caller see)


def _set_http_defaults() -> None:
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)  # a user's own setting wins


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "error_code", ""))


def artifact_location(uri: str) -> Optional[str]:
    """Beside a SQLite store, `<its folder>/mlartifacts` (else MLflow would use ./mlruns of whatever
    directory a job runs in); None for servers, which choose their own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return None


def _ensure_experiment(client, name: str, description: Optional[str], uri: Optional[str] = None) -> str:
    """Id of the experiment called `name`, created (or restored) if needed; sets its description."""
    from mlflow.exceptions import MlflowException
    exp = client.get_experiment_by_name(name)
    if exp is None:
        tags = {NOTE_TAG: description} if description else None
        try:
            return client.create_experiment(name, tags=tags,
                                            artifact_location=artifact_location(uri) if uri else None)
        except MlflowException as e:  # another job created it between our two calls
            if _error_code(e) != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    if description and exp.tags.get(NOTE_TAG) != description:
        client.set_experiment_tag(exp.experiment_id, NOTE_TAG, description)
    return exp.experiment_id


def _existing_run(client, run_id: Optional[str]):
    """The live run `run_id` on this server, or None if it does not exist (or was deleted).
    Network errors raise: they must not be mistaken for "no such run"."""
    from mlflow.exceptions import MlflowException
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        if _error_code(e) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return None if run.info.lifecycle_stage == "deleted" else run


def _log_params(client, run_id: str, params: dict) -> None:
    from mlflow.entities import Param
    entities = [Param(k, v) for k, v in flatten(params).items()]
    for chunk in _chunks(entities, MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=chunk)


def _log_metric_entities(client, run_id: str, entities: list) -> None:
    for chunk in _chunks(entities, MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk)


def _missing_points(client, run_id: str, wanted: dict[str, dict[int, tuple[float, int]]]) -> list:
    """Metric entities for the (key, step) pairs of `wanted` that the run does not hold yet."""
    from mlflow.entities import Metric
    out = []
    for key, points in wanted.items():
        have = {m.step for m in client.get_metric_history(run_id, key)}
        out += [Metric(key, v, ts, step) for step, (v, ts) in sorted(points.items()) if step not in have]
    return out


def _replay(client, run_id: str, run_dir: Path) -> int:
    """Log every (key, step) of metrics.jsonl and result.json that the run lacks; the count written."""
    wanted = _read_points(Path(run_dir) / "metrics.jsonl")
    result = _read_json(Path(run_dir) / "result.json")
    if result:
        finals, step = final_metrics(result)
        ts = _now_ms()
        for k, v in finals.items():
            wanted.setdefault(_clean_key(k), {})[step] = (v, ts)
    missing = _missing_points(client, run_id, wanted)
    _log_metric_entities(client, run_id, missing)
    return len(missing)


def _status(status: str) -> str:
    """An MLflow end status from ours (DONE -> FINISHED, CANCELLED -> KILLED); unknown -> FAILED."""
    s = {"DONE": "FINISHED", "SUCCESS": "FINISHED", "CANCELLED": "KILLED"}.get(str(status).upper(),
                                                                              str(status).upper())
    return s if s in STATUSES else "FAILED"


# --------------------------------------------------------------------------------------------------
# Live mirror


class Mirror:
    """Mirrors one run directory to MLflow from the training loop. No method raises: tracking errors
    are logged (redacted) as warnings, the run is marked behind in mlflow.json, and network attempts
    pause for `backoff_s` seconds. Use it on global rank 0 only."""

    def __init__(self, run_dir: Path, uri: str, experiment: str, run_name: str,
                 tags: Optional[dict[str, str]] = None, params: Optional[dict] = None,
                 experiment_description: Optional[str] = None, backoff_s: float = 30.0):
        self.run_dir = Path(run_dir)
        self.uri = uri  # may carry credentials: never print or store it, use `safe_uri`
        self.safe_uri = redact_uri(uri)
        self.experiment = experiment
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.params = dict(params or {})
        self.experiment_description = experiment_description
        self.backoff_s = backoff_s
        self._client = None
        record = read_record(self.run_dir)
        self._run_id: Optional[str] = record.get("run_id")
        self._experiment_id: Optional[str] = None
        self._connected = False
        self._failing = False        # warn once per outage, not once per dropped point
        self._retry_at = 0.0         # time.monotonic() before which no network attempt is made
        self._behind = bool(record.get("behind"))

    @property
    def run_id(self) -> Optional[str]:
        """The MLflow run id (None until a run is created or found)."""
        return self._run_id

    @property
    def behind(self) -> bool:
        """True when points were dropped and MLflow lacks part of the run directory."""
        return self._behind

    def start(self) -> bool:
        """Connect, find or create the experiment and run (continuing the run named in mlflow.json);
        True on success. On failure the mirror retries at the next call after the back-off."""
        _set_http_defaults()
        return self._try(self._connect, "start")

    def log_metrics(self, metrics: dict[str, float], step: int, timestamp_ms: Optional[int] = None) -> bool:
        """Log numeric `metrics` at `step` (the run's token count) in one request; True if logged.
        Never raises; while backing off it returns at once (the point is dropped, the run is behind)."""
        if not self._ready():
            self._mark_behind()
            return False
        entities = _metric_entities(metrics, step, timestamp_ms or _now_ms())
        return self._try(lambda: _log_metric_entities(self._client, self._run_id, entities),
                         "log_metrics")

    def log_record(self, record: dict) -> bool:
        """Log one metrics.jsonl line exactly as `sync` would replay it (step = its `tokens`)."""
        try:
            metrics, step = record_metrics(record)
        except (TypeError, ValueError):
            return False
        return self.log_metrics(metrics, step, _record_ms(record))

    def set_tags(self, tags: dict[str, str]) -> bool:
        """Set run tags (values redacted and clipped); True on success. Never raises."""
        if not self._ready():
            return False
        from mlflow.entities import RunTag
        entities = [RunTag(_clean_key(str(k)), _clip(redact_text(str(v)), MAX_TAG_LENGTH))
                    for k, v in tags.items()]
        return self._try(lambda: self._client.log_batch(self._run_id, tags=entities), "set_tags")

    def finish(self, status: str = "FINISHED", result: Optional[dict] = None) -> bool:
        """Log `result`'s numeric leaves as `final/...` metrics, replay what the run missed while
        behind, and end the run with `status` (FINISHED / FAILED / KILLED). One connection attempt
        even during a back-off; True on success. Never raises: a later `sync` completes the run."""
        self._retry_at = 0.0  # the last chance in this job: ignore the back-off
        if not self._ready():
            self._mark_behind()
            return False
        return self._try(lambda: self._finish(_status(status), result), "finish")

    # -- internals ---------------------------------------------------------------------------------

    def _connect(self, reopen: bool = True) -> str:
        """Find (and with `reopen`, set RUNNING) the run of mlflow.json, or create it; raises."""
        from mlflow import MlflowClient
        client = MlflowClient(tracking_uri=self.uri)
        run = _existing_run(client, read_record(self.run_dir).get("run_id"))
        if run is not None:  # a requeued or resumed job: continue its run
            if reopen:
                client.update_run(run.info.run_id, status="RUNNING")
            self._run_id, self._experiment_id = run.info.run_id, run.info.experiment_id
        else:
            self._experiment_id = _ensure_experiment(client, self.experiment, self.experiment_description,
                                                     self.uri)
            tags = {RUN_DIR_TAG: str(self.run_dir.resolve()), **self.tags}
            tags = {_clean_key(k): _clip(redact_text(str(v)), MAX_TAG_LENGTH) for k, v in tags.items()}
            self._run_id = client.create_run(self._experiment_id, tags=tags,
                                             run_name=redact_text(self.run_name)).info.run_id
            self._behind = _has_lines(self.run_dir / "metrics.jsonl")  # points from before this run
            self._save_record()  # before logging params: a crash now still leaves the id behind
            _log_params(client, self._run_id, self.params)
        self._client, self._connected = client, True
        return self._run_id

    def _finish(self, status: str, result: Optional[dict]) -> bool:
        if result:
            finals, step = final_metrics(result)
            _log_metric_entities(self._client, self._run_id, _metric_entities(finals, step, _now_ms()))
        if self._behind:
            n = _replay(self._client, self._run_id, self.run_dir)
            log.info("mlflow: caught up %d points of run %s", n, self._run_id)
            self._behind = False
            self._save_record()
        self._client.set_terminated(self._run_id, status)
        return True

    def _ready(self) -> bool:
        """True if a network attempt may be made now (connecting first if needed)."""
        if time.monotonic() < self._retry_at:
            return False
        if self._connected:
            return True
        _set_http_defaults()
        return self._try(self._connect, "connect")

    def _try(self, fn, what: str) -> bool:
        """Run fn(); True if it returned, False if it raised (then the back-off starts and the run is
        marked behind)."""
        try:
            fn()
        except Exception as e:  # tracking must never break training
            self._fail(what, e)
            return False
        self._failing = False
        return True

    def _fail(self, what: str, exc: Exception) -> None:
        self._retry_at = time.monotonic() + self.backoff_s
        msg = redact_text(f"{type(exc).__name__}: {exc}")[:500]
        (log.debug if self._failing else log.warning)(
            "mlflow %s failed for %s (%s); retrying in %.0f s, run marked behind",
            what, self.safe_uri, msg, self.backoff_s)
        self._failing = True
        self._mark_behind()

    def _mark_behind(self) -> None:
        if not self._behind:
            self._behind = True
            self._save_record()

    def _save_record(self) -> None:
        record = {"run_id": self._run_id, "experiment_id": self._experiment_id, "uri": self.safe_uri,
                  "behind": self._behind}
        old = read_record(self.run_dir)
        if self._experiment_id is None and old.get("run_id") == self._run_id:
            record["experiment_id"] = old.get("experiment_id")  # not connected yet: keep what we knew
        try:
            _write_record(self.run_dir, record)
        except OSError as e:  # a full or read-only disk must not stop training either
            log.warning("mlflow: cannot write %s: %s", self.run_dir / RECORD_NAME, e)


# --------------------------------------------------------------------------------------------------
# Offline replay


def sync(run_dir: Path, uri: Optional[str] = None, experiment: Optional[str] = None) -> int:
    """Make MLflow hold everything in `run_dir`: the run from mlflow.json if it exists on that server,
    else a new one (params from spec.json, run name spec["key"], experiment `experiment` or
    spec["study"]); every (key, step) of metrics.jsonl and result.json's final metrics that the run
    lacks; the end status if result.json exists (FAILED if state.json says so). Idempotent: a second
    call writes nothing. Clears the behind flag. Returns the number of metric points written; raises
    on tracking errors. `uri` default: mlflow.json's, else `default_uri(run_dir.parent)`."""
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    uri = uri or record.get("uri") or default_uri(run_dir.parent)
    spec = _read_json(run_dir / "spec.json") or {}
    mirror = Mirror(run_dir, uri, experiment or spec.get("study") or run_dir.parent.name,
                    spec.get("key") or run_dir.name, tags=spec_tags(spec), params=spec)
    mirror._connect(reopen=False)  # raises: sync is run by a person or a driver that wants to know
    client, run_id = mirror._client, mirror.run_id
    n = _replay(client, run_id, run_dir)
    state = (_read_json(run_dir / "state.json") or {}).get("state")
    if (run_dir / "result.json").exists():
        client.set_terminated(run_id, "FINISHED")
    elif state == "FAILED":
        client.set_terminated(run_id, "FAILED")
    mirror._behind = False
    mirror._save_record()
    return n


def sync_all(study_dir: Path, uri: Optional[str] = None, experiment: Optional[str] = None) -> dict[str, int]:
    """`sync` every run directory (a folder with spec.json) of a study; {cell key: points written}."""
    return {d.name: sync(d, uri, experiment) for d in _run_dirs(Path(study_dir))}


def _run_dirs(study_dir: Path) -> Iterable[Path]:
    return sorted(p.parent for p in study_dir.glob("*/spec.json"))
