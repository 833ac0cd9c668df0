"""eSpeak NG speech synthesis with word times, through ctypes against the library in the
`espeakng-loader` wheel (no system package, no download).

Determinism: eSpeak keeps synthesis state in C statics (pitch flutter phase, cycle counters, its noise
generator is seeded from the clock) that `espeak_Initialize` does not reset, so the same text spoken
twice in one process gives different samples. Every `synthesize` call therefore loads the library
afresh, seeds its generator, speaks, and unloads it (about 1 ms): an utterance is a pure function of
(text, voice, rate), whichever process or call order produced it.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np

from common.errors import InputError

SAMPLE_RATE = 22050
# English voices and variants shipped in the wheel's data (`<language>+<variant>`).
VOICES = ("en-us", "en-us+f3", "en+m3", "en-gb-x-rp", "en-us+m1", "en-us+f2")
RATES = (150, 200)        # words per minute drawn per utterance by `voice_for` (eSpeak's default: 175)
RATE_LIMITS = (80, 450)   # what eSpeak accepts

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_RATE = 1                 # espeakRATE
_EVENT_END_OF_LIST = 0
_EVENT_WORD = 1
_BUFFER_MS = 500          # audio per callback; larger means fewer Python calls
_RAND_SEED = 1

_LOCK = threading.Lock()  # the library is process-global state


@dataclass
class Utterance:
    """Int16 PCM and word times; words keep a leading space except the first (Whisper style) and tile
    the audio: the first starts at 0, each ends where the next starts, the last ends at the audio's end."""
    pcm: np.ndarray
    sample_rate: int
    words: list[tuple[str, float, float]]

    @property
    def duration(self) -> float:
        return len(self.pcm) / self.sample_rate

    @property
    def text(self) -> str:
        return "".join(w for w, _, _ in self.words)


def voice_for(seed: int, index: int) -> tuple[str, int]:
    """The voice and rate of utterance `index` of a corpus built with `seed` (a pure function of both)."""
    rng = np.random.default_rng([int(seed), int(index), 0x7715])
    return VOICES[int(rng.integers(len(VOICES)))], int(rng.integers(RATES[0], RATES[1] + 1))


def split_words(text: str) -> list[str]:
    """The whitespace-separated words of `text` (what `synthesize` times and speaks)."""
    return text.replace("\x00", " ").split()


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


def _dlclose(handle: int) -> None:
    import _ctypes  # only to unload the espeak library

    _ctypes.dlclose(handle)


class Espeak:
    """eSpeak NG from the `espeakng-loader` wheel. Not for concurrent use from threads (calls are
    serialised by a lock); processes are independent."""

    def __init__(self) -> None:
        try:
            import espeakng_loader  # optional: espeak-ng only for speech synthesis
        except ImportError:
            raise InputError("speech synthesis: the espeakng-loader package is not installed; expected "
                             "`pip install espeakng-loader==0.2.4`") from None
        self._lib_path = espeakng_loader.get_library_path()
        self._data_path = espeakng_loader.get_data_path().encode()
        if not os.path.isfile(self._lib_path):
            raise InputError(f"speech synthesis: {self._lib_path}: no eSpeak NG library; expected the "
                             "espeakng-loader wheel for this platform")
        self._private: Optional[str] = None  # a copy of the library, used if something else holds it
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int]] = []
        self._callback = _CALLBACK(self._on_audio)  # kept alive as long as self

    def _on_audio(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while events[i].type != _EVENT_END_OF_LIST:
            if events[i].type == _EVENT_WORD:
                self._events.append((events[i].text_position - 1, events[i].sample))
            i += 1
        return 0

    def synthesize(self, text: str, voice: str = "en-us", rate: int = 175) -> Utterance:
        """Speak `text` (whitespace collapsed) with an eSpeak voice name at `rate` words per minute."""
        words = split_words(text)
        if not words:
            raise InputError(f"speech synthesis: text {text[:40]!r}: expected at least one word")
        if not isinstance(rate, int) or isinstance(rate, bool) or not RATE_LIMITS[0] <= rate <= RATE_LIMITS[1]:
            raise InputError(f"speech synthesis: rate: expected words per minute in "
                             f"[{RATE_LIMITS[0]}, {RATE_LIMITS[1]}], got {rate!r}")
        spoken = " ".join(words)
        with _LOCK:
            pcm, events = self._speak(spoken, voice, rate)
        return Utterance(pcm, SAMPLE_RATE, word_times(words, events, len(pcm), SAMPLE_RATE))

    def _speak(self, text: str, voice: str, rate: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
        path = self._private or self._lib_path
        lib = ctypes.CDLL(path, mode=os.RTLD_LOCAL)
        try:
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            if lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, self._data_path, 0) != SAMPLE_RATE:
                raise RuntimeError(f"eSpeak NG did not start at {SAMPLE_RATE} Hz (data at {self._data_path!r})")
            lib.espeak_SetSynthCallback(self._callback)
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise InputError(f"speech synthesis: voice {voice!r}: not an eSpeak NG voice; expected e.g. "
                                 f"one of {', '.join(VOICES)}")
            lib.espeak_SetParameter(_RATE, rate, 0)
            lib.espeak_ng_SetRandSeed(ctypes.c_long(_RAND_SEED))  # espeak_Initialize seeds it with the clock
            self._chunks, self._events = [], []
            raw = text.encode("utf-8") + b"\0"
            lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                         ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
            status = lib.espeak_Synth(raw, len(raw), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None)
            if status != 0 or lib.espeak_Synchronize() != 0:
                raise RuntimeError(f"eSpeak NG failed (status {status}) on {text[:40]!r}")
            pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
            return pcm.astype(np.int16, copy=False), self._events
        finally:
            self._chunks, self._events = [], []
            lib.espeak_Terminate()
            _dlclose(lib._handle)
            self._check_unloaded(path)

    def _check_unloaded(self, path: str) -> None:
        """Fresh state needs the library really unloaded; if another user in this process holds it,
        switch to a private copy (a different file is a separate instance)."""
        try:
            still = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LOCAL)
        except OSError:
            return  # unloaded: the next call starts from the library's initial state
        _dlclose(still._handle)
        if self._private is not None:
            raise RuntimeError(f"eSpeak NG library {path} stays loaded after dlclose; synthesis would "
                               "depend on call history")
        folder = tempfile.mkdtemp(prefix="slm-espeak-")
        atexit.register(shutil.rmtree, folder, True)
        self._private = shutil.copy(self._lib_path, os.path.join(folder, "libespeak-ng-private.so"))


def word_times(words: list[str], events: list[tuple[int, int]], n_samples: int,
               sample_rate: int) -> list[tuple[str, float, float]]:
    """(word, start_s, end_s) for each word of `" ".join(words)` from eSpeak's word events
    (0-based character position, sample). Times tile [0, n_samples / sample_rate].

    eSpeak gives no event to some words (it speaks "in the" as one word): a word owns the events at
    character positions from its start up to the next word's start; words without one share the span
    of the preceding timed word (from its event to the next timed word's), split by character count.
    Events that would go back in time are ignored, so times never decrease.
    """
    starts, pos = [], 0
    for w in words:
        starts.append(pos)
        pos += len(w) + 1
    anchor: list[Optional[int]] = [None] * len(words)
    for p, sample in events:
        # the word whose character span (up to the next word) holds position p
        i = max(0, int(np.searchsorted(starts, p, side="right")) - 1)
        if anchor[i] is None or sample < anchor[i]:
            anchor[i] = sample
    anchor[0] = 0  # the first word also owns any leading silence
    last = 0
    for i, a in enumerate(anchor):
        if a is not None:
            if a < last or a > n_samples:
                anchor[i] = None
            else:
                last = a
    timed = [i for i, a in enumerate(anchor) if a is not None] + [len(words)]
    bounds = [0.0] * (len(words) + 1)
    bounds[-1] = float(n_samples)
    for g, i in enumerate(timed[:-1]):
        j = timed[g + 1]  # words i..j-1 share [anchor[i], anchor[j] or the end)
        lo = float(anchor[i])
        hi = float(anchor[j]) if j < len(words) else float(n_samples)
        chars = np.cumsum([0] + [len(words[k]) for k in range(i, j)], dtype=np.float64)
        for k in range(i, j):
            bounds[k] = lo + (hi - lo) * chars[k - i] / chars[-1]
    out = []
    for k, w in enumerate(words):
        start = round(float(bounds[k]) / sample_rate, 4)
        end = round(float(bounds[k + 1]) / sample_rate, 4)
        out.append(((" " if k else "") + w, start, end))
    return out
