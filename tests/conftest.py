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


# modules whose tests drive the one test Slurm (start.sh, its partition limits, its queue): they run on
# one worker, one after another; and test_tune's Slurm test
SLURM_MODULES = {"test_dispatch_slurm", "test_slurm_cluster"}
SLURM_TESTS = {"test_tune_through_slurm"}
# the longest units first (minutes on 2 cores), so no long one starts last; the rest in file order
LONGEST_FIRST = ["slurm", "test_train", "test_dispatch_local", "test_sharded", "test_textlm_gguf", "test_tune",
                 "test_dashboard", "test_train_tracking", "test_demo", "test_cli", "test_lm_step", "test_report"]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core, at least 2 (the suite waits on subprocesses and servers about a
    third of its time), at most 4 (each worker trains cells that use the cores too)."""
    return max(2, min(4, os.cpu_count() or 1))


def _is_slurm(module: str, test: str) -> bool:
    return module in SLURM_MODULES or test.split("[")[0] in SLURM_TESTS


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Work units for the xdist workers: a module's tests stay together (module fixtures: servers,
    trained studies), and all Slurm tests form one unit, so two of them never share the cluster."""
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # keep the collection's order (longest first), not by test count

    class ModulesSlurmTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path, _, test = nodeid.partition("::")
            return "slurm" if _is_slurm(Path(path).stem, test) else path

    return ModulesSlurmTogether(config, log)


def _unit(item) -> str:
    module = Path(item.nodeid.split("::")[0]).stem
    return "slurm" if _is_slurm(module, item.name) else module


def pytest_collection_modifyitems(session, config, items):
    """The longest work units first (LONGEST_FIRST), the Slurm one at their head."""
    rank = {unit: i for i, unit in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_unit(item), len(rank)))  # stable: file order otherwise


def pytest_sessionfinish(session, exitstatus):
    """In CI, stop the Slurm daemons the tests started so nothing outlives the run (in the xdist
    controller, or the single process: never in a worker while the others still run)."""
    if hasattr(session.config, "workerinput"):
        return
    if os.environ.get("CI") == "true":
        stop = ROOT / "scripts" / "slurm" / "stop.sh"
        if stop.exists() and os.geteuid() == 0:
            subprocess.run(["bash", str(stop)], capture_output=True, timeout=300)
