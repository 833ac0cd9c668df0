"""Run directories of a study's cells: created with spec.json and state.json before anything runs."""
from __future__ import annotations

from pathlib import Path

from common.rundir import RunDir
from scaling.spec import RunSpec

from .study import Study, StudyError


def run_dir_of(study: Study, cell: RunSpec) -> Path:
    return study.study_dir / cell.key


def ensure_run_dir(study: Study, cell: RunSpec) -> Path:
    """The cell's run dir with its spec.json (written once; a changed spec under the same key is a bug)."""
    return RunDir(run_dir_of(study, cell)).create(cell.to_json()).path


def select(cells: list[RunSpec], key: str) -> RunSpec:
    """The cell whose key is `key` or starts with it (unique)."""
    exact = [c for c in cells if c.key == key]
    found = exact or [c for c in cells if c.key.startswith(key)]
    if len(found) != 1:
        what = "no cell of the study matches" if not found else f"{len(found)} cells of the study match"
        raise StudyError(f"--cell {key}: {what}; run `plan` to list the keys")
    return found[0]
