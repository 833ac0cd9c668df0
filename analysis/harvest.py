"""Read a study's run directories into tidy pandas DataFrames.

Layout (the run-directory contract): ``<root>/<study>/<cell key>/`` holding ``spec.json``,
``state.json`` ({"state", "attempts", "job_ids"}), ``metrics.jsonl`` (one object per logging
step) and, once finished, ``result.json``. Every parameter count in result.json is kept
(params_total, params_embedding, params_nonembedding, params_output_head, params_new_rows)
so the N convention is chosen at analysis time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from analysis.errors import InputError

PARAM_KEYS = ("total", "embedding", "nonembedding", "output_head", "new_rows")
VAL_KEYS = ("text", "interleaved", "speech")
EVAL_KEYS = ("swuggy", "sblimp", "ssc", "tsc")
SCALAR_KEYS = ("key", "study", "family", "member", "init", "setup", "variant", "tokens", "flops", "loss",
               "wall_seconds", "tokens_per_second", "mlflow_run_id")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: unreadable JSON ({type(err).__name__}: {err})") from None


def _study_dirs(root: Path, study: str | None):
    if study is not None:
        d = root / study
        if not d.is_dir():
            raise InputError(f"{d}: no such study directory under {root}")
        return [d]
    if not root.is_dir():
        raise InputError(f"{root}: no such directory")
    return sorted(p for p in root.iterdir() if p.is_dir())


def _run_dirs(study_dir: Path):
    return sorted(p for p in study_dir.iterdir() if p.is_dir() and (p / "spec.json").exists())


def result_row(run_dir: Path) -> dict:
    """One flat row for a run: state plus every result.json field (NaN/None until it exists)."""
    run_dir = Path(run_dir)
    state = _read_json(run_dir / "state.json") if (run_dir / "state.json").exists() else {}
    row = {"run_dir": str(run_dir), "study": run_dir.parent.name, "key": run_dir.name,
           "state": state.get("state", "PENDING"), "attempts": int(state.get("attempts", 0))}
    for k in SCALAR_KEYS:
        row.setdefault(k, None)
    for k in ("tokens", "flops", "loss", "wall_seconds", "tokens_per_second"):
        row[k] = np.nan
    for k in PARAM_KEYS:
        row[f"params_{k}"] = np.nan
    for k in VAL_KEYS:
        row[f"val_loss_{k}"] = np.nan
    for k in EVAL_KEYS:
        row[f"eval_{k}"] = np.nan
    spec_path = run_dir / "spec.json"
    if spec_path.exists():
        spec = _read_json(spec_path)
        for k in ("family", "member", "init", "setup", "variant"):
            if isinstance(spec, dict) and k in spec and not isinstance(spec[k], (dict, list)):
                row[k] = spec[k]
    res_path = run_dir / "result.json"
    if res_path.exists():
        res = _read_json(res_path)
        for k in SCALAR_KEYS:
            if k in res:
                row[k] = res[k]
        for k, v in (res.get("params") or {}).items():
            row[f"params_{k}"] = v
        for k, v in (res.get("val_loss") or {}).items():
            row[f"val_loss_{k}"] = v
        for k, v in (res.get("eval") or {}).items():
            row[f"eval_{k}"] = v
    return row


def harvest_results(root, study: str | None = None):
    """DataFrame with one row per run directory (all studies under root, or one study).

    Columns: run_dir, study, key, state, attempts, family, member, init, setup, variant,
    params_{total,embedding,nonembedding,output_head,new_rows}, tokens, flops, loss,
    val_loss_{text,interleaved,speech}, eval_{swuggy,sblimp,ssc,tsc}, wall_seconds,
    tokens_per_second, mlflow_run_id. Unfinished runs have NaN results.
    Raises InputError naming the file for a missing root/study or unreadable JSON.
    """
    import pandas as pd

    rows = [result_row(d) for s in _study_dirs(Path(root), study) for d in _run_dirs(s)]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    numeric = [c for c in frame.columns if c.startswith(("params_", "val_loss_", "eval_"))]
    numeric += ["tokens", "flops", "loss", "wall_seconds", "tokens_per_second"]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
    return frame


def harvest_curves(root, study: str | None = None):
    """Long DataFrame of every run's metrics.jsonl: study, key, step, tokens, flops, loss, lr, val_loss/*.

    A line that is not valid JSON (e.g. half-written by a running job) is skipped; the count
    of skipped lines is in ``frame.attrs["skipped_lines"]``.
    """
    import pandas as pd

    records, skipped = [], 0
    for s in _study_dirs(Path(root), study):
        for d in _run_dirs(s):
            path = d / "metrics.jsonl"
            if not path.exists():
                continue
            for line in path.read_text().splitlines():
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    skipped += 1
                    continue
                records.append({"study": s.name, "key": d.name, **rec})
    frame = pd.DataFrame(records)
    frame.attrs["skipped_lines"] = skipped
    return frame


def fit_points(frame, params_col: str = "params_total", loss_col: str = "val_loss_speech",
               group_col: str | None = "setup"):
    """Finished runs as the (params, tokens, loss, flops, group) table ``fit_points_csv`` reads.

    Rows whose state is not DONE or whose chosen loss is missing are dropped.
    """
    done = frame[(frame["state"] == "DONE") & frame[loss_col].notna() & frame[params_col].notna()]
    cols = {params_col: "params", "tokens": "tokens", loss_col: "loss", "flops": "flops"}
    out = done[list(cols)].rename(columns=cols)
    if group_col is not None:
        out["group"] = done[group_col].astype(str).to_numpy()
    return out.reset_index(drop=True)
