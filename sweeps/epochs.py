"""Epochs of each stream a cell would see at its budget and mix (issue 22).

A stream with share s of a D-token budget and U unique tokens is read D s / U times. U comes from the
study's `data.unique_tokens` (a total over the streams, or per stream), else from the packed-data cache
when a training run has built it (`scaling.data.cached_unique_tokens`), else it is unknown ("?").
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from scaling.data import cached_unique_tokens, streams_for
from scaling.errors import InputError
from scaling.fmt import short_count
from scaling.spec import RunSpec
from scaling.vocab import build_vocab

from .study import Study

TOTAL = "all"   # the stream name of a declared total: one figure for all streams together


@dataclass
class CellEpochs:
    """Per stream (or TOTAL): unique tokens and epochs at the cell's budget; None where unknown."""
    unique_tokens: dict[str, Optional[float]]
    epochs: dict[str, Optional[float]]
    source: dict[str, str]   # stream -> "declared", "cache" or "unknown"

    @property
    def max(self) -> Optional[float]:
        known = [e for e in self.epochs.values() if e is not None]
        return max(known) if known else None

    def text(self) -> str:
        """`2.3` for a total, `t0.41 i1.1 s2.3` per stream, `?` where unknown."""
        if TOTAL in self.epochs:
            return _num(self.epochs[TOTAL])
        return " ".join(f"{s[0]}{_num(e)}" for s, e in self.epochs.items())


def _num(e: Optional[float]) -> str:
    return "?" if e is None else f"{e:.3g}"


class EpochCounter:
    """Cell epochs for one study; reads each packed-data cache at most once."""

    def __init__(self, study: Study):
        self.study = study
        self._cache: dict[tuple, Optional[dict[str, int]]] = {}

    def _cached(self, c: RunSpec) -> Optional[dict[str, int]]:
        root = Path(c.data.cache_dir) if c.data.cache_dir else self.study.study_dir / "cache"
        if not root.is_dir() or not all(Path(k.path).exists() for k in c.data.corpora):
            return None  # nothing built yet (and no tokenizer to load for it)
        sig = (c.setup, c.vocab_rows, c.tokenizer, c.training.context, c.eval.val_tokens, repr(c.data))
        if sig not in self._cache:
            try:
                vocab = build_vocab(c.setup, c.vocab_rows, c.data.units, c.tokenizer)
                self._cache[sig] = cached_unique_tokens(vocab, c.data, c.training.context, c.eval.val_tokens, root)
            except InputError:
                self._cache[sig] = None
        return self._cache[sig]

    def __call__(self, c: RunSpec) -> CellEpochs:
        shares = streams_for(c.setup, c.data)
        declared = c.data.unique_tokens
        if isinstance(declared, float):
            return CellEpochs({TOTAL: declared}, {TOTAL: c.tokens / declared}, {TOTAL: "declared"})
        declared = declared or {}
        cached = None if all(s in declared for s in shares) else self._cached(c)
        unique, epochs, source = {}, {}, {}
        for s, share in shares.items():
            if s in declared:
                unique[s], source[s] = declared[s], "declared"
            elif cached is not None and cached.get(s):
                unique[s], source[s] = cached[s], "cache"
            else:
                unique[s], source[s] = None, "unknown"
            epochs[s] = None if unique[s] is None else c.tokens * share / unique[s]
        return CellEpochs(unique, epochs, source)


def epochs_note(study: Study, epochs: list[CellEpochs]) -> str:
    """The lines under the plan table: where the figures come from and the cells past the warning."""
    sources = {v for e in epochs for v in e.source.values()}
    u = study.data.unique_tokens
    if isinstance(u, float):
        where = f"data.unique_tokens ({short_count(u)} in total over the streams)"
    else:
        parts = []
        if "declared" in sources:
            parts.append("data.unique_tokens")
        if "cache" in sources:
            parts.append("the packed-data cache")
        where = " and ".join(parts) or "nowhere yet"
    lines = [f"epochs: passes over each stream's unique tokens at the cell's budget and mix (t text, "
             f"i interleaved, s speech), from {where}"]
    if "unknown" in sources:
        lines.append("  ?: unknown until data.unique_tokens is declared or a training run builds the cache")
    warn = study.data.warn_epochs
    over = [e.max for e in epochs if e.max is not None and e.max > warn]
    if over:
        lines.append(f"WARNING: {len(over)} of {len(epochs)} cells repeat a stream more than {warn:g} times "
                     f"(data.warn_epochs; up to {max(over):.3g} epochs): repeated tokens are worth less than "
                     "fresh ones (Muennighoff et al. 2023), so fit those cells with `fit --data-constrained`")
    return "\n".join(lines)
