"""Preflight of a study: every distinct input of its cells checked once (scaling.preflight) before
`plan`, `submit`, `tune` or `train` spends compute or writes anything."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from scaling.errors import InputError
from scaling.preflight import cell_inputs
from scaling.spec import RunSpec

from .grid import expand
from .study import Study, StudyError


def preflight(study: Study, cells: Optional[list[RunSpec]] = None) -> int:
    """Check the inputs of `cells` (default: every cell of the study), each distinct one once; raise
    StudyError (one line: study file, key path, file, what was wrong). Returns how many were checked."""
    cells = expand(study) if cells is None else cells
    base_dir = Path(study.source).parent if study.source else None
    seen = set()
    for cell in cells:
        for item in cell_inputs(cell, base_dir):
            if item in seen:
                continue
            seen.add(item)
            try:
                item.check()
            except InputError as e:
                raise StudyError(f"{study.source}: {e}") from None
    return len(seen)
