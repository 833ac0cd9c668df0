"""GPU-hour estimates: from FLOPs, the GPU's bf16 dense peak and an MFU (assumed, or measured from the
study's finished cells)."""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from scaling.spec import RunSpec

from .study import Study

# Dense bf16 tensor-core peaks, TFLOP/s (vendor datasheets; V100 is fp16).
PEAK_TFLOPS = {"a100": 312.0, "h100": 989.0, "h200": 989.0, "b200": 2250.0, "l40s": 362.0, "v100": 125.0}


@dataclass
class CostBasis:
    peak_flops: float            # per GPU, FLOP/s
    mfu: float                   # used for cells not yet finished
    measured_cells: int          # finished cells the MFU was measured on (0: assumed)
    gpus_per_cell: int

    def describe(self) -> str:
        if self.measured_cells:
            return (f"measured: median MFU {self.mfu:.1%} over {self.measured_cells} finished cell(s); "
                    "finished cells count their real wall time")
        return f"assumed MFU {self.mfu:.0%} of {self.peak_flops / 1e12:g} TFLOP/s per GPU"


def _finished(study_dir: Path, keys: set[str]) -> dict[str, dict]:
    """result.json of the study's finished cells that are in this plan."""
    out = {}
    if not study_dir.is_dir():
        return out
    for key in keys:
        path = study_dir / key / "result.json"
        if path.is_file():
            try:
                out[key] = json.loads(path.read_text())
            except ValueError:
                continue
    return out


def estimate(study: Study, cells: list[RunSpec]) -> tuple[dict[str, float], CostBasis]:
    """GPU-hours per cell key, and the basis of the estimate."""
    ex = study.executor
    peak = (ex.peak_tflops or PEAK_TFLOPS[ex.gpu_type.lower()]) * 1e12
    gpus = ex.nodes * ex.gpus_per_node
    by_key = {c.key: c for c in cells}
    done = _finished(study.study_dir, set(by_key))
    measured: list[float] = []
    actual: dict[str, float] = {}
    for key, res in done.items():
        wall, tps = res.get("wall_seconds"), res.get("tokens_per_second")
        if not isinstance(wall, (int, float)) or not isinstance(tps, (int, float)) or wall <= 0 or tps <= 0:
            continue
        cell = by_key[key]
        measured.append(cell.cost_flops / cell.tokens * tps / gpus / peak)
        actual[key] = wall * gpus / 3600.0
    mfu = statistics.median(measured) if measured else ex.assumed_mfu
    basis = CostBasis(peak, mfu, len(measured), gpus)
    hours = {c.key: actual.get(c.key, c.cost_flops / (peak * mfu) / 3600.0) for c in cells}
    return hours, basis
