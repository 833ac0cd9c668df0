"""`<study dir>/proposed.yaml`: cells added to a study's grid by `launch.py propose --write`.

The one owner of that file. `expand` (hence `plan`, `submit`, `status`) adds its cells to the grid's,
keyed exactly as grid cells are (a proposed cell equal to a grid cell is the same cell). Schema:

    cells:
      - {family: ladder, member: d32, setup: interleaved, variant: null, tokens: 1234567, why: "..."}

`family`, `member` (the member's name as `plan` prints it), `setup` and `tokens` are required;
`variant` names a grid variant (null: the base study); `why` is a note. Unknown keys, or a cell
that names no family / member / setup / variant of the study, are one-line errors naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import yaml

from common.rundir import write_text
from scaling.errors import InputError
from scaling.typed_config import bounded, from_dict, to_dict

from .study import Study, StudyError

EXTRA_NAME = "proposed.yaml"
HEADER = ("# Cells added by `launch.py propose --write`. `plan` and `submit` add them to the study's grid;\n"
          "# delete an entry (or this file) to drop it. Keys: family, member, setup, variant, tokens, why.\n")


@dataclass
class ExtraCell:
    family: str
    member: str
    setup: Literal["interleaved", "textless", "text"]
    tokens: int = bounded(min=1)
    variant: Optional[str] = None
    why: Optional[str] = None

    @property
    def where(self) -> tuple:
        return (self.family, self.member, self.setup, self.variant)


@dataclass
class ExtraFile:
    cells: list[ExtraCell] = field(default_factory=list)


def extra_path(study: Study):
    return study.study_dir / EXTRA_NAME


def load_extra(study: Study) -> list[ExtraCell]:
    """The proposed cells of the study (none when the file does not exist)."""
    path = extra_path(study)
    if not path.exists():
        return []
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise StudyError(f"{path}: cannot read the proposed cells ({getattr(e, 'problem', None) or e})") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise StudyError(f"{path}: expected a mapping with key cells, got {type(data).__name__}")
    try:
        return from_dict(ExtraFile, data).cells
    except InputError as e:
        raise StudyError(f"{path}: {e}") from None


def write_extra(study: Study, cells: list[ExtraCell]) -> list[ExtraCell]:
    """Add ``cells`` to the file (atomically; an entry already there is kept once); returns all entries."""
    old = load_extra(study)
    seen = {(c.where, c.tokens) for c in old}
    new = old + [c for c in cells if (c.where, c.tokens) not in seen]
    extra_path(study).parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump({"cells": [to_dict(c) for c in new]}, sort_keys=False)
    write_text(extra_path(study), HEADER + body)
    return new
