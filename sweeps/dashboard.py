"""The study's dashboard in the MLflow UI, written once per `submit`, `sync` and `report` (never by a
training cell): the experiment (created as a classic runs table with the study's saved view), its
description summarising the grid from the run directories, how runs are tagged, and a link to the
newest report run. A description somebody wrote by hand is kept.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

from common.mlflow_contract import (KIND_TAG, NOTE_TAG, REPORT_LINE, STUDY_HEADER, ensure_experiment, redact_uri,
                                    set_experiment_tag)
from common.rundir import RunDir, cell_dirs
from scaling.fmt import short_count

from .study import Study


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def study_description(study_dir: Path, name: str, experiment_id: Optional[str] = None,
                      report_run_id: Optional[str] = None) -> str:
    """The experiment's description in the MLflow UI (markdown): the study's grid summarised from the
    spec.json files of its run directories, how its runs are tagged, and the report line."""
    specs = []
    for path in cell_dirs(study_dir):
        spec = RunDir(path).spec()
        if spec.get("key"):
            specs.append(spec)
    lines = [f"{STUDY_HEADER}`{name}`**" + (f": {_grid_summary(specs)}" if specs else ".")]
    lines.append(f"Run directories (the source of truth): `{Path(study_dir).resolve()}`.")
    lines.append("Each cell is a run named by its key, tagged `kind = cell`, family, member, init, setup, variant, "
                 "tokens_budget, flops, params and state (RUNNING / DONE / FAILED / INTERRUPTED); filter e.g. "
                 "`tags.setup = 'textless' and tags.state = 'DONE'`. Metrics are stepped by tokens seen: loss, lr, "
                 "tokens_per_second, val_loss/<stream>, eval/<benchmark>, final/... .")
    lines.append(report_line(experiment_id, report_run_id))
    return "\n\n".join(lines)


def report_line(experiment_id: Optional[str], report_run_id: Optional[str]) -> str:
    """The description's report line: a link to the report run, or how to make one."""
    if experiment_id and report_run_id:
        return (f"{REPORT_LINE} [the newest report run](#/experiments/{experiment_id}/runs/{report_run_id}) "
                "(report.md, report.html, fits.json and the figures are its artifacts).")
    return f"{REPORT_LINE} none yet (`launch.py report STUDY` logs one as a run named `report`)."


def _grid_summary(specs: list[dict]) -> str:
    def uniq(key):
        return list(dict.fromkeys(str(s[key]) for s in specs if s.get(key)))

    members: dict[str, dict[str, float]] = {}
    for s in specs:
        total = (s.get("params") or {}).get("total") if isinstance(s.get("params"), dict) else None
        members.setdefault(str(s.get("family")), {})[str(s.get("member"))] = total or 0
    fams = "; ".join(f"`{f}` ({', '.join(sorted(m, key=lambda k: m[k]))})" for f, m in members.items())
    flops = sorted({float(f"{s['flops']:.3g}") for s in specs if _number(s.get("flops"))})
    tokens = [s["tokens"] for s in specs if _number(s.get("tokens"))]
    parts = [f"{len(specs)} cells", f"famil{'y' if len(members) == 1 else 'ies'} {fams}",
             f"setup {', '.join(uniq('setup'))}", f"init {', '.join(uniq('init'))}"]
    if uniq("variant"):
        parts.append(f"variants {', '.join(uniq('variant'))}")
    if flops:
        conv = ", ".join(uniq("flops_convention")) or "6ND"
        parts.append(f"compute {', '.join(f'{c:.3g}' for c in flops)} FLOPs ({conv})" if len(flops) <= 8
                     else f"compute {flops[0]:.3g} to {flops[-1]:.3g} FLOPs in {len(flops)} budgets ({conv})")
    if tokens:
        lo, hi = short_count(min(tokens)), short_count(max(tokens))
        parts.append(f"{lo} tokens" if lo == hi else f"{lo} to {hi} tokens")
    return "; ".join(parts) + "."


def _newest_report(client, experiment_id: str) -> Optional[str]:
    """Id of the newest finished run tagged kind=report in the experiment, or None."""
    runs = client.search_runs([experiment_id], f"tags.{KIND_TAG} = 'report' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def describe(client, experiment_id: str, name: str, study_dir: Path) -> str:
    """The study description with the newest report run linked (see `study_description`)."""
    return study_description(study_dir, name, experiment_id, _newest_report(client, experiment_id))


def write_dashboard(study: Study, uri: str, report_run_id: Optional[str] = None) -> Optional[str]:
    """Create the study's experiment if needed and write its description (the grid as the run dirs
    hold it, the newest report run or `report_run_id`); a description somebody wrote by hand stays.
    Returns the experiment id; tracking errors are a warning (the jobs' mirrors cope), None."""
    name = study.tracking.experiment or study.name
    try:
        from mlflow import MlflowClient   # heavy: imported only when a study tracks

        client = MlflowClient(tracking_uri=uri)
        exp_id = ensure_experiment(client, name, f"slm-scaling study {study.name}", uri)
        current = client.get_experiment(exp_id).tags.get(NOTE_TAG) or ""
        if current and not current.startswith((STUDY_HEADER, "slm-scaling study ")):
            return exp_id   # somebody's own description
        run_id = report_run_id or _newest_report(client, exp_id)
        text = study_description(study.study_dir, name, exp_id, run_id)
        if text != current:
            set_experiment_tag(client, exp_id, NOTE_TAG, text)
        return exp_id
    except Exception as e:
        print(f"warning: MLflow at {redact_uri(uri)}: the study's dashboard was not written ({type(e).__name__})",
              file=sys.stderr)
        return None
