"""RunSpec: everything one training run needs, resolved (written as `spec.json` in the run directory)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from .config import DataConfig, EvalConfig, TrainingConfig
from .errors import InputError
from .params import ParamCounts
from .typed_config import from_dict


@dataclass
class RunSpec:
    key: str
    study: str
    family: str
    member: str
    setup: str                    # interleaved | textless | text
    init: str                     # textlm | random
    variant: Optional[str]        # ablation variant name, None for the base study
    arch: dict[str, Any]          # architecture config (before the vocabulary change)
    weights: Optional[str]        # HF id or local folder for init: textlm
    tokenizer: Optional[str]      # HF id or local folder of the tokenizer
    vocab_rows: int
    base_rows: int                # rows shared with the base model's embedding
    params: ParamCounts
    tokens: int                   # training budget, counted in label tokens
    flops: float                  # under `flops_convention`
    flops_convention: str
    cost_flops: float             # 6N(all) D + attention: what the hardware actually does
    data: DataConfig
    training: TrainingConfig
    eval: EvalConfig
    # Where results are mirrored; not part of the cell key (it does not change the result).
    tracking: dict[str, Any] = field(default_factory=dict)
    # WSD trunks (sweeps.trunks): a branch cell names its trunk's run dir and the step it branches at,
    # {"key": ..., "step": ...}; a trunk (role "trunk") lists its branch steps, {"steps": [...],
    # "branches": {cell key: step}}. Not part of the cell key: a branch computes what a single WSD run
    # to its budget computes.
    role: str = "cell"
    trunk: Optional[dict[str, Any]] = None

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params.total

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "spec.json") -> "RunSpec":
        try:
            kwargs = dict(data)
            kwargs["params"] = ParamCounts(**data["params"])
            kwargs["data"] = from_dict(DataConfig, data["data"], "data")
            kwargs["training"] = from_dict(TrainingConfig, data["training"], "training")
            kwargs["eval"] = from_dict(EvalConfig, data["eval"], "eval")
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = set(kwargs) - names
            if unknown:
                raise InputError(f"unknown key {sorted(unknown)[0]!r}")
            return cls(**kwargs)
        except (KeyError, TypeError) as e:
            raise InputError(f"{source}: not a run spec ({type(e).__name__}: {e})") from None
        except InputError as e:
            raise InputError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: Path) -> "RunSpec":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: cannot read the run spec ({e})") from None
        return cls.from_json(data, str(path))
