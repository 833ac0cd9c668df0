"""Read a study's run directories into tidy pandas DataFrames.

Layout (the run-directory contract): ``<root>/<study>/<cell key>/`` holding ``spec.json``,
``state.json`` ({"state", "attempts", "job_ids"}), ``metrics.jsonl`` (one object per logging
step) and, once finished, ``result.json``. Every parameter count in result.json is kept
(params_total, params_embedding, params_nonembedding, params_output_head, params_new_rows,
params_new_row_params, params_vocab_rows) so the N convention is chosen at analysis time.
``empty_row``/``apply_labels``/``apply_result``/``tidy_frame`` are shared with
``analysis.mlflow_io`` so both sources give the same columns.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from analysis.errors import InputError
from common.rundir import RunDir, RunDirError, cell_dirs

PARAM_KEYS = ("total", "embedding", "nonembedding", "output_head", "new_rows", "new_row_params", "vocab_rows")
VAL_KEYS = ("text", "interleaved", "speech")
EVAL_KEYS = ("swuggy", "sblimp", "ssc", "tsc")  # always present as columns; other benchmarks are added as found
LABEL_KEYS = ("family", "member", "init", "setup", "variant")
SPEC_KEYS = (*LABEL_KEYS, "flops_convention")  # known from spec.json before the run finishes
NUMERIC_KEYS = ("tokens", "tokens_budget", "flops", "cost_flops", "steps", "loss", "wall_seconds",
                "tokens_per_second")
SCALAR_KEYS = ("key", "study", *LABEL_KEYS, *NUMERIC_KEYS, "flops_convention", "mlflow_run_id")
NUMERIC_PREFIXES = ("params_", "val_loss_", "eval_", "n_pairs_", "epochs_", "unique_tokens_")


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
    return cell_dirs(study_dir)   # not the WSD trunks: their branches are the cells


def empty_row(study: str | None, key: str | None, state: str = "PENDING", attempts: int = 0) -> dict:
    """A row with every standard column present: labels None, numbers NaN."""
    row = {"study": study, "key": key, "state": state, "attempts": int(attempts)}
    for k in SCALAR_KEYS:
        row.setdefault(k, None)
    for k in NUMERIC_KEYS:
        row[k] = np.nan
    for k in PARAM_KEYS:
        row[f"params_{k}"] = np.nan
    for k in VAL_KEYS:
        row[f"val_loss_{k}"] = np.nan
    for k in EVAL_KEYS:
        row[f"eval_{k}"] = np.nan
    return row


def apply_labels(row: dict, labels: dict) -> dict:
    """Copy the scalar labels (family, member, init, setup, variant, flops_convention) of a spec or
    tag dict into row."""
    for k in SPEC_KEYS:
        if isinstance(labels, dict) and k in labels and not isinstance(labels[k], (dict, list)):
            row[k] = labels[k]
    return row


def apply_result(row: dict, res: dict) -> dict:
    """Flatten a result.json dict into row: scalars as is, params/val_loss/eval as prefixed columns."""
    for k in SCALAR_KEYS:
        if k in res:
            row[k] = res[k]
    for k, v in (res.get("params") or {}).items():
        row[f"params_{k}"] = v
    for k, v in (res.get("val_loss") or {}).items():
        row[f"val_loss_{k}"] = v
    for k, v in (res.get("eval") or {}).items():
        row[f"eval_{k}"] = v
    for k, v in (res.get("eval_n") or {}).items():  # pair counts recorded with the scores win over manifests
        row[f"n_pairs_{k}"] = v
    for k, v in (res.get("epochs") or {}).items():          # passes over each stream (issue 22)
        row[f"epochs_{k}"] = v
    for k, v in (res.get("unique_tokens") or {}).items():   # unique training tokens of each stream
        row[f"unique_tokens_{k}"] = v
    return row


@lru_cache(maxsize=256)
def _manifest_pairs(path: str, mtime_ns: int, size: int) -> int:
    """Pairs in a benchmark manifest (one JSON line each); cached per file version, as every cell names it."""
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def apply_eval_sizes(row: dict, spec: dict) -> dict:
    """``n_pairs_<benchmark>`` from the pair manifests a spec names (each non-blank line is a pair);
    a manifest that is gone leaves the count unknown (NaN), so its accuracy gets no interval."""
    benchmarks = ((spec.get("eval") or {}).get("benchmarks") or []) if isinstance(spec, dict) else []
    for b in benchmarks:
        if not isinstance(b, dict) or "name" not in b or "manifest" not in b:
            continue
        try:
            st = Path(b["manifest"]).stat()
            row[f"n_pairs_{b['name']}"] = _manifest_pairs(str(b["manifest"]), st.st_mtime_ns, st.st_size)
        except OSError:
            row.setdefault(f"n_pairs_{b['name']}", np.nan)
    return row


def result_row(run_dir: Path) -> dict:
    """One flat row for a run: state plus every result.json field (NaN/None until it exists)."""
    rd = RunDir(run_dir)
    try:
        state = rd.state(strict=True)
        row = {"run_dir": str(rd.path), **empty_row(rd.path.parent.name, rd.key,
                                                   state.get("state", "PENDING"), state.get("attempts", 0))}
        spec = rd.spec(strict=True)
        apply_labels(row, spec)
        apply_eval_sizes(row, spec)
        result = rd.result(strict=True)
    except RunDirError as e:
        raise InputError(str(e)) from None
    if result is not None:
        apply_result(row, result)
    return row


def tidy_frame(rows: list[dict]):
    """DataFrame of rows with the numeric columns coerced to float (unparseable -> NaN)."""
    import pandas as pd  # heavy: pandas only when a frame is built

    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    numeric = [c for c in frame.columns if c.startswith(NUMERIC_PREFIXES)] + list(NUMERIC_KEYS)
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
    return frame


def _kept(run_dir: Path, keys) -> bool:
    return keys is None or run_dir.name in keys


def other_runs(study_dir, keys) -> list[str]:
    """Names of the run directories under ``study_dir`` whose key is not in ``keys`` (none without
    keys): cells of another version of the study file, left out of its report."""
    study_dir = Path(study_dir)
    if keys is None or not study_dir.is_dir():
        return []
    return [d.name for d in _run_dirs(study_dir) if d.name not in keys]


def harvest_results(root, study: str | None = None, keys=None):
    """DataFrame with one row per run directory (all studies under root, or one study).

    Columns: run_dir, study, key, state, attempts, family, member, init, setup, variant,
    params_{total,embedding,nonembedding,output_head,new_rows,new_row_params,vocab_rows}, tokens,
    tokens_budget, flops, flops_convention, cost_flops, steps, loss, val_loss_{text,interleaved,speech},
    eval_<benchmark> (swuggy, sblimp, ssc, tsc always; others as found), n_pairs_<benchmark> (pairs behind
    each accuracy: result.json's ``eval_n``, else the lines of the manifest spec.json names),
    epochs_<stream> and unique_tokens_<stream> (runs that record them), wall_seconds,
    tokens_per_second, mlflow_run_id. Unfinished runs have NaN results. ``keys`` (a set of cell
    keys) keeps only those run directories.
    Raises InputError naming the file for a missing root/study or unreadable JSON.
    """
    return tidy_frame([result_row(d) for s in _study_dirs(Path(root), study) for d in _run_dirs(s)
                       if _kept(d, keys)])


def harvest_curves(root, study: str | None = None, keys=None):
    """Long DataFrame of every run's metrics.jsonl: study, key, step, tokens, flops, loss, lr, val_loss/*.

    A line that is not valid JSON (e.g. half-written by a running job) is skipped; the count
    of skipped lines is in ``frame.attrs["skipped_lines"]``.
    """
    import pandas as pd  # heavy: pandas only when a frame is built

    records, skipped = [], 0
    for s in _study_dirs(Path(root), study):
        for d in _run_dirs(s):
            if not _kept(d, keys):
                continue
            lines, bad = RunDir(d).metrics_counted()
            skipped += bad
            records += [{"study": s.name, "key": d.name, **rec} for rec in lines]
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


def done_runs(frame, *required_cols: str):
    """Rows whose state is DONE and whose ``required_cols`` are all present (not NaN)."""
    if frame.empty or "state" not in frame.columns:
        return frame.iloc[0:0]
    keep = frame["state"] == "DONE"
    for col in required_cols:
        keep &= frame[col].notna() if col in frame.columns else False
    return frame[keep]
