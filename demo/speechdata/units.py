"""Speech units at 25 Hz: k-means on features, nearest-centroid quantisation, run-length dedup.

Two unitizers share one interface, `.units(pcm, sample_rate) -> frame ids at 25 Hz` (not deduplicated):
`LogMelUnitizer` (log-mel features + k-means centroids fitted here; no weights needed) and
`HubertUnitizer` (a local HuBERT checkpoint, e.g. mHuBERT-25Hz, + its k-means centroids as `.npy`, the
units SIMS trains on). `.key` names what determines a unitizer's output.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Union

import numpy as np

from common.errors import InputError
from .features import N_MELS, logmel_25hz, to_16k

UNIT_HOP_16K = 640          # samples per 25 Hz frame at 16 kHz
_QUANTIZE_ROWS = 16384      # rows per distance block: bounds memory at rows x k floats


def fit_kmeans(features: np.ndarray, k: int, seed: int, n_init: int = 1, max_iter: int = 100) -> np.ndarray:
    """Float32 centroids [k, dim] of MiniBatchKMeans on `features` [frames, dim]; the same for the same
    (features, k, seed)."""
    from sklearn.cluster import MiniBatchKMeans  # heavy: sklearn only for unit clustering

    x = np.ascontiguousarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise InputError(f"k-means: features: expected a [frames, dim] array, got shape {x.shape}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InputError(f"k-means: units: expected a positive number of units, got {k!r}")
    if x.shape[0] < k:
        raise InputError(f"k-means: {x.shape[0]} frames cannot make {k} units; expected at least {k} "
                         "frames (more or longer texts, or fewer units)")
    km = MiniBatchKMeans(n_clusters=k, random_state=int(seed), n_init=n_init, max_iter=max_iter,
                         batch_size=max(4096, 8 * k), compute_labels=False)
    km.fit(x)
    return km.cluster_centers_.astype(np.float32)


def quantize(features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Int64 index of the nearest centroid (Euclidean) for each row of `features`."""
    x = np.asarray(features, dtype=np.float32)
    c = np.asarray(centroids, dtype=np.float32)
    if x.ndim != 2 or c.ndim != 2 or x.shape[1] != c.shape[1]:
        raise InputError(f"quantize: expected features [frames, d] and centroids [k, d] of the same d, "
                         f"got {x.shape} and {c.shape}")
    c_sq = (c * c).sum(axis=1)
    out = np.empty(x.shape[0], dtype=np.int64)
    for lo in range(0, x.shape[0], _QUANTIZE_ROWS):
        block = x[lo:lo + _QUANTIZE_ROWS]
        out[lo:lo + block.shape[0]] = np.argmin(c_sq[None, :] - 2.0 * (block @ c.T), axis=1)  # |x|^2 is common
    return out


def dedup(ids) -> tuple[list[int], list[int]]:
    """Run-length dedup: each run's first unit and its length in frames (sum(duration) == len(ids))."""
    a = np.asarray(ids, dtype=np.int64).ravel()
    if a.size == 0:
        return [], []
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
    duration = np.diff(np.r_[starts, a.size])
    return a[starts].tolist(), duration.tolist()


def load_centroids(source: Union[str, Path, np.ndarray], what: str = "centroids") -> np.ndarray:
    """Float32 [k, dim] centroids from an array or an `.npy` file (InputError naming the file otherwise)."""
    if isinstance(source, np.ndarray):
        c = source
    else:
        p = Path(source)
        if not p.is_file():
            raise InputError(f"{what}: {p}: no such file; expected k-means centroids as a .npy array [k, dim]")
        try:
            c = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise InputError(f"{what}: {p}: not a .npy array ({str(e).splitlines()[0] if str(e) else e})") from None
    if c.ndim != 2 or c.shape[0] < 1 or not np.issubdtype(c.dtype, np.number) or not np.isfinite(c).all():
        raise InputError(f"{what}: expected a finite numeric array [k, dim], got shape {c.shape} dtype {c.dtype}")
    return np.ascontiguousarray(c, dtype=np.float32)


def _digest(c: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(c, dtype=np.float32).tobytes()).hexdigest()[:16]


def pool_frames(h: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each `factor` consecutive rows (the last group may be shorter)."""
    if factor == 1:
        return h
    n = h.shape[0]
    groups = -(-n // factor)
    pad = groups * factor - n
    if pad:
        h = np.vstack([h, np.repeat(h[-1:], pad, axis=0)])  # repeating the last row keeps its group's mean
    return h.reshape(groups, factor, h.shape[1]).mean(axis=1)


class LogMelUnitizer:
    """Nearest centroid of each 25 Hz log-mel frame (`features.logmel_25hz`)."""

    def __init__(self, centroids: Union[str, Path, np.ndarray]):
        self.centroids = load_centroids(centroids)
        if self.centroids.shape[1] != N_MELS:
            raise InputError(f"centroids: expected {N_MELS}-dim log-mel centroids, got dim {self.centroids.shape[1]}")
        self.n_units = self.centroids.shape[0]
        self.key = f"logmel:{_digest(self.centroids)}"

    def units(self, pcm: np.ndarray, sample_rate: int) -> np.ndarray:
        return quantize(logmel_25hz(pcm, sample_rate), self.centroids)


class HubertUnitizer:
    """Nearest centroid of a HuBERT layer's 25 Hz frames, from a local checkpoint (transformers
    `HubertModel` folder) and its k-means centroids (`.npy`, [k, hidden]).

    `layer`: the transformer layer whose output is quantised (mHuBERT-25Hz: 11); default 11, or the
    last layer of a smaller model. A 50 Hz model (conv strides multiplying to 320) is mean-pooled over
    pairs of frames; any frame rate that is a whole multiple of 25 Hz is pooled likewise.
    """

    def __init__(self, model_path: Union[str, Path], centroids_npy: Union[str, Path, np.ndarray],
                 layer: Union[int, None] = None, device: str = "cpu"):
        import torch  # heavy: torch only for HuBERT features
        from transformers import HubertModel  # heavy: transformers only for HuBERT features

        path = Path(model_path)
        if not (path / "config.json").is_file():
            raise InputError(f"hubert model: {path}: expected a local HuBERT folder with config.json and weights")
        try:
            model = HubertModel.from_pretrained(str(path))
        except (OSError, ValueError, TypeError) as e:
            raise InputError(f"hubert model: {path}: cannot load it as a HubertModel ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
        cfg = model.config
        n_layers = cfg.num_hidden_layers
        self.layer = min(11, n_layers) if layer is None else layer
        if not isinstance(self.layer, int) or isinstance(self.layer, bool) or not 1 <= self.layer <= n_layers:
            raise InputError(f"hubert layer: expected an integer in [1, {n_layers}], got {layer!r}")
        stride = int(np.prod(cfg.conv_stride))
        if UNIT_HOP_16K % stride:
            raise InputError(f"hubert model: {path}: frames every {stride} samples at 16 kHz; expected a frame "
                             f"rate that is a multiple of 25 Hz (conv strides multiplying to a divisor of {UNIT_HOP_16K})")
        self.pool = UNIT_HOP_16K // stride
        self.centroids = load_centroids(centroids_npy, "hubert centroids")
        if self.centroids.shape[1] != cfg.hidden_size:
            raise InputError(f"hubert centroids: expected dim {cfg.hidden_size} (the model's hidden size), "
                             f"got {self.centroids.shape[1]}")
        self.n_units = self.centroids.shape[0]
        self.normalize = False
        pre = path / "preprocessor_config.json"
        if pre.is_file():
            try:
                self.normalize = bool(json.loads(pre.read_text()).get("do_normalize", False))
            except (json.JSONDecodeError, AttributeError):
                raise InputError(f"hubert model: {pre}: expected a JSON object") from None
        if not cfg.do_stable_layer_norm:
            # later layers cannot change this layer's output; skip computing them
            model.encoder.layers = model.encoder.layers[:self.layer]
        self.model = model.to(device).eval()
        self.device = device
        self._torch = torch
        self.key = f"hubert:{path.resolve()}:{self.layer}:{_digest(self.centroids)}"

    def features(self, pcm: np.ndarray, sample_rate: int) -> np.ndarray:
        """Float32 [frames, hidden] at 25 Hz."""
        x = to_16k(pcm, sample_rate)
        if self.normalize:
            x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        torch = self._torch
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(x))[None].to(self.device),
                             output_hidden_states=True)
            h = out.hidden_states[self.layer][0].float().cpu().numpy()
        return pool_frames(h, self.pool)

    def units(self, pcm: np.ndarray, sample_rate: int) -> np.ndarray:
        return quantize(self.features(pcm, sample_rate), self.centroids)
