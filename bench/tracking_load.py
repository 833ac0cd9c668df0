"""Load on the MLflow mirror: N concurrent cells logging to `launch.py tracking-server`, the server
killed (SIGKILL, whole process group) and restarted once in the middle, then `sync`.

Each cell is its own process doing a cell's real logging path: a run dir with spec.json, a line
appended to metrics.jsonl through `scaling.rundir` exactly as `scaling/train.py` does, then
`Mirror.log_record(line)`, every ~`--interval` seconds for `--seconds`, then `Mirror.finish` with a
result. The children are forked from this process after it imported MLflow (as 64 jobs on 64 nodes
would each have it imported; here it keeps 64 imports off a 2-core machine). Run on the project's
PostgreSQL (default backend, `--workers` server workers), then on the SQLite server (`--sqlite`, one
worker) for comparison. Counts come from the server afterwards: runs per cell key, and every
(metric, step) of every metrics.jsonl against the run's metric history.

    python bench/tracking_load.py [--cells 64] [--seconds 60] [--interval 0.75] [--workers 4] [--no-sqlite]

Ends by printing one JSON line (the PostgreSQL figures, then the same under `sqlite_*`).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run at" line per cell

from mlflow import MlflowClient  # noqa: E402  (imported once here, shared by the forked cells)
from mlflow.entities import Metric, Param, RunTag  # noqa: E402,F401

from mlflow_server import MlflowServer, free_port  # noqa: E402
from common import rundir  # noqa: E402
from common.rundir import RunDir  # noqa: E402
from scaling.tracking import Mirror, final_metrics, read_record, spec_tags, sync  # noqa: E402
from sweeps.tracking_server import stop_postgres  # noqa: E402

STUDY_FILE = ROOT / "examples" / "tiny.yaml"
EXPERIMENT = "tracking-load"
TARGET_STALL_S = 0.05


def cell_spec(i: int) -> dict:
    return {"key": f"load-m{i:02d}-4M-{i:08x}", "study": EXPERIMENT, "family": "load", "member": f"m{i:02d}",
            "setup": "interleaved", "init": "random", "tokens": 4_000_000, "flops": 6.0e15,
            "params": {"total": 1_000_000 + i, "nonembedding": 800_000 + i},
            "training": {"lr": 3e-4, "batch_tokens": 8192, "log_every": 10}}


def run_cell(run_dir: str, uri: str, seconds: float, interval: float, seed: int) -> None:
    """One cell's logging path, in its own process; writes its figures to <run_dir>/bench.json."""
    rng = random.Random(seed)
    run_dir = Path(run_dir)
    spec = RunDir(run_dir).spec()
    lease = RunDir(run_dir).lease()   # what a training process holds: it alone writes metrics and result
    mirror = Mirror(run_dir, uri, EXPERIMENT, spec["key"], spec_tags(spec), spec,
                    experiment_description="tracking load benchmark")
    t0 = time.monotonic()
    started = mirror.start()
    start_s = time.monotonic() - t0
    stalls, step, tokens = [], 0, 0
    end = time.monotonic() + seconds
    time.sleep(rng.uniform(0, interval))  # cells do not log in lockstep
    while time.monotonic() < end:
        step += 10
        tokens += 81920
        line = {"step": step, "tokens": tokens, "flops": 6.0e6 * tokens, "loss": 8.0 / (1 + step) ** 0.3,
                "lr": 3e-4, "tokens_per_second": rng.uniform(4e4, 6e4), "tokens_text": tokens // 2,
                "tokens_speech": tokens - tokens // 2, "grad_norm": rng.uniform(0.5, 2.0), "time": time.time()}
        lease.append_metrics(line)
        t = time.perf_counter()
        mirror.log_record(line)
        stalls.append(time.perf_counter() - t)
        time.sleep(interval * rng.uniform(0.8, 1.2))
    result = {"key": spec["key"], "tokens": tokens, "loss": line["loss"], "steps": step}
    lease.write_result(result)
    t = time.monotonic()
    finished = mirror.finish("FINISHED", result)
    rundir.write_json(run_dir / "bench.json", {
        "started": started, "start_s": start_s, "finished": finished, "finish_s": time.monotonic() - t,
        "lines": len(stalls), "max_stall_s": max(stalls), "max_stall_line": stalls.index(max(stalls)),
        "stalls": sorted(stalls)[-50:]})
    os._exit(0)  # the sender is stopped; skip interpreter teardown of 64 forks


def expected_points(run_dir: Path) -> set[tuple[str, int]]:
    out = set()
    for line in rundir.read_metrics(run_dir):
        out |= {(k, int(line["tokens"])) for k, v in line.items() if k not in ("tokens", "time")}
    finals, step = final_metrics(RunDir(run_dir).result())
    return out | {(k, step) for k in finals}


def count(uri: str, run_dirs: list[Path]) -> dict:
    """Runs and points the server holds for the cells of `run_dirs`."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    keys = {RunDir(d).spec()["key"] for d in run_dirs}
    if exp is None:
        points = sum(len(expected_points(d)) for d in run_dirs)
        return {"runs_expected": len(keys), "runs_present": 0, "runs_duplicated": 0, "runs_deleted_after_race": 0,
                "runs_finished": 0, "points_expected": points, "points_present": 0, "points_duplicated": 0,
                "points_missing": points}
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], "tags.kind = 'cell'", max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    by_key = Counter(r.data.tags.get("key") for r in runs)
    deleted = client.search_runs([exp.experiment_id], "tags.kind = 'cell'", run_view_type=2, max_results=1000)
    out = {"runs_expected": len(keys), "runs_present": sum(1 for k in keys if by_key[k] >= 1),
           "runs_duplicated": sum(max(n - 1, 0) for n in by_key.values()), "runs_deleted_after_race": len(deleted),
           "runs_finished": sum(1 for r in runs if r.info.status == "FINISHED"),
           "points_expected": 0, "points_present": 0, "points_duplicated": 0, "points_missing": 0}
    for d in run_dirs:
        want = expected_points(d)
        run_id = read_record(d).get("run_id")
        if not run_id:
            out["points_expected"] += len(want)
            out["points_missing"] += len(want)
            continue
        got = [(k, m.step) for k in {k for k, _ in want} for m in client.get_metric_history(run_id, k)]
        out["points_expected"] += len(want)
        out["points_present"] += len(want & set(got))
        out["points_duplicated"] += len(got) - len(set(got))
        out["points_missing"] += len(want - set(got))
    return out


def phase(root: Path, cells: int, seconds: float, interval: float, workers: int, sqlite: bool,
          restart_at: float, sync_budget_s: float = 180.0) -> dict:
    port, pg_port = free_port(), free_port()
    command = [sys.executable, str(ROOT / "launch.py"), "tracking-server", str(STUDY_FILE), "--root", str(root),
               "--port", str(port), "--workers", str(1 if sqlite else workers)]
    command += ["--sqlite"] if sqlite else ["--postgres-port", str(pg_port)]
    server = MlflowServer(root / "server", port=port, command=command, start_timeout_s=300)
    t = time.monotonic()
    server.start()
    first_start_s = time.monotonic() - t
    study_dir = root / "tiny"
    run_dirs = []
    for i in range(cells):
        spec = cell_spec(i)
        d = study_dir / spec["key"]
        RunDir(d).create(spec)
        run_dirs.append(d)
    ctx = mp.get_context("fork")  # no threads in this process yet: forking is safe
    procs = [ctx.Process(target=run_cell, args=(str(d), server.uri, seconds, interval, i)) for i, d in
             enumerate(run_dirs)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    # this process's own calls (sync, counting) may wait longer than a cell's 5 s; set after the fork
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"], os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "30", "2"
    forked_s = time.monotonic() - t0
    time.sleep(max(restart_at * seconds, 0))
    server.kill()  # SIGKILL the server's whole process group: a crash, not a shutdown
    killed_at = time.monotonic() - t0
    t = time.monotonic()
    server.start()
    restart_s = time.monotonic() - t
    for p in procs:
        p.join(timeout=max(t0 + seconds * 3 + 120 - time.monotonic(), 1))
    cells_s = time.monotonic() - t0
    hung = sum(1 for p in procs if p.is_alive())
    for p in procs:
        if p.is_alive():
            p.kill()
    t = time.monotonic()
    written, sync_failed = 0, 0
    for d in run_dirs:
        if time.monotonic() - t > sync_budget_s:
            sync_failed += 1
            continue
        try:
            written += sync(d)
        except Exception as e:  # a hung or overloaded server: counted, not fatal to the benchmark
            sync_failed += 1
            print(f"sync {d.name}: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
    sync_s = time.monotonic() - t
    server.stop()
    stats = [rundir.read_json(d / "bench.json", {}) for d in run_dirs]
    stalls = sorted(s for st in stats for s in st.get("stalls", []))
    # counted straight from the store (the server may be the thing that failed)
    store = f"sqlite:///{study_dir.resolve()}/mlflow-server.db" if sqlite else \
        f"postgresql+psycopg2://mlflow@127.0.0.1:{pg_port}/mlflow"
    if not sqlite:
        os.environ["PGPASSFILE"] = str(study_dir / "postgres" / "pgpass")
    out = count(store, run_dirs)
    out.update({
        "max_log_stall_s": round(max((st.get("max_stall_s", 0) for st in stats), default=0), 6),
        "p99_log_stall_s": round(stalls[int(0.99 * (len(stalls) - 1))], 6) if stalls else None,
        "log_calls_over_target": sum(1 for x in stalls if x >= TARGET_STALL_S),
        "lines_logged": sum(st.get("lines", 0) for st in stats), "cells_hung": hung, "fork_s": round(forked_s, 1),
        "starts_ok": sum(1 for st in stats if st.get("started")),
        "finishes_ok": sum(1 for st in stats if st.get("finished")),
        "max_start_s": round(max((st.get("start_s", 0) for st in stats), default=0), 2),
        "max_finish_s": round(max((st.get("finish_s", 0) for st in stats), default=0), 2),
        "server_first_start_s": round(first_start_s, 1), "server_killed_at_s": round(killed_at, 1),
        "server_restart_s": round(restart_s, 1), "cells_wall_s": round(cells_s, 1),
        "sync_points_written": written, "sync_failed": sync_failed, "sync_s": round(sync_s, 1)})
    print(("sqlite " if sqlite else "postgres ") + json.dumps(out), file=sys.stderr, flush=True)
    return out


def run_phase(out: Path, *args) -> None:
    rundir.write_json(out, phase(*args))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=60.0, help="how long each cell logs")
    ap.add_argument("--interval", type=float, default=0.75, help="seconds between a cell's lines (jittered)")
    ap.add_argument("--workers", type=int, default=4, help="server workers on PostgreSQL")
    ap.add_argument("--restart-at", type=float, default=0.25, help="kill the server at this fraction of --seconds")
    ap.add_argument("--no-sqlite", action="store_true", help="skip the SQLite comparison")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders")
    args = ap.parse_args()
    out = {"cells": args.cells, "seconds": args.seconds, "interval_s": args.interval, "workers": args.workers,
           "metrics_per_line": 8}
    for sqlite in ([False] if args.no_sqlite else [False, True]):
        # not under a private folder: the PostgreSQL server runs as user postgres
        root = Path(tempfile.mkdtemp(prefix="slm-trackload-"))
        os.chmod(root, 0o755)
        try:
            # each phase in its own fork of this thread-free process: the cells it forks in turn never
            # inherit threads that an earlier phase's MLflow calls started
            proc = mp.get_context("fork").Process(target=run_phase, args=(
                root / "figures.json", root, args.cells, args.seconds, args.interval, args.workers, sqlite,
                args.restart_at))
            proc.start()
            proc.join()
            figures = rundir.read_json(root / "figures.json", {"error": f"phase exited {proc.exitcode}"})
        finally:
            if not sqlite:
                if (root / "tiny" / "postgres").exists():
                    stop_postgres(root / "tiny" / "postgres")
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
        out.update({(f"sqlite_{k}" if sqlite else k): v for k, v in figures.items()})
    out.update({"target_max_log_stall_s": TARGET_STALL_S, "target_points_missing": 0, "target_duplicates": 0})
    out["ok"] = ("error" not in out and out["runs_present"] == out["runs_expected"] and out["runs_duplicated"] == 0
                 and out["points_missing"] == 0 and out["points_duplicated"] == 0
                 and out["max_log_stall_s"] < TARGET_STALL_S)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
