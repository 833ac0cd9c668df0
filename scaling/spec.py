"""RunSpec: everything one training run needs, resolved (written as `spec.json` in the run directory)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

from .config import DataConfig, EvalConfig, TrainingConfig
from .params import ParamCounts


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

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params.total

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
