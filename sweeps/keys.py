"""Stable cell keys: `<family>-<member>-<tokens>-<hash8>`.

The hash covers every field that changes a run's result (architecture, weights as named in the study,
init, setup, vocabulary, token budget, data, training and evaluation settings) and nothing that does not
(study name, executor, tracking), so the same study file gives the same keys on any machine.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from scaling.fmt import short_count


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


class KeyHasher:
    """Hashes per-cell fields on top of a prefix shared by many cells (fast for large grids)."""

    def __init__(self, shared: Any):
        self._base = hashlib.sha256(canonical(shared))

    def key(self, family: str, member: str, tokens: int, fields: Any) -> str:
        h = self._base.copy()
        h.update(canonical(fields))
        return f"{family}-{member}-{short_count(tokens)}-{h.hexdigest()[:8]}"
