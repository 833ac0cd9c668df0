"""WSD trunks: the budgets of one model share one constant-LR trajectory and each decays off it.

With `training.schedule: wsd` (and `share_trunk`, the default) the cells that differ only in their token
budget (same family, member, init, setup, variant, data, training and evaluation settings) name one
trunk in their spec (`sweeps.grid` puts `{"key", "step"}` there). The trunk is a run dir of its own,
`<study dir>/trunk-<family>-<member>-<hash>/`: it trains at the constant LR after warmup up to the
largest branch step and keeps a checkpoint at every branch step (`branch_points/`). Each grid cell is a
branch: it starts from its step's checkpoint (model, optimiser, RNG, data position) and decays to its
budget; its run dir, key, result and MLflow run are an ordinary cell's, and it computes what a single
WSD run to its budget computes (the steps before the decay are the constant run's).

Cost: a model with budgets D1 < ... < Dk (steps S1 < ... < Sk, branch steps Bi = Si - round(f Si))
trains Bk trunk steps plus (Si - Bi) steps per branch, instead of S1 + ... + Sk.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from common.rundir import RunDir, branch_ready as rundir_branch_ready
from scaling.schedule import step_tokens_of
from scaling.spec import RunSpec


@dataclass
class Trunk:
    key: str
    spec: RunSpec                                       # the trunk's own spec (role "trunk")
    branches: dict[str, int] = field(default_factory=dict)   # branch cell key -> its branch step

    @property
    def tokens(self) -> int:
        """Tokens the trunk trains: up to its last branch step."""
        return self.spec.tokens


def is_branch(cell: RunSpec) -> bool:
    return cell.role == "cell" and bool(cell.trunk)


def trunks_of(cells: list[RunSpec]) -> dict[str, Trunk]:
    """The trunks the branch cells among `cells` name, each with the spec it trains by: the spec of its
    largest budget, its budget the tokens up to the last branch step, no MLflow run of its own."""
    groups: dict[str, list[RunSpec]] = {}
    for c in cells:
        if is_branch(c):
            groups.setdefault(c.trunk["key"], []).append(c)
    out = {}
    for key, group in groups.items():
        top = max(group, key=lambda c: c.tokens)
        branches = {c.key: int(c.trunk["step"]) for c in group}
        step_tokens = step_tokens_of(top.training.batch_tokens, top.training.context)
        tokens = max(branches.values()) * step_tokens
        spec = dataclasses.replace(
            top, key=key, tokens=tokens, flops=top.flops / top.tokens * tokens,
            cost_flops=top.cost_flops / top.tokens * tokens, tracking={**top.tracking, "enabled": False},
            role="trunk", trunk={"steps": sorted(set(branches.values())), "branches": branches})
        out[key] = Trunk(key, spec, branches)
    return out


def ensure_trunk_dir(study_dir: Path, trunk: Trunk) -> Path:
    """The trunk's run dir with its spec; its branch list and budget follow the grid (a proposed budget
    adds a branch step; the trunk trains on from its last checkpoint)."""
    return RunDir(Path(study_dir) / trunk.key).create(
        trunk.spec.to_json(), follows=("trunk", "tokens", "flops", "cost_flops")).path


def branch_ready(study_dir: Path, cell: RunSpec) -> bool:
    """Whether a branch can start: its own checkpoint or its trunk's branch point exists."""
    if not is_branch(cell):
        return True
    return rundir_branch_ready(Path(study_dir) / cell.key, cell.trunk["key"], int(cell.trunk["step"]))


@dataclass
class TrunkProgress:
    key: str
    state: str
    step: int                 # the trunk's newest step (metrics)
    tokens: int
    last_step: int            # the largest branch step
    points: list[int]         # branch steps whose checkpoint exists
    ready: list[str]          # branch cells that can start (their point exists)
    waiting: list[str]        # branch cells whose point does not exist yet
    job_id: Optional[str] = None
    error: Optional[str] = None


def progress(study_dir: Path, trunk: Trunk) -> TrunkProgress:
    rd = RunDir(Path(study_dir) / trunk.key)
    s = rd.state() if rd.exists() else {}
    last = rd.last_metrics("tokens") if rd.exists() else {}
    points = set(rd.branch_steps())
    ready = sorted(k for k, b in trunk.branches.items() if b in points)
    waiting = sorted(k for k, b in trunk.branches.items() if b not in points)
    step = max(int(last.get("step", 0)), max(points, default=0))   # it logs on its cadence; points are steps
    return TrunkProgress(trunk.key, s.get("state", "NEW") if s else "NEW", step,
                         int(last.get("tokens", 0)), max(trunk.branches.values()), sorted(points), ready,
                         waiting, s.get("job_id"), s.get("error"))


@dataclass
class Sharing:
    """Tokens and cost-FLOPs of a study's wsd cells trained with and without shared trunks."""
    trunks: int
    branches: int
    tokens_shared: float
    tokens_alone: float
    cost_flops_shared: float
    cost_flops_alone: float

    @property
    def saving(self) -> float:
        return 1.0 - self.cost_flops_shared / self.cost_flops_alone if self.cost_flops_alone else 0.0


def sharing(cells: list[RunSpec]) -> Optional[Sharing]:
    """What sharing trunks saves (None when no cell branches off a trunk): a branch trains its budget
    less the trunk's tokens up to its branch step; a trunk its tokens up to its last branch step."""
    ts = trunks_of(cells)
    if not ts:
        return None
    branches = [c for c in cells if is_branch(c)]
    alone = sum(c.tokens for c in branches)
    alone_f = sum(c.cost_flops for c in branches)
    shared = shared_f = 0.0
    for c in branches:
        own = own_tokens(c)
        shared += own
        shared_f += c.cost_flops / c.tokens * own
    for t in ts.values():
        shared += t.tokens
        shared_f += t.spec.cost_flops
    return Sharing(len(ts), len(branches), shared, alone, shared_f, alone_f)


def own_tokens(cell: RunSpec) -> int:
    """The tokens a cell trains itself (a branch: after its branch step; else its budget)."""
    if not is_branch(cell):
        return cell.tokens
    tr = cell.training
    return max(cell.tokens - int(cell.trunk["step"]) * step_tokens_of(tr.batch_tokens, tr.context), 0)


def trunk_first(study_dir: Path, cell: RunSpec, cells: list[RunSpec]) -> Optional[tuple[Path, int]]:
    """`launch.py train` of a WSD branch whose branch point does not exist yet: (its trunk's run dir,
    created here, and the step to train it to) so the trunk runs first, in the same process."""
    if not is_branch(cell) or branch_ready(study_dir, cell):
        return None
    trunk = trunks_of(cells)[cell.trunk["key"]]
    return ensure_trunk_dir(study_dir, trunk), int(cell.trunk["step"])
