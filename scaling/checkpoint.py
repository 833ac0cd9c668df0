"""Checkpoints in the run directory: `checkpoints/step_<n>/`, one per checkpointed step, the newest K kept.

A checkpoint is
- the model and optimizer state through torch.distributed.checkpoint (DCP): every rank writes its own
  shards (`__<rank>_0.distcp`, `.metadata`), keyed by parameter name, so it loads into any world size
  and into a sharded (FSDP2) or an unsharded model alike (DCP reshards on load);
- `meta.pt`: what exists once (schedule, step, tokens, data position, counters), written by rank 0;
- `rng_rank<r>.pt`: each rank's RNG states (a rank with no file of its own, after a change of world
  size, takes rank 0's).

Written atomically: every rank writes into `step_<n>.tmp`, and after a barrier rank 0 renames it into
place, so a rank killed mid-write leaves no checkpoint that looks complete. Loaded with
`torch.load(weights_only=True)` and DCP (tensors only).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist

from common.rundir import checkpoint_complete, checkpoint_name

META = "meta.pt"


def _dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _dist() else 0


def _barrier() -> None:
    if _dist():
        dist.barrier()


def latest(run_dir: Path, also: Optional[Path] = None) -> Optional[Path]:
    """The newest complete checkpoint of the run dir (or of `also`, a WSD trunk's branch points)."""
    done = [p for root in (_dir(run_dir), also) if root is not None for p in Path(root).glob("step_*")
            if "." not in p.name and checkpoint_complete(p)]
    return max(done, key=lambda p: p.name) if done else None


def _state_dicts(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict  # heavy: torch only for the training path

    msd, osd = get_state_dict(model, optimizer)
    return {"model": msd, "optimizer": osd}


def save(run_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         meta: dict[str, Any], keep: Optional[int], root: Optional[Path] = None) -> Path:
    """Collective: every rank calls it. `model` is the unwrapped module (sharded or not). `root`: another
    folder than `checkpoints/` (a trunk's branch points); keep=None prunes nothing."""
    import torch.distributed.checkpoint as dcp  # heavy: torch only for the training path

    root = Path(root) if root is not None else _dir(run_dir)
    final = root / checkpoint_name(step)
    tmp = root / f"{checkpoint_name(step)}.tmp"
    rank = _rank()
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    _barrier()
    dcp.save(_state_dicts(model, optimizer), checkpoint_id=str(tmp))
    torch.save(rng_state(), tmp / f"rng_rank{rank}.pt")
    if rank == 0:
        torch.save(meta, tmp / META)
    _barrier()
    if rank == 0:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        if keep is not None:
            for old in sorted(p for p in root.glob("step_*") if "." not in p.name)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Collective: load model and optimizer state in place (any world size), restore this rank's RNG
    states; returns the meta dict."""
    import torch.distributed.checkpoint as dcp  # heavy: torch only for the training path
    from torch.distributed.checkpoint.state_dict import set_state_dict  # heavy: torch only for the training path

    path = Path(path)
    state = _state_dicts(model, optimizer)
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    own = path / f"rng_rank{_rank()}.pt"
    set_rng_state(torch.load(own if own.is_file() else path / "rng_rank0.pt", weights_only=True))
    return torch.load(path / META, map_location="cpu", weights_only=True)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
