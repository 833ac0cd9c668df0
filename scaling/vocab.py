"""The speech-unit vocabulary: token strings, and how many embedding rows a cell's model has.

Row policy (`resize`), stated because it changes the parameter count:
- `append` (default): keep every row of the base embedding (Qwen2.5's padding rows included) and add
  one row per new token: units + `<speech>` + `<text>`.
- `tokenizer`: SlamKit's choice: resize to len(tokenizer) after adding the new tokens (Qwen2.5-0.5B:
  151,665 + 502 = 152,167 rows, fewer than 151,936 + 502).
Either may then be padded up to a multiple (`pad_to`, e.g. 64 for tensor-core friendly shapes).
A textless cell has a vocabulary of its own: the units plus two specials (pad, and bos/eos), all new.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .errors import InputError

SPEECH_MARKER = "<speech>"
TEXT_MARKER = "<text>"
SETUPS = ("interleaved", "textless", "text")


def unit_token(i: int) -> str:
    return f"<Un{i}>"


def unit_tokens(units: int) -> list[str]:
    return [unit_token(i) for i in range(units)]


def _pad(rows: int, multiple: int) -> int:
    return -(-rows // multiple) * multiple


def vocab_rows(setup: str, base_rows: int, units: int, resize: str = "append", pad_to: int = 1,
               tokenizer_len: Optional[int] = None) -> tuple[int, int]:
    """(rows of the cell's embedding, rows it shares with the base model)."""
    if setup == "text":
        return base_rows, base_rows
    if setup == "textless":
        return _pad(units + 2, pad_to), 0
    if setup != "interleaved":
        raise ValueError(f"unknown setup {setup!r}")
    if resize == "append":
        rows = base_rows + units + 2
    elif resize == "tokenizer":
        if tokenizer_len is None:
            raise InputError("data.vocab_resize: 'tokenizer' needs the tokenizer length of this member; "
                             "give the family a `tokenizer_len` or use 'append'")
        rows = tokenizer_len + units + 2
    else:
        raise ValueError(f"unknown resize policy {resize!r}")
    rows = _pad(rows, pad_to)
    return rows, min(rows, base_rows)


@dataclass
class SpeechVocab:
    """Token ids of one cell: the family's tokenizer plus units and markers, or a units-only vocabulary.

    Special ids come from the tokenizer (never hard-coded: for Qwen2.5 and Llama-3 id 0 is a real token).
    Unit ids are contiguous: <Un i> = unit_base + i.
    """
    setup: str
    rows: int
    n_units: int
    unit_base: Optional[int]
    speech_id: Optional[int]
    text_id: Optional[int]
    eos_id: int
    pad_id: int
    bos_id: Optional[int]
    tokenizer: Any = None          # transformers tokenizer (None for textless)

    def encode_text(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise ValueError("a textless vocabulary has no text")
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def units(self, units) -> list[int]:
        if self.unit_base is None:
            raise ValueError("a text-only vocabulary has no speech units")
        return [self.unit_base + int(u) for u in units]

    def modality_of(self, ids):
        """Per-token modality codes (numpy array): 0 text, 1 speech unit, 2 marker/special."""

        ids = np.asarray(ids)
        out = np.zeros(ids.shape, dtype=np.int8)
        if self.unit_base is not None:
            out[(ids >= self.unit_base) & (ids < self.unit_base + self.n_units)] = 1
        for special in (self.speech_id, self.text_id, self.eos_id, self.bos_id):
            if special is not None:
                out[ids == special] = 2
        return out

    def save(self, folder) -> None:
        """Write the extended tokenizer (an HF folder) or the textless id map."""

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(folder))
        (folder / "speech_vocab.json").write_text(json.dumps({
            k: getattr(self, k) for k in ("setup", "rows", "n_units", "unit_base", "speech_id", "text_id",
                                          "eos_id", "pad_id", "bos_id")}, indent=1))


def build_vocab(setup: str, rows: int, n_units: int, tokenizer_source: Optional[str] = None) -> SpeechVocab:
    """The cell's vocabulary. `tokenizer_source`: HF id or local folder (interleaved and text setups)."""
    if setup == "textless":
        # Units 0..K-1, then eos (also the sequence separator) and pad: K + 2 rows, as counted by plan.
        return SpeechVocab(setup, rows, n_units, 0, None, None, eos_id=n_units, pad_id=n_units + 1,
                           bos_id=None)
    if tokenizer_source is None:
        raise InputError(f"setup {setup}: a tokenizer is needed; give the family a `tokenizer` "
                         "(an HF id or a local folder)")
    from transformers import AutoTokenizer  # heavy: transformers only when a model/tokenizer is built

    try:
        tok = AutoTokenizer.from_pretrained(tokenizer_source)
    except (OSError, ValueError) as e:
        raise InputError(f"tokenizer {tokenizer_source!r}: cannot load it ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if tok.eos_token_id is None:
        raise InputError(f"tokenizer {tokenizer_source!r}: has no eos token; expected one to separate documents")
    unit_base = speech_id = text_id = None
    if setup == "interleaved":
        new = unit_tokens(n_units) + [SPEECH_MARKER, TEXT_MARKER]
        tok.add_tokens(new, special_tokens=True)
        ids = tok.convert_tokens_to_ids(new)
        unit_base = ids[0]
        if ids[:n_units] != list(range(unit_base, unit_base + n_units)):
            raise InputError(f"tokenizer {tokenizer_source!r}: already holds some <UnN> tokens out of order")
        speech_id, text_id = ids[n_units], ids[n_units + 1]
    if len(tok) > rows:
        raise InputError(f"tokenizer {tokenizer_source!r}: {len(tok)} tokens do not fit the model's {rows} "
                         "embedding rows; expected a tokenizer no larger than the config's vocab_size")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return SpeechVocab(setup, rows, n_units if setup == "interleaved" else 0, unit_base, speech_id, text_id,
                       eos_id=tok.eos_token_id, pad_id=pad, bos_id=tok.bos_token_id, tokenizer=tok)
