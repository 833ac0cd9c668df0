"""The run directory: the source of truth of one cell (see README, 'Run directory').

Writes are atomic (temporary file + rename), so a kill at any moment leaves either the old or the new
file; metrics.jsonl is append-only and trimmed back to the last checkpoint on resume.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Optional

STATES = ("PENDING", "RUNNING", "DONE", "FAILED")


def write_json(path: Path, data: Any) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "as_dict"):
        return obj.as_dict()
    return str(obj)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default


def read_state(run_dir: Path) -> dict:
    return read_json(Path(run_dir) / "state.json", {"state": "PENDING", "attempts": 0, "job_ids": []})


def update_state(run_dir: Path, state: Optional[str] = None, **fields: Any) -> dict:
    """Merge `fields` (and `state`) into state.json; returns the new state."""
    current = read_state(run_dir)
    if state is not None:
        assert state in STATES, state
        current["state"] = state
    current.update(fields)
    current["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(Path(run_dir) / "state.json", current)
    return current


def append_metrics(run_dir: Path, line: dict) -> None:
    with open(Path(run_dir) / "metrics.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            break  # a line cut by a kill: everything after it is gone too
    return out


def trim_metrics(run_dir: Path, last_step: int) -> None:
    """Drop metric lines logged after the checkpoint a resumed run restarts from."""
    keep = [m for m in read_metrics(run_dir) if m.get("step", 0) <= last_step]
    path = Path(run_dir) / "metrics.jsonl"
    tmp = path.with_name(".metrics.jsonl.tmp")
    tmp.write_text("".join(json.dumps(m) + "\n" for m in keep))
    os.replace(tmp, path)
