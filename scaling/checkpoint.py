"""Checkpoints in the run directory: `checkpoints/step_<n>/state.pt`, written atomically (a temporary
folder renamed into place), loaded with `torch.load(weights_only=True)`, the newest K kept."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Optional

import torch


def _dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest(run_dir: Path) -> Optional[Path]:
    done = sorted(p for p in _dir(run_dir).glob("step_*") if (p / "state.pt").is_file() and "." not in p.name)
    return done[-1] if done else None


def save(run_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    root = _dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:09d}"
    tmp = root / f"step_{step:09d}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(state, tmp / "state.pt")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(p for p in root.glob("step_*") if "." not in p.name)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(path: Path) -> dict[str, Any]:
    return torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=True)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
