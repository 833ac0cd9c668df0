import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no machine here reaches a model hub
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python launch.py ARGS` as a user runs it."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, env=full_env, timeout=300)


@pytest.fixture
def cli():
    return run_cli


def pytest_sessionfinish(session, exitstatus):
    """In CI, stop the Slurm daemons the tests started so nothing outlives the run."""
    if os.environ.get("CI") == "true":
        stop = ROOT / "scripts" / "slurm" / "stop.sh"
        if stop.exists() and os.geteuid() == 0:
            subprocess.run(["bash", str(stop)], capture_output=True, timeout=300)
