"""Pair manifests of the pairwise likelihood benchmarks (torch-free: `plan`'s preflight reads them too).

Manifest (JSONL), one pair per line: `{"id": str, "prompt": ITEM (optional), "positive": ITEM,
"negative": ITEM}` where ITEM is `{"units": [int, ...]}` (speech) or `{"text": str}`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import InputError


def _item(obj: Any, where: str, name: str, n_units: int) -> tuple[str, Any]:
    if not isinstance(obj, dict) or len(obj) != 1 or not ({"units", "text"} & set(obj)):
        raise InputError(f"{where}: field '{name}': expected {{\"units\": [...]}} or {{\"text\": \"...\"}}, "
                         f"got {json.dumps(obj)[:60]}")
    if "units" in obj:
        units = obj["units"]
        if (not isinstance(units, list) or not units
                or any(isinstance(u, bool) or not isinstance(u, int) or not 0 <= u < n_units for u in units)):
            raise InputError(f"{where}: field '{name}.units': expected a non-empty list of unit ids in "
                             f"[0, {n_units}), got {json.dumps(units)[:60]}")
        return "speech", units
    if not isinstance(obj["text"], str) or not obj["text"]:
        raise InputError(f"{where}: field '{name}.text': expected a non-empty string")
    return "text", obj["text"]


def read_pairs(path: str | Path, n_units: int) -> list[dict]:
    """Validated pairs of a manifest; a bad line is one error naming `file:line` and the field."""
    out, ids = [], set()
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise InputError(f"{path}: cannot read the pair manifest ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: invalid UTF-8; expected a JSONL pair manifest") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except ValueError:
            raise InputError(f"{where}: invalid JSON") from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: not a JSON object")
        pid = row.get("id")
        if not isinstance(pid, (str, int)) or isinstance(pid, bool):
            raise InputError(f"{where}: field 'id': expected a string")
        if pid in ids:
            raise InputError(f"{where}: field 'id': duplicate id {pid!r}")
        ids.add(pid)
        pair = {"id": pid}
        for name in ("prompt", "positive", "negative"):
            if name not in row:
                if name == "prompt":
                    continue
                raise InputError(f"{where}: field '{name}': missing")
            pair[name] = _item(row[name], where, name, n_units)
        out.append(pair)
    if not out:
        raise InputError(f"{path}: no pairs; expected JSONL rows {{\"id\", \"positive\", \"negative\"}}")
    return out
