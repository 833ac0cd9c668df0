"""Mirror a run directory to MLflow without ever breaking or slowing training.

The run directory (`spec.json`, `state.json`, `metrics.jsonl`, `result.json`, read through
`scaling.rundir`) is the source of truth; MLflow only mirrors it. `Mirror` takes each metrics.jsonl
line from the training loop into a bounded queue and a background thread sends them in batches,
retrying with back-off through server outages; `sync` replays a run directory into MLflow, sending
only what the store lacks, so a mirror that fell behind (or a run that never had one) is completed
later, and no point is ever stored twice.

`<run_dir>/mlflow.json` holds `{"run_id", "experiment_id", "uri", "behind", "acked_lines",
"acked_points"}` (the URI with credentials removed; `acked_lines`: the first lines of metrics.jsonl
that MLflow has acknowledged). A requeued or resumed job reads it and continues the same MLflow run; a
cell's run is otherwise found by its `key` tag before any create, so a cell never gets two runs.

How a study looks in the MLflow UI (the dashboard contract):
- one experiment per study, its description (`mlflow.note.content`) a summary of the grid written from
  the study's run directories, with a link to the newest report run;
- one run per cell, named by its key, tagged `kind=cell`, key, study, family, member, init, setup,
  variant, flops_convention, tokens_budget, flops (3 significant digits: the IsoFLOP budget), params,
  params_nonembedding, tokens_per_param, executor, job_id and `state` (RUNNING / DONE / FAILED /
  INTERRUPTED, kept current by the mirror and by `sync`), its description the cell and, once done, its
  result; filter with e.g. `tags.setup = 'textless' and tags.state = 'DONE'`;
- other run kinds share the experiment: `kind=report` (the report run, figures as artifacts),
  `kind=tune` / `kind=tune-trial` (tuning runs, trials nested under their parent by
  `mlflow.parentRunId`);
- metrics stepped by tokens seen: loss, lr, tokens_per_second, tokens_text, tokens_speech, flops, step,
  val_loss/<stream>, eval/<benchmark>, and result.json's numbers as final/<dotted key>.

HTTP settings: MLflow's client defaults to a 120 s timeout and 7 retries with exponential back-off
(minutes per call against a dead server). `Mirror` sets `MLFLOW_HTTP_REQUEST_TIMEOUT=5` and
`MLFLOW_HTTP_REQUEST_MAX_RETRIES=0` in the process environment unless the user already set them (MLflow
reads both on every request); the mirror's own back-off (0.5 s doubling up to `backoff_s`, 10 s by
default, jittered) replaces MLflow's retries.
"""
from __future__ import annotations

import json
import logging
import math
import os
import collections
import posixpath
import random
import re
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from common import rundir
from common.locks import FileLock, holder_info
from common.mlflow_contract import (DASHBOARD_VIEW, END_STATE, EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, FINAL_PREFIX,
                                    KIND_TAG, MAX_KEY_LENGTH, MAX_METRICS_PER_BATCH, MAX_PARAM_VAL_LENGTH,
                                    MAX_PARAMS_PER_BATCH, MAX_TAG_LENGTH, NOTE_TAG, PARENT_TAG, REPORT_LINE,
                                    RUN_DIR_TAG, STATE_TAG, STATUSES, VIEW_KEY, VIEW_TAG, artifact_location, clip,
                                    default_uri, ensure_experiment, error_code, redact_text, redact_uri)
from common.rundir import RunDir, cell_dirs

from .fmt import duration, short_count

log = logging.getLogger(__name__)

CONNECT_LOCK = ".mlflow.lock"   # in the run dir: one process at a time finds or creates the cell's run
QUEUE_SIZE = 10_000             # metrics.jsonl lines a mirror holds in memory before it drops (and replays)
BATCH_WINDOW_S = 1.0            # the sender sends what is queued at most this often (finish flushes at once)

RECORD_NAME = "mlflow.json"
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
# Keys of a metrics.jsonl line that are not mirrored as metrics: `tokens` is the MLflow step itself.
NOT_METRICS = frozenset({"tokens", "time", "timestamp"})
SPEC_TAG_KEYS = ("key", "study", "family", "member", "setup", "init", "variant", "flops_convention")
# --------------------------------------------------------------------------------------------------
# Conversions


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested dict -> `{"a.b.c": "value"}` for MLflow params: strings kept, everything else as JSON
    (lists, None, numbers), URIs redacted, keys made MLflow-valid, values cut to MLflow's length limit."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[_clean_key(key)] = clip(redact_text(v if isinstance(v, str) else _to_json(v)),
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
    """Run tags derived from a RunSpec dict: `kind=cell`, key, study, family, member, setup, init,
    variant, flops_convention, tokens_budget, flops (3 significant digits), params (total),
    params_nonembedding, tokens_per_param, and the run description (`mlflow.note.content`)."""
    tags = {k: str(spec[k]) for k in SPEC_TAG_KEYS if spec.get(k)}
    tags[KIND_TAG] = "cell"
    tokens, flops = spec.get("tokens"), spec.get("flops")
    params = spec.get("params") if isinstance(spec.get("params"), dict) else {}
    if _is_number(tokens):
        tags["tokens_budget"] = str(int(tokens))
    if _is_number(flops):
        tags["flops"] = f"{flops:.3g}"
    if _is_number(params.get("total")):
        tags["params"] = str(int(params["total"]))
        if _is_number(tokens) and params["total"]:
            tags["tokens_per_param"] = f"{tokens / params['total']:.3g}"
    if _is_number(params.get("nonembedding")):
        tags["params_nonembedding"] = str(int(params["nonembedding"]))
    if spec.get("key"):
        tags[NOTE_TAG] = run_description(spec)
    return tags


def run_description(spec: dict, result: Optional[dict] = None) -> str:
    """The run's description in the MLflow UI (markdown): what the cell is and, with `result`
    (result.json), how it ended."""
    p = spec.get("params") if isinstance(spec.get("params"), dict) else {}
    what = f"**{spec.get('key')}**: {spec.get('setup', '?')} {spec.get('family', '?')}/{spec.get('member', '?')}, " \
           f"init {spec.get('init', '?')}" + (f", variant {spec['variant']}" if spec.get("variant") else "") + "."
    size = []
    if _is_number(p.get("total")):
        size.append(f"{int(p['total']):,} parameters"
                    + (f" ({int(p['nonembedding']):,} non-embedding)" if _is_number(p.get("nonembedding")) else ""))
    if _is_number(spec.get("tokens")):
        per = f" ({spec['tokens'] / p['total']:.3g} per parameter)" if _is_number(p.get("total")) and p["total"] else ""
        size.append(f"{int(spec['tokens']):,} tokens{per}")
    if _is_number(spec.get("flops")):
        size.append(f"{spec['flops']:.3g} FLOPs ({spec.get('flops_convention', '6ND')})")
    text = what + (" " + ", ".join(size) + "." if size else "")
    return text + ("\n\n" + result_summary(result) if result else "")


def result_summary(result: dict) -> str:
    """One markdown line from result.json: final loss, held-out loss per stream, benchmarks, speed."""
    parts = []
    if _is_number(result.get("loss")):
        parts.append(f"final train loss {result['loss']:.4f}")
    for name, section in (("held-out loss", "val_loss"), ("benchmarks", "eval")):
        vals = result.get(section)
        if isinstance(vals, dict) and vals:
            parts.append(f"{name} " + ", ".join(f"{k} {v:.4f}" for k, v in vals.items() if _is_number(v)))
    if _is_number(result.get("wall_seconds")):
        parts.append(f"{duration(result['wall_seconds'])}"
                     + (f" at {short_count(result['tokens_per_second'])} tokens/s"
                        if _is_number(result.get("tokens_per_second")) else ""))
    return "**Result**: " + "; ".join(parts) + "." if parts else "**Result**: see final/ metrics."


def state_tags(run_dir: Path, state: Optional[str] = None) -> dict[str, str]:
    """`state` (given, else from state.json: interrupted PENDING -> INTERRUPTED), `executor` and
    `job_id` from the run directory's state.json (empty values left out)."""
    try:
        st = rundir.read_state(run_dir)
    except (OSError, ValueError):
        st = {}
    if state is None:
        state = st.get("state")
        if state == "PENDING" and st.get("interrupted"):
            state = "INTERRUPTED"
    tags = {STATE_TAG: state, "executor": st.get("executor"), "job_id": st.get("job_id") or
            (st.get("job_ids") or [None])[-1]}
    return {k: str(v) for k, v in tags.items() if v not in (None, "")}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _to_json(v: Any) -> str:
    try:
        return json.dumps(v, default=str)
    except ValueError:  # circular structures: still never fail
        return str(v)


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
    from mlflow.entities import Metric  # heavy: mlflow only when a run is tracked
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
# Run directory files (read and written through scaling.rundir; mlflow.json is this module's own)


def read_record(run_dir: Path) -> dict:
    """`<run_dir>/mlflow.json`, or {} when it is absent or unreadable."""
    data = _read_json(Path(run_dir) / RECORD_NAME)
    return data if isinstance(data, dict) else {}


def _read_json(path: Path) -> Optional[dict]:
    """A JSON object file through the run-dir module; None when absent, cut or not an object."""
    try:
        data = rundir.read_json(path, None)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_record(run_dir: Path, record: dict) -> None:
    """Atomically replace `<run_dir>/mlflow.json` (a reader never sees half a file)."""
    rundir.write_json(Path(run_dir) / RECORD_NAME, record)


def _point_ms(record: dict) -> int:
    """A metrics.jsonl line's timestamp in ms: its own `time`, else 0. Deterministic on purpose: a
    point sent twice (a retried batch whose answer was lost) is then an identical row, which MLflow's
    SQL store keeps once (its primary key is key, timestamp, step, value)."""
    return _record_ms(record) or 0


def _line_points(lines: list[dict]) -> dict[str, dict[int, tuple[float, int]]]:
    """metrics.jsonl lines -> {key: {step: (value, timestamp_ms)}}; for a repeated (key, step) the
    last line wins; lines that are not metric records are skipped."""
    points: dict[str, dict[int, tuple[float, int]]] = {}
    for record in lines:
        try:
            metrics, step = record_metrics(record)
        except (ValueError, TypeError, AttributeError):
            continue
        ts = _point_ms(record)
        for k, v in metrics.items():
            points.setdefault(_clean_key(k), {})[step] = (v, ts)
    return points


# --------------------------------------------------------------------------------------------------
# MLflow operations (these raise; `Mirror` catches, `sync` lets the caller see)


def _set_http_defaults() -> None:
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)  # a user's own setting wins


def _existing_run(client, run_id: Optional[str]):
    """The live run `run_id` on this server, or None if it does not exist (or was deleted).
    Network errors raise: they must not be mistaken for "no such run"."""
    from mlflow.exceptions import MlflowException  # heavy: mlflow only when a run is tracked
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        if error_code(e) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return None if run.info.lifecycle_stage == "deleted" else run


def _cell_runs(client, experiment_id: str, key: Optional[str], run_dir: Path) -> list:
    """The experiment's live runs of cell `key` mirroring `run_dir` (tags `kind=cell`, `key` and the
    run dir, or no run-dir tag), oldest first, ties by run id. Another run dir of the same key (a tuning
    trial that drew a grid cell's settings, a moved study) keeps its own run."""
    if not key:
        return []
    quoted = str(key).replace("'", "\\'")
    runs = client.search_runs([experiment_id], f"tags.{KIND_TAG} = 'cell' and tags.key = '{quoted}'",
                              max_results=100)
    here = str(Path(run_dir).resolve())
    runs = [r for r in runs if r.data.tags.get(RUN_DIR_TAG, here) == here]
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def _find_cell_run(client, experiment_id: str, key: Optional[str], run_dir: Path):
    """The cell's run in the experiment (the oldest if several), or None."""
    runs = _cell_runs(client, experiment_id, key, run_dir)
    return runs[0] if runs else None


def _keep_oldest(client, experiment_id: str, key: Optional[str], run_dir: Path, run_id: str) -> str:
    """After creating `run_id` for cell `key`: if another process created one too (both searched
    before either created), keep the oldest and delete ours; returns the run to use."""
    runs = []
    for _ in range(3):   # a creator racing us may not be visible to search at once: look again briefly
        runs = _cell_runs(client, experiment_id, key, run_dir)
        if runs and runs[0].info.run_id != run_id:
            break
        time.sleep(0.3)
    if not runs or runs[0].info.run_id == run_id:
        return run_id
    client.delete_run(run_id)
    # the run we adopt may be a racer's that it deletes in turn (it saw an older one we do not see yet):
    # only the oldest of all is never deleted, so look until two looks in a row agree on the oldest
    chosen = runs[0].info.run_id
    for _ in range(10):
        time.sleep(0.3)
        again = _cell_runs(client, experiment_id, key, run_dir)
        if again and again[0].info.run_id == chosen:
            break
        chosen = again[0].info.run_id if again else chosen
    return chosen


def _set_run_tags(client, run_id: str, tags: dict) -> None:
    """Set run tags in one request (values redacted and clipped; empty ones skipped)."""
    from mlflow.entities import RunTag  # heavy: mlflow only when a run is tracked
    entities = [RunTag(_clean_key(str(k)), clip(redact_text(str(v)), MAX_TAG_LENGTH))
                for k, v in tags.items() if v not in (None, "")]
    if entities:
        client.log_batch(run_id, tags=entities)


def _log_params(client, run_id: str, params: dict) -> None:
    """Log the run's params; a concurrent logger of the same params (two creators of one cell's run that
    both adopted the oldest) makes the store refuse a duplicate key: fine when the values are ours."""
    from mlflow.entities import Param  # heavy: mlflow only when a run is tracked
    entities = [Param(k, v) for k, v in flatten(params).items()]
    for chunk in _chunks(entities, MAX_PARAMS_PER_BATCH):
        try:
            client.log_batch(run_id, params=chunk)
        except Exception:
            have = client.get_run(run_id).data.params
            if any(have.get(p.key) != p.value for p in chunk):
                raise


def _log_metric_entities(client, run_id: str, entities: list) -> None:
    for chunk in _chunks(entities, MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk)


def _missing_points(client, run_id: str, wanted: dict[str, dict[int, tuple[float, int]]]) -> list:
    """Metric entities for the (key, step) pairs of `wanted` that the run does not hold yet."""
    from mlflow.entities import Metric  # heavy: mlflow only when a run is tracked
    out = []
    for key, points in wanted.items():
        have = {m.step for m in client.get_metric_history(run_id, key)}
        out += [Metric(key, v, ts, step) for step, (v, ts) in sorted(points.items()) if step not in have]
    return out


def _replay(client, run_id: str, run_dir: Path, acked_lines: int = 0) -> tuple[int, int]:
    """Log what the run lacks of metrics.jsonl past its first `acked_lines` lines (which MLflow has
    acknowledged) and of result.json's final metrics, by (key, step); (points written, lines now in
    metrics.jsonl)."""
    lines = rundir.read_metrics(run_dir)
    wanted = _line_points(lines[min(max(acked_lines, 0), len(lines)):])
    result = RunDir(run_dir).result()
    if result:
        finals, step = final_metrics(result)
        ts = _now_ms()
        for k, v in finals.items():
            wanted.setdefault(_clean_key(k), {})[step] = (v, ts)
    missing = _missing_points(client, run_id, wanted)
    _log_metric_entities(client, run_id, missing)
    return len(missing), len(lines)


def _status(status: str) -> str:
    """An MLflow end status from ours (DONE -> FINISHED, CANCELLED -> KILLED); unknown -> FAILED."""
    s = {"DONE": "FINISHED", "SUCCESS": "FINISHED", "CANCELLED": "KILLED"}.get(str(status).upper(),
                                                                              str(status).upper())
    return s if s in STATUSES else "FAILED"


# --------------------------------------------------------------------------------------------------
# Live mirror


class Mirror:
    """Mirrors one run directory to MLflow from the training loop. No method raises, and the logging
    calls never wait on the network: `log_record` / `log_metrics` put the point in a bounded in-process
    queue (microseconds, no lock) and a background daemon thread sends what is queued once a second in
    batches (`log_batch`, up to MLflow's 1000 metrics a request), retrying with exponential back-off (0.5 s doubling up to
    `backoff_s`, jittered) through server outages and restarts. Use it on global rank 0 only.

    What MLflow has acknowledged is written to mlflow.json as a high-water mark (`acked_lines`: the
    first lines of metrics.jsonl that MLflow holds), so `finish` and `sync` send only the lines past
    it that the store lacks, by (key, step). A point is only ever dropped from memory (queue full):
    metrics.jsonl already has it, the run is marked behind, and `finish` (or a later `sync`) fills it.
    Point timestamps come from the line's own `time`, so a batch sent twice adds no row.

    The run's `state` tag follows it (RUNNING at start, DONE / FAILED / INTERRUPTED at finish) and
    `executor` / `job_id` come from state.json. The MLflow run of a cell is found by its `key` tag
    before any create, so a retried create, a requeue or a run made up front (`ensure_cell_run`) never
    leaves the cell with two runs. `experiment_description` is written only when the mirror creates the
    experiment (the study's dashboard is sweeps.dashboard's, written once per submit, sync and report,
    never by a cell)."""

    def __init__(self, run_dir: Path, uri: str, experiment: str, run_name: str,
                 tags: Optional[dict[str, str]] = None, params: Optional[dict] = None,
                 experiment_description: Optional[str] = None, backoff_s: float = 10.0,
                 queue_size: int = QUEUE_SIZE, finish_timeout_s: float = 30.0):
        self.run_dir = Path(run_dir)
        self.uri = uri  # may carry credentials: never print or store it, use `safe_uri`
        self.safe_uri = redact_uri(uri)
        self.experiment = experiment
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.params = dict(params or {})
        self.experiment_description = experiment_description
        self.backoff_s = backoff_s
        self.finish_timeout_s = finish_timeout_s
        self._client = None
        record = read_record(self.run_dir)
        self._run_id: Optional[str] = record.get("run_id")
        self._experiment_id: Optional[str] = None
        self._connected = False
        self._failing = False        # warn once per outage, not once per failed batch
        self._retry_at = 0.0         # time.monotonic() before which no network attempt is made
        self._delay = 0.0            # the current back-off (0 after a success)
        self._behind = bool(record.get("behind"))
        acked = record.get("acked_lines")
        self._acked_lines = acked if isinstance(acked, int) and acked >= 0 else 0
        self._acked_points = record.get("acked_points") if isinstance(record.get("acked_points"), int) else 0
        # the live path: (seq, record) items; seq counts this process's metrics.jsonl lines
        # a deque, not a queue.Queue: appending takes no lock the sender could hold while descheduled
        self._queue: collections.deque = collections.deque()
        self.queue_size = queue_size
        self._in_flight = 0          # lines the sender has taken but MLflow has not acknowledged
        self._seq = 0                # the next log_record's number
        self._sent_seq = 0           # every seq below it is in MLflow (a contiguous prefix)
        self._gap = False            # a line of this process was dropped: the mark stops before it
        self._base: Optional[int] = None   # metrics.jsonl index of this process's first line
        self._lock = threading.RLock()     # mlflow.json and the connection, shared with the sender
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def run_id(self) -> Optional[str]:
        """The MLflow run id (None until a run is created or found)."""
        return self._run_id

    @property
    def behind(self) -> bool:
        """True when MLflow may lack part of the run directory (a point dropped or not yet sent
        after a failure); `finish` and `sync` clear it."""
        return self._behind

    def start(self) -> bool:
        """Connect, find or create the experiment and run (continuing the run named in mlflow.json, or
        the experiment's run tagged with this cell's key) and start the background sender; True if
        connected now. On failure the sender keeps trying with back-off."""
        _set_http_defaults()
        with self._lock:
            ok = self._connected or self._try(self._connect, "start")
        self._start_sender()
        return ok

    def log_metrics(self, metrics: dict[str, float], step: int, timestamp_ms: Optional[int] = None) -> bool:
        """Queue numeric `metrics` at `step` (the run's token count) for the sender; True if queued,
        False if the queue is full (the point is dropped and the run is behind). Never raises, never
        waits on the network. Points logged here are not metrics.jsonl lines: `sync` does not know them."""
        point = {**metrics, "tokens": step, "time": (timestamp_ms or _now_ms()) / 1000.0}
        return self._enqueue(None, point)

    def log_record(self, record: dict) -> bool:
        """Queue one metrics.jsonl line, just appended by the caller, exactly as `sync` would replay it
        (step = its `tokens`); True if queued. Never raises, never waits on the network."""
        seq = self._seq
        self._seq += 1
        return self._enqueue(seq, dict(record))

    def set_tags(self, tags: dict[str, str]) -> bool:
        """Set run tags (values redacted and clipped); True on success. Never raises (one request,
        at most the HTTP timeout, and none while backing off)."""
        if not self._ready():
            return False
        from mlflow.entities import RunTag  # heavy: mlflow only when a run is tracked
        entities = [RunTag(_clean_key(str(k)), clip(redact_text(str(v)), MAX_TAG_LENGTH))
                    for k, v in tags.items()]
        return self._try(lambda: self._client.log_batch(self._run_id, tags=entities), "set_tags")

    def finish(self, status: str = "FINISHED", result: Optional[dict] = None) -> bool:
        """Drain the queue (waiting at most `finish_timeout_s`), stop the sender, log `result`'s
        numeric leaves as `final/...` metrics, replay what MLflow lacks of metrics.jsonl past the
        acknowledged mark, and end the run with `status` (FINISHED / FAILED / KILLED). True on success.
        Never raises: on failure the run stays behind and a later `sync` completes it."""
        self._drain(self.finish_timeout_s)
        with self._lock:
            self._retry_at = 0.0  # the last chance in this job: ignore the back-off
            if not self._ready():
                self._mark_behind()
                return False
            return self._try(lambda: self._finish(_status(status), result), "finish")

    # -- the sender --------------------------------------------------------------------------------

    def _enqueue(self, seq: Optional[int], item: dict) -> bool:
        if len(self._queue) >= self.queue_size:  # metrics.jsonl has the line: finish or sync sends it
            self._gap = self._gap or seq is not None
            self._behind = True
            return False
        self._queue.append((seq, item))
        return True

    def _start_sender(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._send_loop, name=f"mlflow-mirror-{self.run_name}",
                                            daemon=True)
            self._thread.start()

    def _drain(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) until the sender has sent everything queued, then stop it."""
        if self._thread is None:
            return
        self._retry_at = 0.0
        self._wake.set()  # send now: no batching window, no back-off
        deadline = time.monotonic() + max(timeout_s, 0.0)
        while (self._queue or self._in_flight) and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.02)
            if time.monotonic() >= self._retry_at:
                self._wake.set()
        self._stop.set()
        self._wake.set()
        # an in-flight request ends within the HTTP timeout; if it is later still, the replay's
        # identical points are kept once by the store
        self._thread.join(timeout=float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", 5)) + 1)
        self._thread = None

    def _send_loop(self) -> None:
        """Every `BATCH_WINDOW_S` (or at once when woken by finish): send what is queued, up to one
        request's worth of points per request; on failure wait out the back-off and resend."""
        pending: list[tuple[Optional[int], dict]] = []
        while not self._stop.is_set():
            # the window keeps this thread (and its hold on the GIL) away from the training thread
            self._wake.wait(max(self._retry_at - time.monotonic(), BATCH_WINDOW_S))
            self._wake.clear()
            if self._stop.is_set() or time.monotonic() < self._retry_at:
                continue
            while pending or self._queue:
                points = sum(max(len(item) - 1, 1) for _, item in pending)
                while self._queue and points < MAX_METRICS_PER_BATCH:
                    seq, item = self._queue.popleft()
                    pending.append((seq, item))
                    points += max(len(item) - 1, 1)
                self._in_flight = len(pending)
                with self._lock:
                    sent = self._send(pending)
                if not sent or self._stop.is_set():
                    break  # back off (the batch is kept); or finish replays what is left
                pending = []
                self._in_flight = 0

    def _send(self, batch: list[tuple[Optional[int], dict]]) -> bool:
        """Send one batch (connecting first if needed); True if MLflow acknowledged all of it."""
        if not self._connected and not self._try(self._connect, "connect"):
            return False
        entities = []
        for _, item in batch:
            try:
                metrics, step = record_metrics(item)
            except (TypeError, ValueError):
                continue
            entities += _metric_entities(metrics, step, _point_ms(item))
        if not self._try(lambda: _log_metric_entities(self._client, self._run_id, entities), "log_batch"):
            return False
        self._delay = 0.0
        self._acknowledge([(seq, item) for seq, item in batch if seq is not None], len(entities))
        return True

    def _acknowledge(self, lines: list[tuple[int, dict]], n_points: int) -> None:
        """Advance the high-water mark over the contiguous lines now in MLflow and write mlflow.json."""
        self._acked_points += n_points
        if lines:
            if self._base is None and lines[0][0] == 0:
                self._base = self._locate(lines[0][1])
            for seq in sorted(seq for seq, _ in lines):
                if seq == self._sent_seq:
                    self._sent_seq += 1
            if self._base is not None and not self._gap and self._acked_lines >= self._base:
                self._acked_lines = self._base + self._sent_seq
        if self._failing:
            self._failing = False
            log.info("mlflow: %s reachable again; run %s", self.safe_uri, self._run_id)
        self._save_record()

    def _locate(self, first: dict) -> Optional[int]:
        """metrics.jsonl index of this process's first line (`first`): the file may hold an earlier
        job's lines, trimmed back to its checkpoint. None if it is not there (then no mark is kept)."""
        try:
            lines = rundir.read_metrics(self.run_dir)
            first = json.loads(json.dumps(first))  # as the line reads back from the file
        except (OSError, ValueError, TypeError):
            return None
        start = max(len(lines) - self._seq - 1, 0)  # it is among the last lines logged
        return next((i for i in range(start, len(lines)) if lines[i] == first), None)

    # -- internals ---------------------------------------------------------------------------------

    def _connect(self, reopen: bool = True) -> str:
        """Find (and with `reopen`, set RUNNING) the run of mlflow.json or the experiment's run tagged
        with this cell's key, or create it; raises. Processes that share the run dir's file system find or
        create one at a time (`.mlflow.lock`): the second finds the first's run in mlflow.json. Creators
        the lock cannot order (file systems that do not share flock) still end on the oldest run."""
        lock = FileLock(self.run_dir / CONNECT_LOCK, holder_info())
        lock.acquire(wait=True, timeout_s=120)
        try:
            return self._connect_locked(reopen)
        finally:
            lock.release()

    def _connect_locked(self, reopen: bool) -> str:
        from mlflow import MlflowClient  # heavy: mlflow only when a run is tracked
        client = MlflowClient(tracking_uri=self.uri)
        run = _existing_run(client, read_record(self.run_dir).get("run_id"))
        live = state_tags(self.run_dir, "RUNNING" if reopen else None)
        if run is None:
            self._experiment_id = ensure_experiment(client, self.experiment, self.experiment_description,
                                                     self.uri)
            run = _find_cell_run(client, self._experiment_id, self.tags.get("key"), self.run_dir)
        if run is not None:  # a requeued or resumed job, a retried create, a run made at submit
            if reopen and run.info.status != "RUNNING":
                client.update_run(run.info.run_id, status="RUNNING")
            self._run_id, self._experiment_id = run.info.run_id, run.info.experiment_id
            _set_run_tags(client, self._run_id, live)
            if not run.data.params and self.params:
                _log_params(client, self._run_id, self.params)  # a create cut off before its params
            self._save_record()
        else:
            tags = {RUN_DIR_TAG: str(self.run_dir.resolve()), **live,
                    **{k: v for k, v in self.tags.items() if v not in (None, "")}}
            tags = {_clean_key(k): clip(redact_text(str(v)), MAX_TAG_LENGTH) for k, v in tags.items()}
            self._run_id = client.create_run(self._experiment_id, tags=tags,
                                             run_name=redact_text(self.run_name)).info.run_id
            # two creators that both searched before either created: the oldest run wins everywhere
            self._run_id = _keep_oldest(client, self._experiment_id, self.tags.get("key"), self.run_dir,
                                        self._run_id)
            self._acked_lines = 0  # a new run holds nothing of metrics.jsonl yet
            self._save_record()  # before logging params: a crash now still leaves the id behind
            _log_params(client, self._run_id, self.params)
        self._client, self._connected = client, True
        return self._run_id

    def _finish(self, status: str, result: Optional[dict]) -> bool:
        tags = {STATE_TAG: END_STATE.get(status, "FAILED")}
        if result:
            finals, step = final_metrics(result)
            _log_metric_entities(self._client, self._run_id, _metric_entities(finals, step, _now_ms()))
            if self.tags.get(NOTE_TAG):
                tags[NOTE_TAG] = f"{self.tags[NOTE_TAG]}\n\n{result_summary(result)}"
        _set_run_tags(self._client, self._run_id, tags)
        n, lines = _replay(self._client, self._run_id, self.run_dir, self._acked_lines)
        if n:
            log.info("mlflow: caught up %d points of run %s", n, self._run_id)
        self._acked_lines, self._behind = lines, False
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
        with self._lock:
            return self._connected or self._try(self._connect, "connect")

    def _try(self, fn, what: str) -> bool:
        """Run fn(); True if it returned, False if it raised (then the back-off starts and the run is
        marked behind)."""
        try:
            fn()
        except Exception as e:  # tracking must never break training
            self._fail(what, e)
            return False
        return True

    def _fail(self, what: str, exc: Exception) -> None:
        self._delay = min(max(self._delay * 2, 0.5), self.backoff_s)
        wait = self._delay * random.uniform(0.5, 1.0)  # jitter: dozens of cells must not retry in step
        self._retry_at = time.monotonic() + wait
        msg = redact_text(f"{type(exc).__name__}: {exc}")[:500]
        (log.debug if self._failing else log.warning)(
            "mlflow %s failed for %s (%s); retrying in %.1f s, run marked behind",
            what, self.safe_uri, msg, wait)
        self._failing = True
        self._mark_behind()

    def _mark_behind(self) -> None:
        if not self._behind:
            self._behind = True
            self._save_record()

    def _save_record(self) -> None:
        record = {"run_id": self._run_id, "experiment_id": self._experiment_id, "uri": self.safe_uri,
                  "behind": self._behind, "acked_lines": self._acked_lines, "acked_points": self._acked_points}
        with self._lock:
            old = read_record(self.run_dir)
            if self._experiment_id is None and old.get("run_id") == self._run_id:
                record["experiment_id"] = old.get("experiment_id")  # not connected yet: keep what we knew
            try:
                _write_record(self.run_dir, record)
            except OSError as e:  # a full or read-only disk must not stop training either
                log.warning("mlflow: cannot write %s: %s", self.run_dir / RECORD_NAME, e)


def ensure_cell_run(uri: str, experiment: str, run_dir: Path, spec: dict) -> str:
    """Find or create the MLflow run of the cell in `run_dir` (`spec`: its spec.json as a dict) so
    that the cell's jobs continue it: mlflow.json's run if the server has it, else the experiment's run
    tagged with the cell's key, else a new one (params from `spec`; status SCHEDULED while state.json
    says PENDING). Writes mlflow.json; returns the run id; raises on tracking errors."""
    _set_http_defaults()
    mirror = Mirror(run_dir, uri, experiment, spec.get("key") or Path(run_dir).name, tags=spec_tags(spec),
                    params=spec)
    run_id = mirror._connect(reopen=False)
    if state_tags(run_dir).get(STATE_TAG, "PENDING") == "PENDING" \
            and mirror._client.get_run(run_id).info.status == "RUNNING":
        mirror._client.update_run(run_id, status="SCHEDULED")  # no job has started it yet
    return run_id


# --------------------------------------------------------------------------------------------------
# Offline replay


def sync(run_dir: Path, uri: Optional[str] = None, experiment: Optional[str] = None) -> int:
    """Make MLflow hold everything in `run_dir`: the run from mlflow.json if it exists on that server,
    else a new one (params from spec.json, run name spec["key"], experiment `experiment` or
    spec["study"]); every (key, step) of metrics.jsonl and result.json's final metrics that the run
    lacks; the end status if result.json exists (FAILED if state.json says so); the `state`, `executor`
    and `job_id` tags from state.json. Idempotent: a second call writes no metric point. Clears the
    behind flag. Returns the number of metric points written; raises on tracking errors. `uri` default:
    mlflow.json's, else `default_uri(run_dir.parent)`."""
    return _sync(run_dir, uri, experiment)[0]


def _sync(run_dir: Path, uri: Optional[str], experiment: Optional[str]) -> tuple[int, Mirror]:
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    uri = uri or record.get("uri") or default_uri(run_dir.parent)
    spec = RunDir(run_dir).spec()
    mirror = Mirror(run_dir, uri, experiment or spec.get("study") or run_dir.parent.name,
                    spec.get("key") or run_dir.name, tags=spec_tags(spec), params=spec)
    mirror._connect(reopen=False)  # raises: sync is run by a person or a driver that wants to know
    client, run_id = mirror._client, mirror.run_id
    n, mirror._acked_lines = _replay(client, run_id, run_dir, mirror._acked_lines)
    try:
        state = rundir.read_state(run_dir).get("state")
    except (OSError, ValueError):
        state = None
    result = RunDir(run_dir).result()
    if result is not None:
        if spec.get("key"):
            _set_run_tags(client, run_id, {NOTE_TAG: run_description(spec, result)})
        client.set_terminated(run_id, "FINISHED")
    elif state == "FAILED":
        client.set_terminated(run_id, "FAILED")
    mirror._behind = False
    mirror._save_record()
    return n, mirror


def sync_all(study_dir: Path, uri: Optional[str] = None, experiment: Optional[str] = None) -> dict[str, int]:
    """`sync` every run directory of a study; {cell key: points written}."""
    return {d.name: _sync(d, uri, experiment)[0] for d in _run_dirs(Path(study_dir))}


def _run_dirs(study_dir: Path) -> Iterable[Path]:
    return cell_dirs(study_dir)   # not the WSD trunks (they have no MLflow run)
