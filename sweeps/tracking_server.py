"""`launch.py tracking-server`: an MLflow server with a database backend in the study dir, for jobs on a
cluster to log to over HTTP (many jobs must never write one SQLite file)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .study import Study


def server_command(study: Study, host: str = "127.0.0.1", port: int = 5000, workers: int = 1) -> list[str]:
    study_dir = Path(study.study_dir).resolve()
    study_dir.mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{study_dir / 'mlflow-server.db'}",
            "--artifacts-destination", str(study_dir / "mlartifacts"),
            "--host", host, "--port", str(port), "--workers", str(workers)]


def serve(study: Study, host: str = "127.0.0.1", port: int = 5000, workers: int = 1) -> None:
    """Replace this process with the server (Ctrl-C stops it)."""
    cmd = server_command(study, host, port, workers)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION",
                                                                              "false")}
    print(f"MLflow server for {study.name} on http://{host}:{port} (set tracking.uri to it); store "
          f"{cmd[cmd.index('--backend-store-uri') + 1]}", flush=True)
    os.execvpe(cmd[0], cmd, env)
