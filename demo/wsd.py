"""The demo's WSD stage (issue 20): the micro study's interleaved cells trained again with `schedule: wsd`
(one constant-LR trunk per member, each budget a decay branch off it) beside the cosine cells of the
study stage, and the comparison the report shows as its section "WSD branches against cosine cells":
per budget the two losses, the exponents of both with intervals and whether they agree, and the compute
each spent (analysis.wsd_comparison). The cells go to `<root>/<study>-wsd/`, through the same submit
path and wait loop as the study's (the stage calls demo.stages.run_cells).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from analysis.wsd_comparison import Pair, compare, compute_json
from common.rundir import RunDir
from sweeps.grid import expand
from sweeps.study import Study
from sweeps.trunks import sharing

COMPARISON = "wsd-vs-cosine.json"   # in the WSD study's dir: what the report stage reads


def wsd_study(study: Study) -> Study:
    """The study's interleaved cells with the WSD schedule (its decay settings as the study gives them)."""
    source = study.source
    w = dataclasses.replace(study, name=f"{study.name}-wsd",
                            training=dataclasses.replace(study.training, schedule="wsd"),
                            grid=dataclasses.replace(study.grid, textless_twin=False))
    w.source = source
    return w


def _seconds(results: dict[str, dict]) -> float:
    """Wall time a set of cells spent: a branch its own decay; each trunk once (up to its last point)."""
    own, trunks = 0.0, {}
    for r in results.values():
        b = r.get("branched_from")
        if b and b.get("wall_seconds") is not None:
            own += r["wall_seconds"] - b["wall_seconds"]
            trunks[b["trunk"]] = max(trunks.get(b["trunk"], 0.0), b["wall_seconds"])
        else:
            own += r.get("wall_seconds", 0.0)
    return own + sum(trunks.values())


def comparison(study: Study, w: Study, wsd_results: dict[str, dict], n_bootstrap: int = 2000) -> Optional[dict]:
    """{"comparison", "compute", "decay"}: each WSD cell against the cosine interleaved cell of the same
    member and budget (held-out speech loss), with the compute each set spent."""
    cells_w = expand(w)
    cosine = {(c.member, c.tokens): c for c in expand(study) if c.setup == "interleaved"}
    pairs, cos_results, cos_cells = [], {}, []
    for c in cells_w:
        match = cosine.get((c.member, c.tokens))
        res_c = RunDir(study.study_dir / match.key).result() if match is not None else None
        res_w = wsd_results.get(c.key)
        if not res_c or not res_w or "speech" not in res_c.get("val_loss", {}):
            continue
        cos_results[match.key] = res_c
        cos_cells.append(match)
        pairs.append(Pair(c.member, float(c.params.total), float(c.tokens), float(res_c["val_loss"]["speech"]),
                          float(res_w["val_loss"]["speech"])))
    sh = sharing(cells_w)
    comp = compute_json(sum(c.tokens for c in cos_cells), sum(c.cost_flops for c in cos_cells),
                        sh.tokens_shared if sh else sum(c.tokens for c in cells_w),
                        sh.cost_flops_shared if sh else sum(c.cost_flops for c in cells_w),
                        _seconds(cos_results), _seconds(wsd_results))
    tr = w.training
    return {"comparison": compare(pairs, n_bootstrap=n_bootstrap, seed=0), "compute": comp,
            "decay": f"{tr.decay_shape}, over the last {tr.decay_fraction:g} of its steps"}
