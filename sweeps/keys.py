"""Stable cell keys: `<family>-<member>-<tokens>-<hash8>`.

The hash covers every field that changes a run's result (architecture, weights as named in the study,
init, setup, vocabulary, token budget, data, training and evaluation settings) and nothing that does not
(study name, executor, tracking), so the same study file gives the same keys on any machine. A cell
hashes only the data settings it reads (`read_data`): a textless twin never reads the text corpora,
word alignments, stream mix or interleaving, so an ablation of those does not copy it.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from scaling.fmt import short_count


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


TEXTLESS_UNREAD = ("mix", "interleave", "vocab_resize")  # scaling.data / scaling.vocab: speech only, own vocab


def read_data(setup: str, data: dict[str, Any]) -> dict[str, Any]:
    """The data settings (`asdict(DataConfig)`) a cell of `setup` reads, for its key.

    `use_synthetic` matters only when some corpus is synthetic (else it is left at its default, so a
    variant that turns it off changes no key). A textless cell trains on the speech of unit and token
    corpora with a vocabulary of its own: text corpora, side-cars, mix, interleaving and resizing are
    dropped. Other setups hash every data setting (their keys are unchanged)."""
    out = dict(data)
    corpora = out["corpora"]
    if setup == "textless":
        for name in TEXTLESS_UNREAD:
            out.pop(name, None)
        corpora = [{k: v for k, v in c.items() if k != "alignments"} for c in corpora if c["format"] != "text"]
        out["corpora"] = corpora
    if not any(c.get("synthetic") for c in corpora):
        out["use_synthetic"] = True
    return out


class KeyHasher:
    """Hashes per-cell fields on top of a prefix shared by many cells (fast for large grids)."""

    def __init__(self, shared: Any):
        self._base = hashlib.sha256(canonical(shared))

    def key(self, family: str, member: str, tokens: int, fields: Any) -> str:
        h = self._base.copy()
        h.update(canonical(fields))
        return f"{family}-{member}-{short_count(tokens)}-{h.hexdigest()[:8]}"

    def trunk_key(self, family: str, member: str, fields: Any) -> str:
        """The WSD trunk shared by the cells whose fields differ only in their token budget."""
        h = self._base.copy()
        h.update(canonical({k: v for k, v in fields.items() if k != "tokens"}))
        h.update(b"trunk")
        return f"trunk-{family}-{member}-{h.hexdigest()[:8]}"
