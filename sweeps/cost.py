"""GPU-hour estimates: from FLOPs, the GPU's bf16 dense peak and an MFU (assumed, or measured from the
study's finished cells); and the GPUs each cell needs for its memory (scaling.memory)."""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from common.rundir import RunDir
from scaling.memory import GIB, Allocation, Workload, allocate
from scaling.spec import RunSpec

from .gpus import GPU_MEMORY_GB, PEAK_TFLOPS
from .study import Study


def gpu_memory_bytes(ex) -> Optional[float]:
    """Memory of one of the executor's GPUs (executor.gpu_memory_gb, else the table); None for `cpu`
    or a GPU type the table does not know."""
    if ex.gpu_type.lower() == "cpu":
        return None
    gb = ex.gpu_memory_gb if ex.gpu_memory_gb is not None else GPU_MEMORY_GB.get(ex.gpu_type.lower())
    return None if gb is None else gb * GIB


def cell_allocation(study: Study, cell: RunSpec, cache: Optional[dict] = None) -> Optional[Allocation]:
    """The GPUs `cell` needs for its memory and gets on this study's executor: max(nodes x
    gpus_per_node, the smallest count that fits) in whole nodes (scaling.memory.allocate); None when
    the executor runs on CPUs (or its GPU memory is unknown): the study's resources as they are.
    `cache` (a dict) shares the answer between cells of the same shape and memory settings."""
    ex = study.executor
    gpu_bytes = gpu_memory_bytes(ex)
    if gpu_bytes is None:
        return None
    key = None
    if cache is not None:
        tr = cell.training
        key = (json.dumps(cell.arch, sort_keys=True, default=str), cell.vocab_rows, cell.params,
               Workload.of(tr), tr.sharding, tr.cpu_offload)
        if key in cache:
            return cache[key]
    alloc = allocate(cell, gpu_bytes, base=ex.nodes * ex.gpus_per_node, per_node=ex.gpus_per_node)
    if cache is not None:
        cache[key] = alloc
    return alloc


def cell_nodes(study: Study, cell: RunSpec, alloc: Optional[Allocation] = None) -> int:
    """Nodes a cell's job asks for."""
    alloc = alloc if alloc is not None else cell_allocation(study, cell)
    return study.executor.nodes if alloc is None else alloc.nodes


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
        result = RunDir(study_dir / key).result()
        if result is not None:
            out[key] = result
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
