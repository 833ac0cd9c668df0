"""Preflight of a study: every distinct input of its cells checked once (scaling.preflight) before
`plan`, `submit`, `tune` or `train` spends compute or writes anything."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from scaling.errors import InputError
from scaling.preflight import cell_inputs
from scaling.spec import RunSpec

from .grid import expand
from .study import Study, StudyError


# `tuned` settings stand-ins: no input depends on lr or batch size, and `tune` checks before tuned.json exists
UNTUNED = {"lr": 1.0, "batch_tokens": 1 << 30}


def _untuned(study: Study) -> Study:
    """The study with its `tuned` training settings (base and variants) replaced by UNTUNED."""
    training = dataclasses.replace(study.training, **{k: v for k, v in UNTUNED.items()
                                                      if getattr(study.training, k) == "tuned"})
    variants = {name: {path: (UNTUNED[path.split(".", 1)[1]] if value == "tuned" and path.startswith("training.")
                              and path.split(".", 1)[1] in UNTUNED else value) for path, value in over.items()}
                for name, over in study.grid.variants.items()}
    out = dataclasses.replace(study, training=training, grid=dataclasses.replace(study.grid, variants=variants))
    out.source = study.source  # not an init field: replace() drops it
    return out


def preflight(study: Study, cells: Optional[list[RunSpec]] = None) -> int:
    """Check the inputs of `cells` (default: every cell of the study, `tuned` settings or not), each
    distinct one once; raise StudyError (one line: study file, key path, file, what was wrong).
    Returns how many inputs were checked."""
    cells = expand(_untuned(study)) if cells is None else cells
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
