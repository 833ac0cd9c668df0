"""Learning-rate schedules as pure functions of the step (so a resumed run needs only the step)."""
from __future__ import annotations

import math


def lr_at(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float, kind: str) -> float:
    """LR for optimiser step `step` (0-based): linear warmup to `lr`, then `kind` decay to `min_lr`."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if kind == "constant":
        return lr
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    if kind == "linear":
        return min_lr + (lr - min_lr) * (1.0 - progress)
    if kind == "cosine":
        return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {kind!r}")


def warmup_steps(total_steps: int, warmup: float) -> int:
    return int(math.ceil(warmup * total_steps)) if warmup > 0 else 0


def step_geometry(batch_tokens: int, context: int, micro_batch: int, world: int) -> tuple[int, int, int]:
    """(sequences per optimiser step, rows per micro-batch on each rank, micro-batches per step).

    The global batch is exact whatever the world size: round(batch_tokens / context) sequences, dealt
    round-robin to `world` ranks; each rank's share goes in `accum` micro-batches of at most
    `micro_batch` rows (rows a rank lacks are padding without labels)."""
    seqs = max(1, round(batch_tokens / context))
    per_rank = math.ceil(seqs / world)
    accum = math.ceil(per_rank / micro_batch)
    return seqs, math.ceil(per_rank / accum), accum
