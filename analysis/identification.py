"""Which parameters of an Approach-3 fit the data actually pin down.

A five-parameter L(N, D) fitted to a handful of runs converges to something, and its numbers look
like a law: the tiny demo's fit had E = 1.1e-10 and A's bootstrap interval reaching 6e37. A parameter
is called not identified when (a) E is driven to zero (below 1e-3 of the smallest observed loss, the
irreducible loss then being indistinguishable from none), (b) the 95 % bootstrap interval of a scale
parameter (E, A, B, G) spans more than three decades, or (c) that of an exponent spans more than
``EXPONENT_WIDTH`` (alpha, beta) or ``ALLOCATION_WIDTH`` (a, b, which live in [0, 1]). No
allocation, extrapolation or comparison is drawn from a fit with such a parameter.
"""

from __future__ import annotations

import numpy as np

E_FLOOR = 1e-3  # E below this fraction of the smallest loss: driven to zero
SCALE_DECADES = 3.0
EXPONENT_WIDTH = 1.0
ALLOCATION_WIDTH = 0.5


def not_identified(fit: dict, intervals: dict | None, min_loss: float) -> list[dict]:
    """[{"param", "why"}] for each parameter of ``fit`` (E, A, B, alpha, beta, a, b, G values) that the
    data do not pin down, judged from its value and ``intervals`` ({name: {"p2.5", "p97.5"}}, from the
    bootstrap; without them only the E rule applies). Empty when every parameter is identified."""
    out = []
    E = fit.get("E")
    if E is not None and np.isfinite(min_loss) and E < E_FLOOR * min_loss:
        out.append({"param": "E", "why": f"fitted {E:.2g}, driven to zero (smallest loss {min_loss:.3g})"})
    for name in ("E", "A", "B", "G", "alpha", "beta", "a", "b"):
        iv = (intervals or {}).get(name) or {}
        lo, hi = iv.get("p2.5"), iv.get("p97.5")
        if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
            continue
        if name in ("E", "A", "B", "G"):
            wide = lo <= 0 or np.log10(hi / lo) > SCALE_DECADES
            why = f"95% interval [{lo:.2g}, {hi:.2g}] spans more than {SCALE_DECADES:g} decades"
        else:
            wide = hi - lo > (ALLOCATION_WIDTH if name in ("a", "b") else EXPONENT_WIDTH)
            why = f"95% interval [{lo:.3g}, {hi:.3g}] is wider than " \
                  f"{ALLOCATION_WIDTH if name in ('a', 'b') else EXPONENT_WIDTH:g}"
        if wide and not any(d["param"] == name for d in out):
            out.append({"param": name, "why": why})
    return out


def describe(items: list[dict]) -> str:
    """One line: 'E (why); A (why)'."""
    return "; ".join(f"{d['param']} ({d['why']})" for d in items)
