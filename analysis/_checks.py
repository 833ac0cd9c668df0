"""Input validation shared by the fits: coerce to float arrays or refuse."""

from __future__ import annotations

import numpy as np

from analysis.errors import NonFiniteLoss, NonPositiveInput, TooFewPoints


def positive_array(values, name: str) -> np.ndarray:
    """Return ``values`` as a 1-D float array; raise NonPositiveInput unless all finite and > 0."""
    arr = np.asarray(values, dtype=float).reshape(-1)
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise NonPositiveInput(
            f"{name} must be finite and > 0; entry {i} is {arr[i].item()!r} ({int(bad.sum())} bad of {arr.size})"
        )
    return arr


def loss_array(values, name: str = "loss") -> np.ndarray:
    """Return losses as a 1-D float array; raise NonFiniteLoss unless all finite and > 0."""
    arr = np.asarray(values, dtype=float).reshape(-1)
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise NonFiniteLoss(
            f"{name} must be finite and > 0 (its log is fitted); entry {i} is {arr[i].item()!r} "
            f"({int(bad.sum())} bad of {arr.size})"
        )
    return arr


def same_length(**arrays: np.ndarray) -> int:
    """Return the common length of the arrays; raise ValueError when they differ."""
    lengths = {k: v.size for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"inputs differ in length: {lengths}")
    return next(iter(lengths.values()))


def at_least(n: int, need: int, what: str) -> None:
    """Raise TooFewPoints when n < need."""
    if n < need:
        raise TooFewPoints(f"{what}: got {n}, need at least {need}")
