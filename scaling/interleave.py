"""Word-level speech-text interleaving (SIMS; SlamKit's `InterleavingTokeniser`, re-implemented).

Some whole words of an utterance become speech: the units spoken while they were said; the others
stay text. A modality marker opens the sequence and marks every switch.

Time convention: a speech group of words [w_first .. w_last] takes the units whose START time
(`unit_times`) lies in [w_first.start, w_last.end), i.e. start >= group start and start < group end
(compared with a 1 ns tolerance so float noise in multiples of 40 ms cannot move a unit across a
boundary). SlamKit compares the units' end times instead; start times give each unit to exactly one
group when word times tile the audio.
"""
from __future__ import annotations

import math
from bisect import bisect_left
from typing import Sequence, Union

import numpy as np

from .corpus import FRAME_S, Alignment, Segment, UnitRow, unit_times
from .vocab import SPEECH_MARKER, TEXT_MARKER, unit_token

METHODS = ("poisson", "random", "span", "none")
_EPS_S = 1e-9  # 1 ns: below any real word-time resolution, above float noise

__all__ = ["METHODS", "Segment", "interleave", "render", "segments_for", "select_speech_words", "speech_word_target"]


def speech_word_target(n_words: int, prob: float) -> int:
    """ceil(prob x n_words), the number of speech words `poisson` selects.

    The product is rounded to 9 decimals first, so 0.3 x 10 gives 3 even if floats say 3.0000000000000004.
    """
    return min(n_words, math.ceil(round(prob * n_words, 9)))


def select_speech_words(n_words: int, method: str, span: float, prob: float,
                        rng: np.random.Generator) -> list[bool]:
    """Which words become speech (True), by `method`; deterministic for a given rng state.

    - `poisson` (SIMS default, span=lambda 10, prob 0.3): exactly `speech_word_target(n_words, prob)`
      words, as non-overlapping spans of whole words with lengths ~ max(1, Poisson(span)).
    - `random`: each word independently with probability prob.
    - `span`: at each text word, with probability prob switch to speech for round(span) words
      (at least 1, this word included), then back to text.
    - `none`: no word (text only).
    """
    if n_words < 0:
        raise ValueError(f"n_words must be >= 0, got {n_words}")
    if method == "poisson":
        return _select_poisson(n_words, span, prob, rng)
    if method == "random":
        return [bool(x) for x in rng.random(n_words) < prob]
    if method == "span":
        return _select_span(n_words, span, prob, rng)
    if method == "none":
        return [False] * n_words
    raise ValueError(f"unknown interleave method {method!r}; expected one of {', '.join(METHODS)}")


def _select_poisson(n: int, lam: float, prob: float, rng: np.random.Generator) -> list[bool]:
    """Spans drawn until the target is met; the last is trimmed so the count is exact.

    A span starts at a random word with no selected word on either side and stops before it would
    touch a selected word, so spans stay apart and each one becomes its own speech segment. Every
    draw selects at least one word, so the loop ends after at most `target` draws. When no such
    start is left (dense targets, e.g. prob near 1), the remaining words are filled left to right.
    """
    target = speech_word_target(n, prob)
    mask = [False] * n
    chosen = 0
    while chosen < target:
        starts = [i for i in range(n) if not _near_selected(mask, i)]
        if not starts:
            break
        start = starts[int(rng.integers(len(starts)))]
        length = min(max(1, int(rng.poisson(lam))), target - chosen)
        end = start + 1
        # grow while the next word and its right neighbour are free: no overlap, no touching
        while end < min(start + length, n) and not mask[end] and not (end + 1 < n and mask[end + 1]):
            end += 1
        for i in range(start, end):
            mask[i] = True
        chosen += end - start
    for i in range(n):  # deterministic fallback; only reached when no free start remains
        if chosen >= target:
            break
        if not mask[i]:
            mask[i] = True
            chosen += 1
    return mask


def _near_selected(mask: list[bool], i: int) -> bool:
    return mask[i] or (i > 0 and mask[i - 1]) or (i + 1 < len(mask) and mask[i + 1])


def _select_span(n: int, span: float, prob: float, rng: np.random.Generator) -> list[bool]:
    length = max(1, round(span))
    out, left = [], 0  # left = speech words still to go in the current span
    for _ in range(n):
        if left == 0 and rng.random() < prob:
            left = length
        out.append(left > 0)
        left = max(0, left - 1)
    return out


def interleave(row: UnitRow, align: Alignment, method: str, span: float, prob: float,
               rng: np.random.Generator, frame_s: float = FRAME_S) -> list[Segment]:
    """The utterance as alternating ("text", str) / ("speech", [unit ids]) segments.

    Consecutive words of one modality form a group. A text group is its words concatenated (leading
    spaces kept). A speech group is the units whose start time lies in [first word start, last word
    end); a group with no unit in that range stays text. Adjacent segments of one modality merge, so
    modalities alternate. An alignment with no words gives []. Deterministic for a given rng state.
    """
    speech = select_speech_words(len(align.words), method, span, prob, rng)
    return segments_for(row, align, speech, frame_s)


def segments_for(row: UnitRow, align: Alignment, speech: Sequence[bool],
                 frame_s: float = FRAME_S) -> list[Segment]:
    """`interleave` for a given choice of speech words (`speech[i]` True = word i is speech)."""
    words = align.words
    if len(speech) != len(words):
        raise ValueError(f"speech mask has {len(speech)} entries for {len(words)} words")
    starts = unit_times(row.duration, frame_s)
    out: list[Segment] = []
    i = 0
    while i < len(words):
        j = i
        while j + 1 < len(words) and speech[j + 1] == speech[i]:
            j += 1
        group = words[i:j + 1]
        units = _units_between(row.units, starts, group[0][1], group[-1][2]) if speech[i] else []
        if units:
            _append(out, "speech", units)
        else:
            _append(out, "text", "".join(w for w, _, _ in group))
        i = j + 1
    return out


def _units_between(units: Sequence[int], starts: Sequence[float], t0: float, t1: float) -> list[int]:
    """Units with start time in [t0, t1); `starts` is increasing because durations are positive."""
    lo = bisect_left(starts, t0 - _EPS_S)
    hi = bisect_left(starts, t1 - _EPS_S)
    return list(units[lo:hi])


def _append(out: list[Segment], modality: str, piece: Union[str, list[int]]) -> None:
    if not piece:  # empty text (e.g. words that are "") adds nothing and no marker
        return
    if out and out[-1][0] == modality:
        out[-1] = (modality, out[-1][1] + piece)
    else:
        out.append((modality, piece))


def render(segments: Sequence[Segment], first_marker: bool = True) -> str:
    """SlamKit's audio_repr string: `<speech>`/`<text>` at the start (unless first_marker is False)
    and at every switch, units as `<UnN>`, text as is; empty segments are skipped.

    E.g. [("text", " the cat"), ("speech", [3, 7]), ("text", " sat")]
    -> "<text> the cat<speech><Un3><Un7><text> sat".
    """
    parts: list[str] = []
    current = None
    for modality, piece in segments:
        if not piece:
            continue
        if modality not in ("text", "speech"):
            raise ValueError(f"unknown segment modality {modality!r}")
        if modality != current and (current is not None or first_marker):
            parts.append(SPEECH_MARKER if modality == "speech" else TEXT_MARKER)
        current = modality
        parts.append("".join(unit_token(u) for u in piece) if modality == "speech" else piece)
    return "".join(parts)
