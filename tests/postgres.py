"""The project's private PostgreSQL (scripts/postgres/start.sh) for tests and benchmarks: a cluster in
a fresh folder that user `postgres` can reach, on a free port, stopped and removed at the end.

    with Postgres() as pg:
        MlflowServer(tmp, backend_store_uri=pg.uri, workers=4, env=pg.env)
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from mlflow_server import free_port

ROOT = Path(__file__).resolve().parents[1]
READY = "postgres ready: "


class Unavailable(RuntimeError):
    """The script cannot run here (not root, no packages and no apt-get): exit code 3."""


class Postgres:
    def __init__(self, data_dir: Optional[Path] = None, port: Optional[int] = None):
        # /tmp/pytest-of-root is private (0700): the server, run as postgres, could not reach it
        self._own = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="slm-pg-"))
        os.chmod(self.data_dir, 0o755)
        self.port = port or free_port()
        self.uri = ""                # postgresql+psycopg2://mlflow@127.0.0.1:PORT/mlflow: no password
        self.env: dict[str, str] = {}  # PGPASSFILE for the processes that connect

    def start(self) -> "Postgres":
        proc = subprocess.run(["bash", str(ROOT / "scripts/postgres/start.sh"), str(self.data_dir / "pg")],
                              capture_output=True, text=True, env={**os.environ, "PG_PORT": str(self.port)})
        if proc.returncode == 3:
            raise Unavailable(proc.stderr.strip())
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(READY)), None)
        if proc.returncode or line is None:
            raise RuntimeError(f"scripts/postgres/start.sh failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        uri, _, passfile = line[len(READY):].partition(" passfile=")
        # psycopg2 is the driver installed (SQLAlchemy 2.1 would look for psycopg 3 under postgresql://)
        self.uri = uri.strip().replace("postgresql://", "postgresql+psycopg2://", 1)
        self.env = {"PGPASSFILE": passfile.strip()}
        return self

    def stop(self) -> None:
        subprocess.run(["bash", str(ROOT / "scripts/postgres/stop.sh"), str(self.data_dir / "pg")],
                       capture_output=True)
        if self._own:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "Postgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
