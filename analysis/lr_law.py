"""Carry tuned hyper-parameters to scale: a power law of the best learning rate (and batch size) in N.

`launch.py tune` finds, per tuned member, the trial with the lowest validation loss; this module fits

    lr_opt(N) = a * N^b          (least squares on log lr = log a + b log N)

over those optima (one point per member), with standard errors from the residuals and a bootstrap over
members, and the same for `batch_tokens` when the batch size was tuned. The result is `<study>/tuned.json`
(`build_tuned`, `write_tuned`, `load_tuned`); `lr: tuned` / `batch_tokens: tuned` in a study's training
section evaluates the law at each cell's N (`resolve`). One tuned member gives a constant (b = 0), said so
in the law's `note`.

Pure numpy: never imports torch, transformers, scaling or sweeps.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .errors import InputError, NonPositiveInput, TooFewPoints

TUNED_NAME = "tuned.json"
LAW_KEYS = ("lr", "batch_tokens")


def fit_power_law(n: Iterable[float], y: Iterable[float], n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Fit y = a * n^b by least squares in log-log space.

    Returns {a, b, log_a_se, b_se, b_ci, a_ci, n_points, r2, rmse_log, constant, note}: standard errors
    from the residual variance (None with two points, which the line fits exactly), 95% bootstrap
    intervals over resampled points (None with fewer than three points). One point (or several at one
    N, averaged in log space) gives the constant law b = 0 with `constant: true`."""
    n = np.asarray(list(n), dtype=float)
    y = np.asarray(list(y), dtype=float)
    if n.shape != y.shape or n.ndim != 1:
        raise TooFewPoints("expected as many optima as model sizes")
    if len(n) == 0:
        raise TooFewPoints("no tuned member has a complete trial: nothing to fit")
    if not (np.all(np.isfinite(n)) and np.all(n > 0) and np.all(np.isfinite(y)) and np.all(y > 0)):
        raise NonPositiveInput("model sizes and optima must be finite positive numbers")
    x, z = np.log(n), np.log(y)
    if len(np.unique(n)) == 1:
        a = float(np.exp(z.mean()))
        note = ("one tuned member: the law is a constant (b = 0); tune a second member to fit the exponent"
                if len(n) == 1 else "every tuned member has the same size: the law is a constant (b = 0)")
        return {"a": a, "b": 0.0, "log_a_se": None, "b_se": None, "a_ci": None, "b_ci": None,
                "n_points": int(len(n)), "r2": None, "rmse_log": float(np.sqrt(np.mean((z - z.mean()) ** 2))),
                "constant": True, "note": note}
    b, log_a = _line(x, z)
    resid = z - (log_a + b * x)
    k = len(n)
    sxx = float(np.sum((x - x.mean()) ** 2))
    b_se = log_a_se = None
    if k > 2:
        s2 = float(np.sum(resid ** 2)) / (k - 2)
        b_se = math.sqrt(s2 / sxx)
        log_a_se = math.sqrt(s2 * (1.0 / k + x.mean() ** 2 / sxx))
    ss_tot = float(np.sum((z - z.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid ** 2)) / ss_tot if ss_tot > 0 else 1.0
    a_ci = b_ci = None
    if k > 2 and n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        bs, as_ = [], []
        for _ in range(n_bootstrap):
            idx = rng.integers(0, k, k)
            if len(np.unique(x[idx])) < 2:
                continue
            bb, aa = _line(x[idx], z[idx])
            bs.append(bb)
            as_.append(math.exp(aa))
        if len(bs) >= 10:
            b_ci = [float(np.percentile(bs, 2.5)), float(np.percentile(bs, 97.5))]
            a_ci = [float(np.percentile(as_, 2.5)), float(np.percentile(as_, 97.5))]
    return {"a": float(math.exp(log_a)), "b": float(b), "log_a_se": log_a_se, "b_se": b_se, "a_ci": a_ci,
            "b_ci": b_ci, "n_points": int(k), "r2": float(r2), "rmse_log": float(np.sqrt(np.mean(resid ** 2))),
            "constant": False, "note": None if k > 2 else "two members: the line fits exactly, no standard error"}


def _line(x: np.ndarray, z: np.ndarray) -> tuple[float, float]:
    xm, zm = x.mean(), z.mean()
    b = float(np.sum((x - xm) * (z - zm)) / np.sum((x - xm) ** 2))
    return b, float(zm - b * xm)


def predict(law: dict, n: float) -> float:
    """The law's value at model size `n`."""
    return float(law["a"]) * float(n) ** float(law["b"])


def round_sig(v: float, digits: int = 3) -> float:
    """`v` to `digits` significant digits (resolved values stay stable and readable in plans and keys)."""
    return float(f"{v:.{digits}g}")


def build_tuned(study: str, members: dict[str, dict], params: str = "total", metric: str = "speech",
                n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """The tuned.json document from each member's best trial.

    `members`: {name: {"params_total", "params_nonembedding", "lr", "val_loss", optional "batch_tokens",
    "min_lr_ratio", ...}}. A law is fitted for `lr`, and for `batch_tokens` when every member tuned it.
    N is `params_<params>` of each member."""
    if params not in ("total", "nonembedding"):
        raise InputError(f"params: expected total or nonembedding, got {params!r}")
    if not members:
        raise TooFewPoints("no tuned member has a complete trial: nothing to fit")
    col = f"params_{params}"
    names = sorted(members, key=lambda m: members[m][col])
    ns = [members[m][col] for m in names]
    law: dict[str, Any] = {}
    for key in LAW_KEYS:
        values = [members[m].get(key) for m in names]
        if any(v is None for v in values):
            continue
        law[key] = fit_power_law(ns, values, n_bootstrap=n_bootstrap, seed=seed)
    ratios = [members[m]["min_lr_ratio"] for m in names if members[m].get("min_lr_ratio") is not None]
    return {"study": study, "params": params, "metric": metric,
            "min_lr_ratio": float(np.median(ratios)) if ratios else None,
            "members": {m: members[m] for m in names}, "law": law}


def write_tuned(path: Path, doc: dict) -> Path:
    """Write tuned.json atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def load_tuned(path: Path) -> dict:
    """Read and check tuned.json; InputError (one line) when it is unreadable or malformed."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: missing") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not readable as JSON ({e})") from None
    law = doc.get("law") if isinstance(doc, dict) else None
    if not isinstance(law, dict) or doc.get("params") not in ("total", "nonembedding"):
        raise InputError(f"{path}: not a tuned.json (expected `law` and `params: total|nonembedding`)")
    for key, fit in law.items():
        if not isinstance(fit, dict) or not all(isinstance(fit.get(k), (int, float)) for k in ("a", "b")):
            raise InputError(f"{path}: law.{key}: expected numbers a and b")
    return doc


def resolve(doc: dict, n: float, what: Iterable[str] = ("lr",), context: int = 1,
            default_min_lr_ratio: float = 0.1) -> dict[str, Any]:
    """The values `what` (lr, batch_tokens) at model size `n` from a tuned.json document: lr to 3
    significant digits (and min_lr = lr x the trials' min_lr_ratio), batch_tokens to a whole number of
    contexts (at least one). KeyError names a law the document lacks."""
    out: dict[str, Any] = {}
    for key in what:
        if key not in doc["law"]:
            raise KeyError(key)
        v = predict(doc["law"][key], n)
        if key == "lr":
            out["lr"] = round_sig(v)
            ratio = doc.get("min_lr_ratio")
            out["min_lr"] = round_sig(out["lr"] * (default_min_lr_ratio if ratio is None else ratio))
        else:
            out["batch_tokens"] = int(max(1, round(v / context)) * context)
    return out


def describe_law(doc: dict) -> str:
    """One line per law, e.g. `lr = 3.1e-02 x N^-0.312 (±0.05; 3 members, N = params_total)`."""
    lines = []
    for key, fit in doc.get("law", {}).items():
        se = f" ±{fit['b_se']:.2g}" if fit.get("b_se") is not None else ""
        lines.append(f"{key} = {fit['a']:.3g} x N^{fit['b']:.3f}{se} ({fit['n_points']} member(s), "
                     f"N = params_{doc.get('params', 'total')})" + (f"; {fit['note']}" if fit.get("note") else ""))
    return "\n".join(lines)
