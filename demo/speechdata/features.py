"""Log-mel features at 25 Hz, the frame rate of mHuBERT-25Hz units, for k-means speech units.

16 kHz, 25 ms Hann window, 20 ms hop, 512-point FFT, 40 log-mel bands (HTK mel scale, 0-8 kHz), pairs
of frames mean-pooled to 40 ms, then per-utterance mean/variance normalisation. Frame k covers
[k x 40 ms, (k + 1) x 40 ms) of the audio (the last one zero-padded), so an utterance of d seconds has
ceil(d / 0.04) frames, matching `scaling.corpus.FRAME_S`.
"""
from __future__ import annotations

from functools import lru_cache
from math import gcd

import numpy as np
import scipy.fft

FEATURE_RATE = 16000
N_MELS = 40
WIN = 400        # 25 ms at 16 kHz
HOP = 320        # 20 ms at 16 kHz
N_FFT = 512
PREEMPHASIS = 0.97
_LOG_FLOOR = 1e-6


def _mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=4)
def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = FEATURE_RATE) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular filters, equally spaced on the HTK mel scale up to Nyquist."""
    edges = _hz(np.linspace(0.0, _mel(sample_rate / 2), n_mels + 2))
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lo) / (mid - lo)
    falling = (hi - freqs[None, :]) / (hi - mid)
    return np.clip(np.minimum(rising, falling), 0.0, None).astype(np.float32)


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    return np.hanning(WIN + 1)[:-1].astype(np.float32)  # periodic Hann


def to_16k(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """Float32 audio in [-1, 1] at 16 kHz (int16 is scaled by 1/32768; polyphase resampling)."""
    from scipy.signal import resample_poly  # scipy.signal takes seconds to import; only when resampling

    x = np.asarray(pcm)
    x = x.astype(np.float32) / 32768.0 if x.dtype == np.int16 else x.astype(np.float32)
    if sample_rate != FEATURE_RATE:
        g = gcd(int(sample_rate), FEATURE_RATE)
        x = resample_poly(x, FEATURE_RATE // g, int(sample_rate) // g).astype(np.float32)
    return x


def logmel_25hz(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """Float32 [frames, 40]: CMVN-normalised log-mel energies, one row per 40 ms of audio."""
    x = to_16k(pcm, sample_rate)
    x = np.append(x[:1], x[1:] - PREEMPHASIS * x[:-1]) if x.size else x
    n = max(1, -(-x.size // HOP))                        # 20 ms frames: ceil(samples / hop)
    padded = np.zeros((n - 1) * HOP + WIN, dtype=np.float32)
    padded[:x.size] = x
    frames = np.lib.stride_tricks.sliding_window_view(padded, WIN)[::HOP] * _window()
    spec = scipy.fft.rfft(frames, n=N_FFT, axis=1)     # float32 in, complex64 out
    power = spec.real ** 2 + spec.imag ** 2
    logmel = np.log(power @ mel_filterbank().T + _LOG_FLOOR)
    if n % 2:
        logmel = np.vstack([logmel, logmel[-1:]])        # the last 40 ms frame is its one 20 ms frame
    pooled = 0.5 * (logmel[0::2] + logmel[1::2])
    mean = pooled.mean(axis=0, keepdims=True)
    std = pooled.std(axis=0, keepdims=True)
    return ((pooled - mean) / np.maximum(std, 1e-5)).astype(np.float32)
