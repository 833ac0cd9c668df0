"""A real, light MLflow tracking server for tests: no job execution, by default one worker on a SQLite
store in a temporary folder, or any database (`backend_store_uri`, e.g. the project's PostgreSQL from
tests/postgres.py) with several workers. It can be stopped (or killed) and started again on the same
port and store, to test a server that goes away in the middle of a run."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Optional


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`with MlflowServer(tmp) as server: ... server.uri ...`. Starts `python -m mlflow server` from
    this interpreter's environment; `stop()` ends its whole process group, `start()` brings it back
    on the same port with the same store."""

    def __init__(self, root: Path, port: Optional[int] = None, start_timeout_s: float = 90.0,
                 backend_store_uri: Optional[str] = None, workers: int = 1, env: Optional[dict] = None,
                 command: Optional[list[str]] = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        # given to the server through its environment: a password in it stays off `ps`
        self.backend_store_uri = backend_store_uri or f"sqlite:///{self.root.resolve()}/mlflow.db"
        self.workers = workers
        self.env = dict(env or {})
        self._command = command  # another launcher of the server (e.g. `launch.py tracking-server`)
        self.start_timeout_s = start_timeout_s
        self.log_path = self.root / "server.log"
        self._proc: Optional[subprocess.Popen] = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self._command:
            return list(self._command)
        return [sys.executable, "-m", "mlflow", "server",
                "--artifacts-destination", str(self.root.resolve() / "artifacts"),
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers)]

    def start(self) -> "MlflowServer":
        """Start the server and return once `/health` answers; raises RuntimeError with the log's tail
        if it exits or does not answer within `start_timeout_s`."""
        if self.running():
            return self
        env = {**os.environ, **self.env,
               **({} if self._command else {"MLFLOW_BACKEND_STORE_URI": self.backend_store_uri}),
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",   # else 15 processes and ~30 s to start
               "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
               "MLFLOW_DISABLE_TELEMETRY": "true"}
        with open(self.log_path, "ab") as log:
            # own session: stop() can end the server and its workers together
            self._proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._fail(f"exited with code {self._proc.returncode}")
            if self.healthy():
                return self
            time.sleep(0.25)
        self.stop()
        self._fail(f"did not answer {self.uri}/health within {self.start_timeout_s:.0f} s")

    def healthy(self) -> bool:
        """True if `GET /health` answers 200 now."""
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the server's whole process group at once (a crash, not a shutdown)."""
        if self._proc is not None:
            self._signal_group(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
            self._proc = None

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after `timeout_s`; returns once the port is
        no longer served."""
        if self._proc is None:
            return
        pgid = self._proc.pid  # start_new_session: the server leads its own group
        self._signal_group(pgid, signal.SIGTERM)
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._signal_group(pgid, signal.SIGKILL)
            self._proc.wait(timeout=timeout_s)
        self._signal_group(pgid, signal.SIGKILL)  # workers that outlived their parent
        self._proc = None
        deadline = time.monotonic() + timeout_s
        while self.healthy() and time.monotonic() < deadline:
            time.sleep(0.1)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _fail(self, why: str) -> None:
        raise RuntimeError(f"mlflow server {why}; log {self.log_path}:\n{self.log_tail()}")

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> "MlflowServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
