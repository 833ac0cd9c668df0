"""`launch.py tracking-server`: an MLflow server for a study's jobs to log to over HTTP.

Backends (many jobs must never write one SQLite file, least of all on a network disk):
- default: a private PostgreSQL cluster in `<study dir>/postgres` (or `--postgres-dir`), started by
  `scripts/postgres/start.sh` (Debian's PostgreSQL, installed when missing), password in a libpq
  passfile that only the server process is pointed at (`PGPASSFILE`);
- `--backend-store-uri URL`: any database MLflow takes (`postgresql://`, `mysql+pymysql://`, ...);
- `--sqlite`: the embedded single-file store in the study dir, for one machine (one worker).

The store URI goes to the server through its environment (`MLFLOW_BACKEND_STORE_URI`), never on a
command line that `ps` shows, and is printed only redacted.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from scaling.errors import InputError
from scaling.tracking import redact_uri

from .study import Study

REPO = Path(__file__).resolve().parents[1]
POSTGRES_START = REPO / "scripts" / "postgres" / "start.sh"
POSTGRES_STOP = REPO / "scripts" / "postgres" / "stop.sh"
READY = "postgres ready: "
DB_SCHEMES = ("postgresql", "mysql", "mssql", "sqlite")


def with_driver(uri: str) -> str:
    """A bare `postgresql://` URI pinned to psycopg2, the driver this project installs (SQLAlchemy 2.1
    would look for psycopg 3)."""
    return "postgresql+psycopg2://" + uri[len("postgresql://"):] if uri.startswith("postgresql://") else uri


def start_postgres(data_dir: Path, port: int = 5433) -> tuple[str, Path]:
    """Start (or find running) the project's PostgreSQL in `data_dir`; (URI without password,
    passfile path). Raises InputError with the script's one-line reason when it cannot run here."""
    proc = subprocess.run(["bash", str(POSTGRES_START), str(data_dir)], capture_output=True, text=True,
                          env={**os.environ, "PG_PORT": str(port)})
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(READY)), None)
    if proc.returncode != 0 or line is None:
        why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise InputError(f"tracking-server: PostgreSQL in {data_dir} did not start ({why}); "
                         "give --postgres-dir, --backend-store-uri URL or --sqlite")
    uri, _, passfile = line[len(READY):].partition(" passfile=")
    return uri.strip(), Path(passfile.strip())


def stop_postgres(data_dir: Path) -> None:
    subprocess.run(["bash", str(POSTGRES_STOP), str(data_dir)], check=True, capture_output=True)


def backend(study: Study, backend_store_uri: Optional[str] = None, sqlite: bool = False,
            postgres_dir: Optional[Path] = None, postgres_port: int = 5433) -> tuple[str, dict[str, str]]:
    """The store URI for `mlflow server` and the environment it needs (PGPASSFILE for our PostgreSQL)."""
    if backend_store_uri and sqlite:
        raise InputError("tracking-server: give either --backend-store-uri or --sqlite, not both")
    study_dir = Path(study.study_dir).resolve()
    if sqlite:
        study_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{study_dir / 'mlflow-server.db'}", {}
    if backend_store_uri:
        if backend_store_uri.split(":", 1)[0].split("+", 1)[0] not in DB_SCHEMES:
            raise InputError(f"tracking-server: --backend-store-uri {redact_uri(backend_store_uri)!r} is not a "
                             "database URL (expected postgresql://, mysql+pymysql://, mssql://, sqlite:///)")
        return with_driver(backend_store_uri), {}
    uri, passfile = start_postgres(Path(postgres_dir) if postgres_dir else study_dir / "postgres", postgres_port)
    return with_driver(uri), {"PGPASSFILE": str(passfile)}


def server_command(study: Study, host: str = "127.0.0.1", port: int = 5000, workers: int = 4) -> list[str]:
    """`mlflow server` for the study (its store URI comes through the environment, see `serve`)."""
    study_dir = Path(study.study_dir).resolve()
    study_dir.mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-m", "mlflow", "server",
            "--artifacts-destination", str(study_dir / "mlartifacts"),
            "--host", host, "--port", str(port), "--workers", str(workers)]


def serve(study: Study, host: str = "127.0.0.1", port: int = 5000, workers: int = 4,
          backend_store_uri: Optional[str] = None, sqlite: bool = False, postgres_dir: Optional[Path] = None,
          postgres_port: int = 5433) -> None:
    """Replace this process with the server (Ctrl-C stops it; our PostgreSQL keeps running:
    `scripts/postgres/stop.sh DIR` stops it)."""
    if workers < 1:
        raise InputError(f"tracking-server: --workers must be >= 1, got {workers}")
    store, extra_env = backend(study, backend_store_uri, sqlite, postgres_dir, postgres_port)
    if sqlite and workers > 1:
        workers = 1  # SQLite takes one writer: more workers only queue on its lock
    cmd = server_command(study, host, port, workers)
    env = {**os.environ, **extra_env, "MLFLOW_BACKEND_STORE_URI": store,
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")}
    print(f"MLflow server for {study.name} on http://{host}:{port} (set tracking.uri to it); store "
          f"{redact_uri(store)}, {workers} worker(s)", flush=True)
    os.execvpe(cmd[0], cmd, env)
