"""Run directories of a study's cells: created with spec.json and state.json before anything runs."""
from __future__ import annotations

from pathlib import Path

from scaling import rundir
from scaling.spec import RunSpec

from .study import Study, StudyError


def run_dir_of(study: Study, cell: RunSpec) -> Path:
    return study.study_dir / cell.key


def ensure_run_dir(study: Study, cell: RunSpec) -> Path:
    """The cell's run dir with its spec.json (written once; a changed spec under the same key is a bug)."""
    path = run_dir_of(study, cell)
    path.mkdir(parents=True, exist_ok=True)
    spec_path = path / "spec.json"
    spec = cell.to_json()
    if not spec_path.exists():
        rundir.write_json(spec_path, spec)
    else:
        old = rundir.read_json(spec_path)
        if old.get("tracking") != spec["tracking"]:  # where results are mirrored is not part of the key
            rundir.write_json(spec_path, {**old, "tracking": spec["tracking"]})
    if not (path / "state.json").exists():
        rundir.update_state(path, "PENDING", attempts=0, job_ids=[])
    return path


def select(cells: list[RunSpec], key: str) -> RunSpec:
    """The cell whose key is `key` or starts with it (unique)."""
    exact = [c for c in cells if c.key == key]
    found = exact or [c for c in cells if c.key.startswith(key)]
    if len(found) != 1:
        what = "no cell of the study matches" if not found else f"{len(found)} cells of the study match"
        raise StudyError(f"--cell {key}: {what}; run `plan` to list the keys")
    return found[0]
