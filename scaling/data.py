"""Training data: corpora -> three token streams (text, interleaved, speech) -> packed sequences.

Each stream is tokenised once per (tokenizer, corpora, interleaving) into a memory-mapped uint32 array
cached under `<cache>/<hash>/` and shared by every cell that uses the same tokenizer. Documents are
concatenated (each ends with eos) and cut into windows of context + 1 tokens with stride `context`, so
every window gives exactly `context` label tokens and nothing is padded. Which stream feeds sequence j,
and which window of it, is a pure function of (seed, j, per-stream positions): the read position is
three integers, saved in every checkpoint.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from . import corpus as corpus_mod
from .config import STREAMS, DataConfig
from .errors import InputError
from .interleave import interleave
from .vocab import SpeechVocab

DATA_SEED = 1234  # the interleaving realisation is a property of the data, shared by all cells
_BLOCK = 4096     # sequences per block of stream choices


def streams_for(setup: str, data: DataConfig) -> dict[str, float]:
    """Token shares of the streams a setup trains on."""
    if setup == "textless":
        return {"speech": 1.0}
    if setup == "text":
        return {"text": 1.0}
    return {s: getattr(data.mix, s) for s in STREAMS if getattr(data.mix, s) > 0}


def _encode_segments(vocab: SpeechVocab, segments) -> list[int]:
    ids: list[int] = []
    for modality, content in segments:
        if modality == "speech":
            if vocab.speech_id is not None:
                ids.append(vocab.speech_id)
            ids.extend(vocab.units(content))
        else:
            ids.append(vocab.text_id)
            ids.extend(vocab.encode_text(content))
    ids.append(vocab.eos_id)
    return ids


def _docs(vocab: SpeechVocab, data: DataConfig, split: str, wanted: set[str]):
    """Yield (stream, token ids) for every document of the corpora of `split`."""
    for ci, c in enumerate(data.corpora):
        if c.split != split or (c.synthetic and not data.use_synthetic):
            continue
        if c.format == "text":
            if "text" in wanted:
                for doc in corpus_mod.read_text(c.path):
                    if vocab.setup == "text":
                        yield "text", vocab.encode_text(doc) + [vocab.eos_id]
                    else:
                        yield "text", _encode_segments(vocab, [("text", doc)])
        elif c.format == "tokens":
            for _, audio_repr in corpus_mod.read_token_rows(c.path, vocab.n_units or data.units):
                segments = corpus_mod.split_repr(audio_repr)
                kinds = {m for m, _ in segments}
                stream = "interleaved" if len(kinds) > 1 else ("speech" if kinds == {"speech"} else "text")
                if stream in wanted:
                    yield stream, _encode_segments(vocab, segments)
        else:  # unit rows, with word alignments for the interleaved stream
            aligns = corpus_mod.read_alignments(c.alignments) if c.alignments and "interleaved" in wanted else {}
            for ri, row in enumerate(corpus_mod.read_units(c.path, data.units)):
                if "speech" in wanted:
                    yield "speech", _encode_segments(vocab, [("speech", row.units)])
                align = aligns.get(corpus_mod.alignment_key(row.file_name))
                if align is not None and data.interleave.method != "none":
                    rng = np.random.default_rng([DATA_SEED, ci, ri])
                    segs = interleave(row, align, data.interleave.method, data.interleave.span,
                                      data.interleave.prob, rng)
                    yield "interleaved", _encode_segments(vocab, segs)


def _fingerprint(vocab: SpeechVocab, data: DataConfig, wanted: set[str]) -> str:
    files = []
    for c in data.corpora:
        for p in (c.path, c.alignments):
            if p is None:
                continue
            paths = sorted(Path(p).glob("*.json")) if Path(p).is_dir() else [Path(p)]
            for q in paths:
                try:
                    st = q.stat()
                except FileNotFoundError:
                    raise InputError(f"data.corpora: {q} does not exist") from None
                files.append([str(q.resolve()), st.st_size, st.st_mtime_ns])
    tok = vocab.tokenizer
    tok_id = [getattr(tok, "name_or_path", None), len(tok) if tok is not None else None,
              tok.convert_ids_to_tokens(list(range(min(len(tok), 64)))) if tok is not None else None]
    key = {"files": files, "corpora": [c.__dict__ for c in data.corpora], "units": data.units,
           "interleave": data.interleave.__dict__, "use_synthetic": data.use_synthetic,
           "setup": vocab.setup, "streams": sorted(wanted), "tokenizer": tok_id, "version": 1,
           "ids": [vocab.unit_base, vocab.speech_id, vocab.text_id, vocab.eos_id]}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_streams(folder: Path, vocab: SpeechVocab, data: DataConfig, wanted: set[str]) -> None:
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    counts = {}
    for split in ("train", "val"):
        outs = {s: open(tmp / f"{split}-{s}.bin", "wb") for s in wanted}
        n = dict.fromkeys(wanted, 0)
        docs = dict.fromkeys(wanted, 0)
        for stream, ids in _docs(vocab, data, split, wanted):
            arr = np.asarray(ids, dtype=np.uint32)
            outs[stream].write(arr.tobytes())
            n[stream] += arr.size
            docs[stream] += 1
        for f in outs.values():
            f.close()
        counts[split] = {"tokens": n, "docs": docs}
    (tmp / "meta.json").write_text(json.dumps(counts, indent=1))
    os.replace(tmp, folder)


def tokenised_streams(vocab: SpeechVocab, data: DataConfig, wanted: set[str], cache_root: Path) -> Path:
    """The cache folder holding `<split>-<stream>.bin` for this data, built once (under a file lock)."""
    folder = Path(cache_root) / _fingerprint(vocab, data, wanted)
    if (folder / "meta.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # cells that share the tokenizer build it once
        if not (folder / "meta.json").exists():
            _write_streams(folder, vocab, data, wanted)
    return folder


def cached_unique_tokens(vocab: SpeechVocab, data: DataConfig, context: int, val_tokens: int,
                         cache_root: Path) -> Optional[dict[str, int]]:
    """Unique training label tokens of each stream of `vocab.setup` (whole windows, after the held-out
    tail), read from the packed-data cache's meta.json; None when the cache is not built yet."""
    wanted = set(streams_for(vocab.setup, data))
    meta = Path(cache_root) / _fingerprint(vocab, data, wanted) / "meta.json"
    if not meta.exists():
        return None
    counts = json.loads(meta.read_text())
    out = {}
    for s in wanted:
        n_train, n_val = counts["train"]["tokens"].get(s, 0), counts["val"]["tokens"].get(s, 0)
        n_train -= _holdout(n_train, n_val, context, val_tokens)
        out[s] = max((n_train - 1) // context, 0) * context
    return out


def _holdout(n_train: int, n_val: int, context: int, val_tokens: int) -> int:
    """Tokens held out from the tail of a stream's training data when it has no val corpus."""
    if n_val > 0 or n_train == 0:
        return 0
    # at most 10% of the stream, at least one window
    return min(max(val_tokens, context + 1), max(n_train // 10, context + 1))


def _load(path: Path) -> np.ndarray:
    if not path.exists() or path.stat().st_size == 0:
        return np.zeros(0, dtype=np.uint32)
    return np.memmap(path, dtype=np.uint32, mode="r")


@dataclass
class PackedData:
    """Windows of context + 1 tokens from each stream, sampled by token share."""
    context: int
    shares: dict[str, float]
    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    seed: int
    _choice_cache: dict = field(default_factory=dict)
    _perm_cache: dict = field(default_factory=dict)

    def windows(self, stream: str, split: str = "train") -> int:
        arr = (self.train if split == "train" else self.val)[stream]
        return max((arr.size - 1) // self.context, 0)

    def epochs_seen(self, pos: dict[str, int]) -> dict:
        """Passes over each stream's training windows at read positions `pos` (1.5: one full epoch and half
        a permutation of the next), and each stream's unique label tokens (whole windows)."""
        return {"epochs": {s: pos[s] / self.windows(s) for s in pos},
                "unique_tokens": {s: self.windows(s) * self.context for s in pos}}

    def _stream_of(self, j: int) -> str:
        block = j // _BLOCK
        if block not in self._choice_cache:
            names = list(self.shares)
            p = np.array([self.shares[s] for s in names], dtype=np.float64)
            rng = np.random.default_rng([self.seed, 7, block])
            self._choice_cache = {block: [names[i] for i in rng.choice(len(names), size=_BLOCK, p=p / p.sum())]}
        return self._choice_cache[block][j % _BLOCK]

    def _window_index(self, stream: str, k: int) -> int:
        n = self.windows(stream)
        epoch, i = divmod(k, n)
        key = (stream, epoch)
        if key not in self._perm_cache:
            sid = list(STREAMS).index(stream)
            if len(self._perm_cache) > 8:
                self._perm_cache.clear()
            self._perm_cache[key] = np.random.default_rng([self.seed, 11, sid, epoch]).permutation(n)
        return int(self._perm_cache[key][i])

    def sequence(self, j: int, pos: dict[str, int]) -> tuple[str, np.ndarray]:
        """Sequence j (context + 1 tokens) and its stream; advances `pos` for that stream."""
        stream = self._stream_of(j)
        w = self._window_index(stream, pos[stream])
        pos[stream] += 1
        start = w * self.context
        return stream, np.asarray(self.train[stream][start:start + self.context + 1], dtype=np.int64)

    def val_windows(self, stream: str, max_tokens: int) -> np.ndarray:
        """Held-out windows of one stream, at most `max_tokens` label tokens, in a fixed order."""
        arr = self.val[stream]
        n = min(self.windows(stream, "val"), max(max_tokens // self.context, 1))
        if n == 0:
            return np.zeros((0, self.context + 1), dtype=np.int64)
        idx = np.arange(n)[:, None] * self.context + np.arange(self.context + 1)[None, :]
        return np.asarray(arr[idx], dtype=np.int64)


def prepare(vocab: SpeechVocab, data: DataConfig, context: int, seed: int, val_tokens: int,
            cache_root: Path) -> PackedData:
    """Tokenise (or reuse the cache) and pack the streams of `vocab.setup`."""
    shares = streams_for(vocab.setup, data)
    if not shares:
        raise InputError("data.mix: every stream has share 0")
    folder = tokenised_streams(vocab, data, set(shares), cache_root)
    train = {s: _load(folder / f"train-{s}.bin") for s in shares}
    val = {s: _load(folder / f"val-{s}.bin") for s in shares}
    for s in shares:
        hold = _holdout(train[s].size, val[s].size, context, val_tokens)
        if hold:  # no val corpus: hold out the tail of the stream
            val[s], train[s] = train[s][-hold:], train[s][:-hold]
    packed = PackedData(context, shares, train, val, seed)
    for s in shares:
        if packed.windows(s) == 0:
            raise InputError(f"data: stream {s!r} has share {shares[s]:g} but fewer than {context + 1} training "
                             "tokens; give it a corpus or set its share in data.mix to 0")
    return packed
