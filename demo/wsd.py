"""`launch.py demo --wsd`: the micro study's interleaved cells trained again with `schedule: wsd` (one
constant-LR trunk per member, each budget a decay branch off it) beside the cosine cells the demo
trained, and a report section that compares them: per budget the two losses, the exponents of both
with intervals and whether they agree, and the compute each spent (analysis.wsd_comparison).

Runs the demo first (its stages are reused when fresh), then the WSD cells through the same submit
path and wait loop (sweeps.lifecycle), into `<root>/<study>-wsd/`; the section is
`<root>/<study>-wsd/report/wsd-vs-cosine.md` with `wsd-vs-cosine.png` and `.json` beside it.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable, Optional

from analysis.wsd_comparison import Pair, compare, compute_json, figure, markdown
from common.rundir import RunDir
from scaling.fmt import duration
from sweeps.grid import expand
from sweeps.study import Study
from sweeps.trunks import sharing

from demo.stages import DEFAULT_STUDY, DemoSpec, _layout, _rel, run_cells, run_demo


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


def run_wsd(study_path: str | Path = DEFAULT_STUDY, log: Callable[[str], None] = print,
            spec: Optional[DemoSpec] = None) -> dict:
    spec = spec or DemoSpec()
    demo = run_demo(study_path, log, spec)
    t0 = time.time()
    lay = _layout(Path(study_path), spec)
    study = lay.study
    w = wsd_study(study)
    log("")
    log(f"[wsd] {w.name}: the interleaved cells again with schedule wsd "
        f"({w.training.decay_shape} decay over {w.training.decay_fraction:g} of each budget)")
    wsd_results = run_cells(w, log, spec, what="WSD cells")
    cells_w = expand(w)
    cosine = {(c.member, c.tokens): c for c in expand(study) if c.setup == "interleaved"}
    pairs, cos_results = [], {}
    for c in cells_w:
        match = cosine.get((c.member, c.tokens))
        res_c = RunDir(study.study_dir / match.key).result() if match is not None else None
        res_w = wsd_results.get(c.key)
        if not res_c or not res_w:
            continue
        cos_results[match.key] = res_c
        pairs.append(Pair(c.member, float(c.params.total), float(c.tokens), float(res_c["val_loss"]["speech"]),
                          float(res_w["val_loss"]["speech"])))
    cmp = compare(pairs, seed=0)
    sh = sharing(cells_w)
    cos_cells = [cosine[(p.member, int(p.tokens))] for p in pairs]
    comp = compute_json(sum(c.tokens for c in cos_cells), sum(c.cost_flops for c in cos_cells),
                        sh.tokens_shared if sh else sum(c.tokens for c in cells_w),
                        sh.cost_flops_shared if sh else sum(c.cost_flops for c in cells_w),
                        _seconds(cos_results), _seconds(wsd_results))
    out = w.study_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(cmp, comp, f"{w.training.decay_shape}, last {w.training.decay_fraction:g} of its steps")
    (out / "wsd-vs-cosine.md").write_text(text + "\n![WSD vs cosine](wsd-vs-cosine.png)\n")
    (out / "wsd-vs-cosine.json").write_text(json.dumps({"comparison": cmp, "compute": comp}, indent=1))
    if "pairs" in cmp:
        figure(cmp, out / "wsd-vs-cosine.png")
    dt = time.time() - t0
    log(f"[wsd] done in {duration(dt)} ({dt:.1f}s); demo {demo.seconds:.1f}s; total {demo.seconds + dt:.1f}s")
    for line in text.splitlines():
        if line.startswith(("Mean paired", "| a (size)", "| b (tokens)", "Shared trunks", "| cosine |", "| wsd |")):
            log(f"  {line}")
    log(f"section: {_rel(out / 'wsd-vs-cosine.md')}")
    return {"comparison": cmp, "compute": comp, "seconds": dt, "demo_seconds": demo.seconds,
            "section": out / "wsd-vs-cosine.md"}
