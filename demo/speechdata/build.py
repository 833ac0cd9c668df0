"""Build a speech corpus from texts, offline: eSpeak NG speech -> 25 Hz units -> SlamKit files.

One utterance per text, each with a voice and rate drawn from (seed, index). Units come from k-means
on log-mel frames fitted here (or from a given unitizer, e.g. `HubertUnitizer` with mHuBERT-25Hz),
deduplicated with their durations. The output folder is what `scaling.corpus` reads:

    out_dir/units.jsonl        {"file_name", "units", "duration"}   training rows
    out_dir/units_val.jsonl    the same, held-out rows (when val_fraction > 0)
    out_dir/align/<stem>.json  {"file_name", "aligned_text": [[word, start_s, end_s], ...], "text"}
    out_dir/kmeans.npy         the fitted centroids [units, 40] (log-mel k-means only)
    out_dir/speech_corpus.json what was built, from what, and the corpora entries for a study file

The folder appears whole or not at all (written beside it, then renamed). Building again with the same
inputs reuses it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from common.errors import InputError
from .features import logmel_25hz
from .tts import RATES, VOICES, Espeak, split_words, voice_for
from .units import LogMelUnitizer, dedup, fit_kmeans, quantize

MANIFEST = "speech_corpus.json"
VERSION = 1
KMEANS_FRAMES = 60_000   # frames sampled for k-means (k-means-500 on 60k frames: a few CPU-seconds)
_POOL_MIN = 32           # fewer texts than this are synthesised in this process


@dataclass
class CorpusBuild:
    """A built speech corpus: its files, size, and `speak` to unitise new text the same way."""
    out_dir: Path
    units_path: Path
    val_units_path: Optional[Path]
    alignments: Path
    centroids: Optional[Path]
    n_units: int
    n_train: int
    n_val: int
    hours: float
    units_per_second: float
    speak: Callable[..., list[int]] = field(repr=False, compare=False)

    def corpora(self) -> list[dict]:
        """`data.corpora` entries of a study file for this corpus (train, and val when held out)."""
        out = [{"path": str(self.units_path), "format": "units", "alignments": str(self.alignments),
                "split": "train"}]
        if self.val_units_path is not None:
            out.append({"path": str(self.val_units_path), "format": "units", "alignments": str(self.alignments),
                        "split": "val"})
        return out


class Speaker:
    """`speak(text, voice=..., rate=...)`: deduplicated units of `text` spoken by eSpeak, from the
    corpus's unitizer (a pure function of its arguments)."""

    def __init__(self, unitizer):
        self.unitizer = unitizer
        self._tts: Optional[Espeak] = None

    def __call__(self, text: str, voice: str = "en-us", rate: int = 175) -> list[int]:
        if self._tts is None:
            self._tts = Espeak()
        utt = self._tts.synthesize(text, voice=voice, rate=rate)
        return dedup(self.unitizer.units(utt.pcm, utt.sample_rate))[0]


# ---------------------------------------------------------------- synthesis workers

_WORKER_TTS: Optional[Espeak] = None


def _synth_one(job: tuple[int, str, str, int, bool]):
    """(index, words, audio seconds, log-mel features or pcm) of one text."""
    global _WORKER_TTS
    index, text, voice, rate, want_features = job
    if _WORKER_TTS is None:
        _WORKER_TTS = Espeak()
    utt = _WORKER_TTS.synthesize(text, voice=voice, rate=rate)
    payload = logmel_25hz(utt.pcm, utt.sample_rate) if want_features else utt.pcm
    return index, utt.words, utt.duration, (payload, utt.sample_rate)


def _n_workers(workers: Optional[int]) -> int:
    if workers is not None:
        return max(1, int(workers))
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _one_blas_thread() -> None:
    from threadpoolctl import threadpool_limits  # optional: threadpoolctl only for the parallel build

    threadpool_limits(1, user_api="blas")  # per-utterance matrices are small: BLAS threads only contend


def _results(jobs: list, workers: int):
    """_synth_one of every job, in order (in `workers` forked processes for larger inputs)."""
    if workers <= 1 or len(jobs) < _POOL_MIN:
        from threadpoolctl import threadpool_limits  # optional: threadpoolctl only for the parallel build

        with threadpool_limits(1, user_api="blas"):
            yield from map(_synth_one, jobs)
        return
    import multiprocessing as mp  # only for the parallel build

    # forkserver: the workers are forked from a fresh single-threaded server that imported this module
    # once (cheap forks, imports paid once). A plain fork of this process can deadlock: the caller may
    # hold threads (OpenMP after torch, MLflow, a test runner) whose locks the child inherits held.
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
    else:
        ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_one_blas_thread) as pool:
        yield from pool.imap(_synth_one, jobs, chunksize=4)


# ---------------------------------------------------------------- the build

def _fingerprint(texts: list[str], units: int, seed: int, val_fraction: float, unitizer_key: str,
                 kmeans_frames: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"version": VERSION, "units": units, "seed": seed, "val_fraction": val_fraction,
                         "unitizer": unitizer_key, "voices": VOICES, "rates": RATES,
                         "kmeans_frames": kmeans_frames, "n": len(texts)}, sort_keys=True).encode())
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()[:20]


def _check_inputs(texts, units, seed, val_fraction) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts:
        raise InputError(f"speech corpus: texts: expected a non-empty list of strings, got {type(texts).__name__}"
                         + (" (empty)" if isinstance(texts, (list, tuple)) else ""))
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not split_words(t):
            raise InputError(f"speech corpus: texts[{i}]: expected a string with at least one word, got {t!r:.40}")
        out.append(" ".join(split_words(t)))
    if not isinstance(units, int) or isinstance(units, bool) or units < 1:
        raise InputError(f"speech corpus: units: expected a positive number of units, got {units!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"speech corpus: seed: expected an integer >= 0, got {seed!r}")
    if not isinstance(val_fraction, (int, float)) or isinstance(val_fraction, bool) or not 0 <= val_fraction < 1:
        raise InputError(f"speech corpus: val_fraction: expected a number in [0, 1), got {val_fraction!r}")
    return out


def _val_indices(n: int, val_fraction: float, seed: int) -> set[int]:
    if val_fraction <= 0 or n < 2:
        return set()
    k = min(max(1, round(val_fraction * n)), n - 1)
    return set(np.random.default_rng([seed, 0x5A1]).permutation(n)[:k].tolist())


def _unitizer_key(unitizer) -> str:
    if unitizer is None:
        return "logmel-kmeans"
    return getattr(unitizer, "key", None) or f"{type(unitizer).__module__}.{type(unitizer).__qualname__}"


def _load(out_dir: Path, meta: dict, unitizer) -> CorpusBuild:
    centroids = out_dir / meta["centroids"] if meta.get("centroids") else None
    if unitizer is None:
        unitizer = LogMelUnitizer(centroids)
    val = out_dir / meta["val_units"] if meta.get("val_units") else None
    return CorpusBuild(out_dir=out_dir, units_path=out_dir / meta["units"], val_units_path=val,
                       alignments=out_dir / meta["alignments"], centroids=centroids, n_units=meta["n_units"],
                       n_train=meta["n_train"], n_val=meta["n_val"], hours=meta["audio_seconds"] / 3600,
                       units_per_second=meta["units_per_second"], speak=Speaker(unitizer))


def _existing(out_dir: Path) -> Optional[dict]:
    """The manifest of a corpus this builder wrote at out_dir; None if the folder is absent or empty."""
    if not out_dir.exists():
        return None
    if not out_dir.is_dir():
        raise InputError(f"speech corpus: out_dir {out_dir}: is a file; expected a folder to build into")
    manifest = out_dir / MANIFEST
    if manifest.is_file():
        try:
            return json.loads(manifest.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
    if any(out_dir.iterdir()):
        raise InputError(f"speech corpus: out_dir {out_dir}: holds files this builder did not write; expected "
                         "a new or empty folder (or one it built before)")
    return None


def build_speech_corpus(texts: list[str], out_dir: Union[str, Path], units: int, seed: int = 0, unitizer=None,
                        val_fraction: float = 0.05, progress: Callable[[str], None] = print,
                        workers: Optional[int] = None, kmeans_frames: int = KMEANS_FRAMES) -> CorpusBuild:
    """Speak every text (one utterance each), unitise, and write a SlamKit corpus at `out_dir`.

    `unitizer=None` fits k-means with `units` centroids on up to `kmeans_frames` log-mel frames (seeded);
    otherwise its `.units(pcm, sample_rate)` gives 25 Hz ids in [0, units). Held out: round(val_fraction x
    n) utterances (at least 1 when val_fraction > 0 and n >= 2), chosen by seed. The same arguments give
    the same files; `workers` processes synthesise (default: the CPUs, at most 8). Returns a CorpusBuild
    whose `speak` unitises new text like the corpus.
    """
    texts = _check_inputs(texts, units, seed, val_fraction)
    if unitizer is not None:
        if not callable(getattr(unitizer, "units", None)):
            raise InputError(f"speech corpus: unitizer: expected an object with .units(pcm, sample_rate), "
                             f"got {type(unitizer).__name__}")
        k = getattr(unitizer, "n_units", None)
        if k is not None and k != units:
            raise InputError(f"speech corpus: units: expected the unitizer's {k} centroids, got {units}")
    out_dir = Path(out_dir)
    key = _fingerprint(texts, units, seed, val_fraction, _unitizer_key(unitizer), kmeans_frames)
    meta = _existing(out_dir)
    if meta is not None and meta.get("fingerprint") == key:
        progress(f"speech corpus: reusing {out_dir} ({meta['n_train']} + {meta['n_val']} utterances, "
                 f"{meta['audio_seconds'] / 3600:.2f} h)")
        return _load(out_dir, meta, unitizer)

    n = len(texts)
    workers = _n_workers(workers)
    want_features = unitizer is None or isinstance(unitizer, LogMelUnitizer)
    jobs = [(i, t, *voice_for(seed, i), want_features) for i, t in enumerate(texts)]
    progress(f"speech corpus: {n} texts -> {out_dir} ({units} units, seed {seed}, "
             f"{workers if n >= _POOL_MIN else 1} process(es))")

    # 1. speech and word times; log-mel features, or unit ids from the given unitizer
    words: list = [None] * n
    seconds = np.zeros(n)
    feats: list = [None] * n
    ids: list = [None] * n
    every = max(1, min(500, n // 10))
    t0 = time.perf_counter()
    for done, (i, w, dur, (payload, sr)) in enumerate(_results(jobs, workers), start=1):
        words[i], seconds[i] = w, dur
        if want_features:
            feats[i] = payload
        else:
            ids[i] = np.asarray(unitizer.units(payload, sr), dtype=np.int64)
        if done % every == 0 or done == n:
            el = time.perf_counter() - t0
            audio = seconds.sum()
            progress(f"speech corpus: {done}/{n} utterances, {audio / 3600:.2f} h audio, "
                     f"{audio / max(el, 1e-9):.0f} audio-s/s, ETA {el * (n - done) / done:.0f} s")

    # 2. units: k-means on a sample of frames, or the given centroids
    centroids = None
    if want_features:
        if unitizer is None:
            tk = time.perf_counter()
            frames = np.concatenate(feats)
            if frames.shape[0] > kmeans_frames:
                pick = np.random.default_rng([seed, 0x4B4D]).choice(frames.shape[0], kmeans_frames, replace=False)
                frames = frames[np.sort(pick)]
            centroids = fit_kmeans(frames, units, seed)
            unitizer = LogMelUnitizer(centroids)
            progress(f"speech corpus: k-means {units} on {frames.shape[0]} frames in {time.perf_counter() - tk:.1f} s")
        for i in range(n):
            ids[i] = quantize(feats[i], unitizer.centroids)
            feats[i] = None

    # 3. rows and side-cars, written beside out_dir and renamed into place
    val = _val_indices(n, val_fraction, seed)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        n_units_total = _write_rows(tmp, words, ids, val, units)
        if centroids is not None:
            np.save(tmp / "kmeans.npy", centroids)
        audio_s = float(seconds.sum())
        meta = {"version": VERSION, "fingerprint": key, "n_units": units, "seed": seed,
                "val_fraction": val_fraction, "unitizer": _unitizer_key(None if centroids is not None else unitizer),
                "n_train": n - len(val), "n_val": len(val), "audio_seconds": round(audio_s, 3),
                "units_total": n_units_total, "units_per_second": round(n_units_total / audio_s, 3),
                "units": "units.jsonl", "val_units": "units_val.jsonl" if val else None, "alignments": "align",
                "centroids": "kmeans.npy" if centroids is not None else None, "voices": list(VOICES),
                "rates": list(RATES)}
        (tmp / MANIFEST).write_text(json.dumps(meta, indent=1))
        _replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename; a failed build leaves nothing
    el = time.perf_counter() - t0
    progress(f"speech corpus: wrote {out_dir}: {n - len(val)} train + {len(val)} val utterances, "
             f"{audio_s / 3600:.2f} h, {meta['units_per_second']:.1f} units/s, {audio_s / el:.0f} audio-s/s overall")
    return _load(out_dir, meta, unitizer if centroids is None else None)


def _write_rows(tmp: Path, words: list, ids: list, val: set[int], units: int) -> int:
    """Write units.jsonl, units_val.jsonl (when val) and align/ into tmp; returns the number of units."""
    (tmp / "align").mkdir(parents=True)
    total = 0
    with open(tmp / "units.jsonl", "w") as train_f, open(tmp / "units_val.jsonl", "w") as val_f:
        for i, (frame_ids, utt_words) in enumerate(zip(ids, words)):
            if frame_ids.size == 0 or frame_ids.min() < 0 or frame_ids.max() >= units:
                raise InputError(f"speech corpus: unitizer: expected unit ids in [0, {units}) for texts[{i}], got "
                                 f"{frame_ids.size} ids in [{frame_ids.min(initial=0)}, {frame_ids.max(initial=0)}]")
            u, d = dedup(frame_ids)
            total += len(u)
            stem = f"tts{i:07d}"
            file_name = f"{stem}.wav"
            row = {"file_name": file_name, "units": u, "duration": d}
            (val_f if i in val else train_f).write(json.dumps(row, separators=(",", ":")) + "\n")
            side = {"file_name": file_name, "aligned_text": [list(w) for w in utt_words],
                    "text": "".join(w for w, _, _ in utt_words)}
            (tmp / "align" / f"{stem}.json").write_text(json.dumps(side, ensure_ascii=False))
    if not val:
        (tmp / "units_val.jsonl").unlink()
    return total


def _replace(tmp: Path, out_dir: Path) -> None:
    """Move the finished tmp folder to out_dir; an older build there is removed only after the move."""
    old = None
    if out_dir.exists() and any(out_dir.iterdir()):
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)  # replaces an empty folder too
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
