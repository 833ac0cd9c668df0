"""Short human forms of counts and durations, for progress lines, tables and cell keys."""
from __future__ import annotations

import math
from typing import Optional


def short_count(n: float) -> str:
    """1360000000 -> '1.36B'; three significant digits, k / M / B / T suffixes (cell keys use it:
    changing it changes every key)."""
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            value = n / div
            text = f"{value:.3g}"
            if "e" in text:  # 1000B and up
                text = f"{value:.0f}"
            return text + suffix
    return f"{n:.0f}"


def duration(seconds: Optional[float]) -> str:
    """93 -> '1m33s', 7384 -> '2h03m'; '?' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
