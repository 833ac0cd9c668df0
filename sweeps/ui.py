"""`launch.py ui`: open a study's MLflow experiment in the MLflow UI.

The study's tracking store is `tracking.uri`, else the embedded SQLite file `<study dir>/mlflow.db`
(`scaling.tracking.default_uri`). A server store (http/https: `launch.py tracking-server`, or a shared
one) already serves the UI, so only its experiment URL is printed. Any other store gets a local
`mlflow ui` on it, bound to 127.0.0.1 unless told otherwise, its log in `<study dir>/mlflow-ui.log`;
this process prints the experiment's URL, opens a browser, and waits (Ctrl-C or SIGTERM stops the UI).

The URL is the experiment's runs page in the UI's "Model training" layout, with the dashboard view
that the mirror stores on the experiment (`scaling.tracking.VIEW_TAG`: cell tags and losses as
columns): `http://127.0.0.1:5000/#/experiments/<id>/runs?workflowType=machine_learning&viewStateShareKey=slm-scaling`.

A browser that `ui` opens on a local store first gets a landing page on the UI's own address (same
origin, so same local storage), served for a moment before `mlflow ui` takes the port: it records the
MLflow 3 UI's first visit as done (else the assistant panel opens over a quarter of the page on a
loopback host) and stores the dashboard view as the experiment's own saved view (so the page needs no
share key, whose "You're viewing a shared view" banner sits over the grid), touching nothing the
browser already holds; then it goes to the runs page as soon as `mlflow ui` answers.
"""
from __future__ import annotations

import base64
import http.server
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import webbrowser
from pathlib import Path
from typing import Callable, Optional

from scaling.tracking import VIEW_KEY, VIEW_TAG, default_uri, redact_uri

from .study import Study, StudyError

SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}   # else ~15 processes and ~30 s to start
START_TIMEOUT_S = 90.0
LANDING_WAIT_S = 15.0   # how long `ui` waits for the browser to fetch the landing page
# The MLflow 3 UI's local storage (its useLocalStorage hook: `<key>_v<version>`, JSON values) after a first
# visit: assistant auto-opened once and closed, model-training layout, one-time tips dismissed
FIRST_VISIT = {"mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true", "mlflow.assistant.panelOpen_v1": "false",
               "mlflow.workflowType_v1": '"machine_learning"', "mlflow.detectIssues.guidanceDismissed": "true",
               "mlflow.telemetry.info.alert.dismissed": "true"}


def store_uri(study: Study) -> str:
    """The study's tracking store: `tracking.uri`, else `sqlite:///<study dir>/mlflow.db`."""

    return study.tracking.uri or default_uri(Path(study.study_dir).resolve())


def experiment_name(study: Study) -> str:
    return study.tracking.experiment or study.name


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def ui_env() -> dict[str, str]:
    """What the UI process adds to the environment (a user's own setting wins)."""
    return {k: os.environ.get(k, v) for k, v in SERVER_ENV.items()}


def ui_command(study: Study, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """`python -m mlflow ui` on the study's store (one worker; artifacts of new experiments beside the
    store in `<study dir>/mlartifacts`)."""
    uri = store_uri(study)
    if is_server(uri):
        raise StudyError(f"{study.source}: tracking.uri is a server ({_safe(uri)}): it serves the UI itself")
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
            "--artifacts-destination", str(Path(study.study_dir).resolve() / "mlartifacts"),
            "--host", host, "--port", str(port), "--workers", "1"]


def command_line(study: Study, host: str = "127.0.0.1", port: int = 5000) -> str:
    """The UI command as one shell line (environment settings first), for a user to run or read; for a
    server store, its URL (it serves the UI itself)."""
    uri = store_uri(study)
    if is_server(uri):
        return experiment_url(_strip_credentials(uri), None)
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in ui_env().items())
    return f"{env} {shlex.join(ui_command(study, host, port))}"


def experiment_url(base: str, experiment: Optional[dict]) -> str:
    """The runs page of `experiment` (a REST experiment object) in the UI's model-training layout, with
    the study's dashboard view (`scaling.tracking.VIEW_TAG`) when the experiment has it; the UI's front
    page when there is no experiment."""

    base = base.rstrip("/")
    if not experiment:
        return f"{base}/"
    query = {"workflowType": "machine_learning"}
    if any(t.get("key") == VIEW_TAG for t in experiment.get("tags", [])):
        query["viewStateShareKey"] = VIEW_KEY
    return f"{base}/#/experiments/{experiment['experiment_id']}/runs?{urllib.parse.urlencode(query)}"


def runs_url(base: str, experiment_id: Optional[str]) -> str:
    """The experiment's runs page without a share key (the view comes from the browser's storage)."""
    base = base.rstrip("/")
    if experiment_id is None:
        return f"{base}/"
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def view_storage_key(experiment_id: str) -> str:
    """The UI's local-storage key of an experiment's saved runs-page view (its LocalStorageStore for
    component `ExperimentPage` and the experiment ids as a JSON list)."""
    ids = json.dumps([str(experiment_id)], separators=(",", ":"))
    return f"MLflowLocalStorage-1.1-ExperimentPage-{ids}-ReactComponentState"


def first_visit_storage(experiment: Optional[dict]) -> dict[str, str]:
    """What the landing page stores when absent: FIRST_VISIT, and the experiment's dashboard view
    (`scaling.tracking.VIEW_TAG`) as its saved view."""

    out = dict(FIRST_VISIT)
    view = next((t.get("value") for t in (experiment or {}).get("tags", []) if t.get("key") == VIEW_TAG), None)
    if view:
        out[view_storage_key(experiment["experiment_id"])] = view
    return out


def landing_page(title: str, storage: dict[str, str], target: str) -> bytes:
    """A page that stores `storage` (keys not set yet), says `ui` is starting, and moves to `target` (a
    path on the same origin) once the server there answers /health with OK."""
    def js(value) -> str:  # a JSON literal that cannot close the script element
        return json.dumps(value).replace("</", "<\\/")

    script = (f"const items = {js(storage)};\n"
              "for (const [k, v] of Object.entries(items)) { if (localStorage.getItem(k) === null) "
              "localStorage.setItem(k, v); }\n"
              "fetch('/seeded', {cache: 'no-store'}).catch(() => {});\n"
              f"const target = {js(target)};\n"
              "function poll() { fetch('/health', {cache: 'no-store'}).then(r => r.ok ? r.text() : '')"
              ".then(t => t.trim() === 'OK' ? location.replace(target) : setTimeout(poll, 500))"
              ".catch(() => setTimeout(poll, 500)); }\npoll();")
    text = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
            f"<p id='status'>{title}: starting the MLflow UI...</p><script>{script}</script></body></html>")
    return text.encode()


def serve_landing(host: str, port: int, page: bytes, opened: Callable[[str], None],
                  wait_s: float = LANDING_WAIT_S) -> bool:
    """Serve `page` on host:port, call `opened(url)` (a browser), and return once the page has run
    (True) or after `wait_s` (False); the port is free again on return."""

    seeded = threading.Event()

    class Landing(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path.startswith("/seeded"):
                seeded.set()
            body, code = ((page, 200) if self.path in ("/", "/index.html") else
                          (b"", 204) if self.path.startswith("/seeded") else (b"", 404))
            self.send_response(code)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((host, port), Landing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        opened(f"http://{_local(host)}:{port}/")
        return seeded.wait(wait_s)
    finally:
        server.shutdown()
        server.server_close()


def store_experiment(uri: str, name: str) -> Optional[dict]:
    """Experiment `name` of a local store as the REST API gives it ({experiment_id, tags: [{key,
    value}]}), read before `mlflow ui` starts; None when the store has none."""
    from mlflow import MlflowClient  # heavy: imported only when `ui` opens a browser

    try:
        exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    except Exception:  # a store MLflow cannot read: the UI itself will say so in its log
        return None
    if exp is None:
        return None
    return {"experiment_id": exp.experiment_id, "tags": [{"key": k, "value": v} for k, v in exp.tags.items()]}


def lookup_experiment(base: str, name: str, timeout_s: float = 5.0) -> Optional[dict]:
    """Experiment `name` on the server at `base` (REST get-by-name: experiment_id, tags, ...), None if
    it has none or cannot be asked."""
    url = f"{base.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name?" + urllib.parse.urlencode(
        {"experiment_name": name})
    try:
        with urllib.request.urlopen(_request(url), timeout=timeout_s) as r:
            exp = json.load(r)["experiment"]
            return exp if exp.get("experiment_id") else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def open_ui(study: Study, host: str = "127.0.0.1", port: int = 5000, browser: bool = True,
            out: Callable[[str], None] = print) -> int:
    """Show the study's experiment: print (and open) its URL on a server store, else start `mlflow ui`
    on the store and wait until Ctrl-C (or the UI exits). Returns an exit code."""
    if not study.tracking.enabled:
        raise StudyError(f"{study.source}: tracking.enabled is false: the study has no MLflow store to show")
    uri, name = store_uri(study), experiment_name(study)
    if is_server(uri):
        base = _strip_credentials(uri)
        url = experiment_url(base, lookup_experiment(uri, name))
        out(f"MLflow UI of study {study.name} (its tracking server): {url}")
        if browser:
            _browse(url)
        return 0
    _check_store(study, uri)
    _check_port(host, port)
    log_path = Path(study.study_dir).resolve() / "mlflow-ui.log"
    _stop_on_signals()
    landed = False
    if browser and _can_browse():  # issue 16: a new browser profile opens the grid, not the assistant
        exp = store_experiment(uri, name)
        page = landing_page(f"slm-scaling study {study.name}", first_visit_storage(exp),
                            runs_url("", exp and exp["experiment_id"]))
        landed = serve_landing(host, port, page, _browse)
    proc = start_ui(study, host, port, log_path)
    try:
        base = f"http://{_local(host)}:{port}"
        _wait_healthy(base, proc, log_path)
        exp = lookup_experiment(base, name)
        shared = experiment_url(base, exp)
        url = runs_url(base, exp and exp["experiment_id"]) if landed else shared
        out(f"MLflow UI of study {study.name}: {url}\n  store {uri}; log {log_path}; Ctrl-C stops it"
            + (f"\n  the study's view in any browser: {shared}" if shared != url else ""))
        if browser and not landed:
            _browse(url)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_ui(proc)


def start_ui(study: Study, host: str, port: int, log_path: Path) -> subprocess.Popen:
    """Start `mlflow ui` in its own session (so `stop_ui` ends its workers too), output to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(ui_command(study, host, port), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env={**os.environ, **ui_env()},
                                start_new_session=True)


def stop_ui(proc: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """SIGTERM the UI's process group, SIGKILL it after `timeout_s`."""
    if proc.poll() is None:
        _killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout_s)
    _killpg(proc.pid, signal.SIGKILL)  # workers that outlived their parent


def _stop_on_signals() -> None:
    """Ctrl-C, SIGTERM and SIGHUP all stop the UI (a shell's background job ignores SIGINT otherwise)."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            signal.signal(sig, stop)
        except ValueError:  # not the main thread
            pass


def _check_store(study: Study, uri: str) -> None:
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if not db.is_file():
            raise StudyError(f"{study.source}: no MLflow store at {db} yet; `launch.py submit` (or `sync`) "
                             "fills it as cells run")


def _check_port(host: str, port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is free
        try:
            s.bind((host, port))
        except OSError as e:
            raise StudyError(f"--port: {host}:{port} is not free ({e.strerror}); choose another port") from None


def _wait_healthy(base: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StudyError(f"mlflow ui exited with code {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise StudyError(f"mlflow ui did not answer {base}/health within {START_TIMEOUT_S:.0f} s; see {log_path}")


def _local(host: str) -> str:
    """Where a browser on this machine reaches a server bound to `host`."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _safe(uri: str) -> str:

    return redact_uri(uri)


def _strip_credentials(uri: str) -> str:
    parts = urllib.parse.urlsplit(_safe(uri))
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _request(url: str) -> urllib.request.Request:
    """A GET for `url`, with basic auth when the URL carries user:password (as MLflow's client does)."""
    parts = urllib.parse.urlsplit(url)
    req = urllib.request.Request(urllib.parse.urlunsplit(
        (parts.scheme, parts.netloc.rpartition("@")[2], parts.path, parts.query, parts.fragment)))
    if parts.username is not None:

        token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        req.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
    return req


def _can_browse() -> bool:
    """A graphical browser can open here (else Python would start a console browser that takes over
    the terminal)."""
    return bool(sys.platform == "darwin" or os.name == "nt" or os.environ.get("DISPLAY")
                or os.environ.get("WAYLAND_DISPLAY"))


def _browse(url: str) -> None:
    """Open `url` in a graphical browser; on a machine without a display do nothing."""

    if not _can_browse():
        return
    try:
        webbrowser.open(url)
    except Exception:  # no browser here: the printed URL is enough
        pass


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
