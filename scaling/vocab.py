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

from typing import Optional

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
