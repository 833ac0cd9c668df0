"""Corpus readers in SlamKit's formats that validate every row as they read it.

Formats (see /work/shared/facts/field-notes.md):
- unit rows (`features.jsonl`): `{"file_name", "units": [int, ...], "duration": [int, ...]}`;
- word-alignment side-cars: `{"file_name", "aligned_text": [[word, start_s, end_s], ...], "text"}`;
- token rows (`tokens.jsonl`): `{"file_name", "audio_repr"}`, one string of `<UnN>`, `<speech>`,
  `<text>` and raw text;
- plain text: `.jsonl` rows with a `text` field, or `.txt` documents.

Every bad row raises `InputError` with one line,
`<file>:<line>: field '<name>': expected <what>, got <short repr>` (or `not a JSON object`,
`invalid JSON: ...`). Lines are 1-based; blank lines are skipped. Fields a format does not name are
ignored.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from .errors import InputError
from .vocab import SPEECH_MARKER, TEXT_MARKER

FRAME_S = 0.04  # mhubert-25hz: one deduplicated unit lasts duration[i] frames of 40 ms

Segment = tuple[str, Union[str, list[int]]]  # ("text", str) or ("speech", [unit ids])

# `<Un007>` is not one of the added tokens (the tokenizer reads it as text), so no leading zeros.
_TOKEN_RE = re.compile(r"<Un(0|[1-9][0-9]*)>|" + re.escape(SPEECH_MARKER) + "|" + re.escape(TEXT_MARKER))
_MISSING = object()
_REPR_MAX = 40


@dataclass(frozen=True)
class UnitRow:
    """One utterance of deduplicated 25 Hz units; `duration[i]` = frames (40 ms each) unit i lasted."""
    file_name: str
    units: list[int]
    duration: list[int]


@dataclass(frozen=True)
class Alignment:
    """Word times of one utterance; words keep their leading space (Whisper style)."""
    file_name: str
    words: list[tuple[str, float, float]]
    text: str


# ---------------------------------------------------------------- messages and primitive checks

def short_repr(value: Any) -> str:
    """A one-line repr of at most ~40 characters, for 'got ...' in messages."""
    if value is _MISSING:
        return "nothing (field missing)"
    text = repr(value).replace("\n", "\\n")
    return text if len(text) <= _REPR_MAX else text[:_REPR_MAX - 3] + "..."


def _field_error(where: str, name: str, expected: str, got: Any) -> InputError:
    return InputError(f"{where}: field '{name}': expected {expected}, got {short_repr(got)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a unit id


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _nonempty_str(obj: dict, name: str, where: str) -> str:
    value = obj.get(name, _MISSING)
    if not isinstance(value, str) or not value:
        raise _field_error(where, name, "a non-empty string", value)
    return value


def _need_file(path: Union[str, Path]) -> Path:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    return p


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of every non-blank line; bad UTF-8 is an InputError naming the line."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # tolerate a BOM
            except UnicodeDecodeError:
                raise InputError(f"{path}:{number}: invalid UTF-8") from None
            if line.strip():
                yield number, line


def _parse_object(text: str, where: str) -> dict:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"column {exc.colno}" if exc.lineno == 1 else f"line {exc.lineno} column {exc.colno}"
        raise InputError(f"{where}: invalid JSON: {exc.msg} at {at}") from None
    except RecursionError:
        raise InputError(f"{where}: invalid JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise InputError(f"{where}: not a JSON object, got {short_repr(obj)}")
    return obj


def _jsonl_objects(path: Path) -> Iterator[tuple[str, dict]]:
    for number, line in _lines(path):
        where = f"{path}:{number}"
        yield where, _parse_object(line.rstrip(), where)  # the newline would shift JSON's positions


# ---------------------------------------------------------------- unit rows

def parse_unit_row(obj: dict, n_units: int, where: str) -> UnitRow:
    """A validated UnitRow from one parsed object, or InputError naming `where` and the field."""
    file_name = _nonempty_str(obj, "file_name", where)
    units = obj.get("units", _MISSING)
    if not isinstance(units, list) or not units:
        raise _field_error(where, "units", "a non-empty list of unit ids", units)
    for i, u in enumerate(units):
        if not _is_int(u) or not 0 <= u < n_units:
            raise _field_error(where, f"units[{i}]", f"an integer unit id in [0, {n_units})", u)
    duration = obj.get("duration", _MISSING)
    if not isinstance(duration, list):
        raise _field_error(where, "duration", "a list of frame counts", duration)
    if len(duration) != len(units):
        raise InputError(f"{where}: field 'duration': expected {len(units)} frame counts (one per unit), "
                         f"got {len(duration)}")
    for i, d in enumerate(duration):
        if not _is_int(d) or d <= 0:
            raise _field_error(where, f"duration[{i}]", "a positive integer frame count", d)
    return UnitRow(file_name=file_name, units=list(units), duration=list(duration))


def read_units(path: Union[str, Path], n_units: int) -> Iterator[UnitRow]:
    """Unit rows of a SlamKit `features.jsonl`, validated lazily row by row.

    Promises: file_name is a non-empty string; units is a non-empty list of ints in [0, n_units)
    (bools and floats refused); duration is a list of positive ints, one per unit. Extra fields
    (e.g. SlamKit's `aligned_text`) are ignored. A missing file raises at once, bad rows on reaching them.
    """
    p = _need_file(path)
    return (parse_unit_row(obj, n_units, where) for where, obj in _jsonl_objects(p))


def unit_times(duration: list[int], frame_s: float = FRAME_S) -> list[float]:
    """Start time in seconds of each unit: (frames before it) x frame_s.

    Frames are summed as integers and multiplied once, so float error does not accumulate.
    """
    out, frames = [], 0
    for d in duration:
        out.append(frames * frame_s)
        frames += d
    return out


# ---------------------------------------------------------------- alignments

def parse_alignment(obj: dict, where: str) -> Alignment:
    """A validated Alignment from one parsed side-car object.

    Promises: each word is [string, start, end] with finite numbers, 0 <= start <= end, and starts
    never decrease. `text` must be a string when present; when absent it is the words joined.
    """
    file_name = _nonempty_str(obj, "file_name", where)
    raw = obj.get("aligned_text", _MISSING)
    if not isinstance(raw, list):
        raise _field_error(where, "aligned_text", "a list of [word, start_s, end_s]", raw)
    words: list[tuple[str, float, float]] = []
    previous_start = 0.0
    for i, item in enumerate(raw):
        name = f"aligned_text[{i}]"
        if not isinstance(item, list) or len(item) != 3:
            raise _field_error(where, name, "a [word, start_s, end_s] triple", item)
        word, start, end = item
        if not isinstance(word, str):
            raise _field_error(where, name, "the word as a string first", word)
        for label, t in (("start", start), ("end", end)):
            if not _is_number(t) or not math.isfinite(t):
                raise _field_error(where, name, f"a finite {label} time in seconds", t)
        if start < 0:
            raise _field_error(where, name, "a start time >= 0", start)
        if end < start:
            raise _field_error(where, name, f"an end time >= its start {start!r}", end)
        if start < previous_start:
            raise _field_error(where, name, f"a start time >= the previous word's {previous_start!r}", start)
        previous_start = start
        words.append((word, float(start), float(end)))
    text = obj.get("text", _MISSING)
    if text is _MISSING:
        text = "".join(w for w, _, _ in words)
    elif not isinstance(text, str):
        raise _field_error(where, "text", "a string", text)
    return Alignment(file_name=file_name, words=words, text=text)


def alignment_key(file_name: str) -> str:
    """The key unit rows and side-cars are matched by: the stem (`a/b/x.flac` -> `x`)."""
    return Path(file_name).stem


def read_alignments(path: Union[str, Path]) -> dict[str, Alignment]:
    """All side-cars under `path`, keyed by the stem of their file_name.

    `path` is a directory of `<stem>.json` files (one JSON object each; errors name `<file>:1`) or a
    JSONL file of such objects. Two side-cars with the same stem are an InputError naming both.
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.glob("*.json") if f.is_file())
        if not files:
            raise InputError(f"{p}: no <stem>.json alignment files in this directory")
        items = (_one_json_file(f) for f in files)
    elif p.is_file():
        items = _jsonl_objects(p)
    else:
        raise InputError(f"{p}: no such file or directory")
    out: dict[str, Alignment] = {}
    seen: dict[str, str] = {}
    for where, obj in items:
        align = parse_alignment(obj, where)
        key = alignment_key(align.file_name)
        if key in seen:
            raise InputError(f"{where}: field 'file_name': expected a stem not seen before, got "
                             f"{short_repr(align.file_name)} (stem {key!r} also at {seen[key]})")
        seen[key] = where
        out[key] = align
    return out


def iter_alignments(path: Union[str, Path]) -> Iterator[Alignment]:
    """Side-cars under `path` (a directory of `<stem>.json`, sorted, or a JSONL file), parsed lazily one
    by one (a preflight reads the first few; `read_alignments` reads them all and checks stems)."""
    p = Path(path)
    if p.is_dir():
        return (parse_alignment(obj, where) for where, obj in
                (_one_json_file(f) for f in sorted(p.glob("*.json")) if f.is_file()))
    return (parse_alignment(obj, where) for where, obj in _jsonl_objects(_need_file(p)))


def _one_json_file(path: Path) -> tuple[str, dict]:
    where = f"{path}:1"
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{where}: invalid UTF-8") from None
    return where, _parse_object(text, where)


# ---------------------------------------------------------------- token rows

def check_audio_repr(audio_repr: str, n_units: Optional[int], where: str, name: str = "audio_repr") -> None:
    """InputError unless every `<UnN>` in the string has N < n_units (no check when n_units is None)."""
    if n_units is None:
        return
    for m in _TOKEN_RE.finditer(audio_repr):
        if m.group(1) is not None and int(m.group(1)) >= n_units:
            raise InputError(f"{where}: field '{name}': expected unit tokens <Un0>..<Un{n_units - 1}>, "
                             f"got {short_repr(m.group(0))} at character {m.start()}")


def read_token_rows(path: Union[str, Path], n_units: Optional[int] = None) -> Iterator[tuple[str, str]]:
    """(file_name, audio_repr) of each row of a SlamKit `tokens.jsonl`, validated lazily.

    Promises: both fields are non-empty strings; with `n_units`, every `<UnN>` has N < n_units.
    Extra fields are ignored. A missing file raises at once.
    """
    p = _need_file(path)

    def rows() -> Iterator[tuple[str, str]]:
        for where, obj in _jsonl_objects(p):
            file_name = _nonempty_str(obj, "file_name", where)
            audio_repr = _nonempty_str(obj, "audio_repr", where)
            check_audio_repr(audio_repr, n_units, where)
            yield file_name, audio_repr

    return rows()


def split_repr(audio_repr: str) -> list[Segment]:
    """Segments of an audio_repr string: ("speech", [unit ids]) and ("text", str), in order.

    Modality follows the content: `<UnN>` tokens are speech, everything else that is not a marker
    is text; `<speech>`/`<text>` markers are dropped. Adjacent pieces of one modality merge, empty
    text is dropped, so `split_repr(render(segs)) == segs` for merged, non-empty segments whose
    text holds no marker-like strings.
    """
    out: list[Segment] = []

    def add(modality: str, piece: Union[str, list[int]]) -> None:
        if not piece:
            return
        if out and out[-1][0] == modality:
            out[-1] = (modality, out[-1][1] + piece)
        else:
            out.append((modality, piece))

    pos = 0
    for m in _TOKEN_RE.finditer(audio_repr):
        add("text", audio_repr[pos:m.start()])
        if m.group(1) is not None:
            add("speech", [int(m.group(1))])
        pos = m.end()
    add("text", audio_repr[pos:])
    return out


# ---------------------------------------------------------------- plain text

def read_text(path: Union[str, Path]) -> Iterator[str]:
    """Documents of a text corpus.

    `.jsonl`: one document per row, its `text` field (a non-empty string; other fields ignored).
    `.txt`: documents separated by blank lines (their lines joined with newline); a file with no
    blank line between text lines holds one document per line. Trailing whitespace is stripped.
    """
    p = _need_file(path)
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        return (_nonempty_str(obj, "text", where) for where, obj in _jsonl_objects(p))
    if suffix == ".txt":
        return _txt_documents(p)
    raise InputError(f"{p}: expected a .jsonl or .txt text corpus, got suffix {suffix or 'none'!r}")


def _txt_lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip()
            except UnicodeDecodeError:
                raise InputError(f"{path}:{number}: invalid UTF-8") from None


def _has_paragraphs(path: Path) -> bool:
    """True when a blank line separates two text lines (scans only up to the first such line)."""
    seen_text = gap = False
    for _, line in _txt_lines(path):
        if line.strip():
            if gap:
                return True
            seen_text = True
        elif seen_text:
            gap = True
    return False


def _txt_documents(path: Path) -> Iterator[str]:
    # two passes so a large file streams instead of being held whole to decide the rule
    if not _has_paragraphs(path):
        yield from (line for _, line in _txt_lines(path) if line.strip())
        return
    para: list[str] = []
    for _, line in _txt_lines(path):
        if line.strip():
            para.append(line)
        elif para:
            yield "\n".join(para)
            para = []
    if para:
        yield "\n".join(para)
