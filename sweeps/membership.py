"""Which run directories under a study's directory are cells of this study file (the keys `expand`
gives): `report`, `recommend` and `status` consider those only; run dirs of other versions of the file
trained into the same root are named as "not in this study" and left out (`--all-cells` keeps them)."""
from __future__ import annotations

from typing import Optional

from common.rundir import cell_dirs
from scaling.errors import InputError
from scaling.spec import RunSpec

from .grid import expand
from .study import Study

SHOWN = 4  # keys named in the one-line note; the rest are counted


def other_run_dirs(study: Study, keys: set[str]) -> list[str]:
    """Names of run directories (holding spec.json) under the study dir whose key is not in `keys`."""
    return [p.name for p in cell_dirs(study.study_dir) if p.name not in keys]


def other_cells(study: Study, keys: set[str]) -> list[RunSpec]:
    """The specs of those run directories (for `status --all-cells`); an unreadable spec is skipped."""
    out = []
    for name in other_run_dirs(study, keys):
        try:
            out.append(RunSpec.load(study.study_dir / name / "spec.json"))
        except InputError:
            continue
    return out


def not_in_study_note(names: list[str]) -> str:
    """One line naming the run dirs left out, or '' when there are none."""
    if not names:
        return ""
    shown = ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
    return (f"not in this study: {len(names)} run dir(s) of other versions of the study file, left out "
            f"(--all-cells includes them): {shown}")


def select_cells(study: Study, all_cells: bool = False) -> tuple[list[RunSpec], Optional[set[str]], list[str]]:
    """(cells to show, keys to keep or None for all, names of run dirs left out) for the commands that
    read a study's run dirs."""
    cells = expand(study)
    keys = {c.key for c in cells}
    others = other_run_dirs(study, keys)
    if all_cells:
        return cells + other_cells(study, keys), None, []
    return cells, keys, others
