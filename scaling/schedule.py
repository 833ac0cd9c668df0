"""Learning-rate schedules as pure functions of the step (so a resumed run needs only the step), and the
step arithmetic a planner shares with the trainer (torch-free: sweeps imports it).

`wsd` (warmup-stable-decay, Hägele et al. 2024): linear warmup, constant LR, then a decay over the last
`decay_fraction` of the optimiser steps to `min_lr` in one of three shapes. Every step before the decay
starts has the LR of a constant run, so one constant-LR trunk serves every budget of a model: a budget's
run equals the trunk up to its branch step (`wsd_branch_step`) and its own decay after it.
"""
from __future__ import annotations

import math

DECAY_SHAPES = ("linear", "sqrt", "cosine")


def lr_at(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float, kind: str,
          decay_fraction: float = 0.2, decay_shape: str = "linear") -> float:
    """LR for optimiser step `step` (0-based): linear warmup to `lr`, then `kind` decay to `min_lr`."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if kind == "constant":
        return lr
    if kind == "wsd":
        start = wsd_branch_step(total_steps, decay_fraction)
        if step < start:
            return lr
        p = min((step - start + 1) / (total_steps - start), 1.0)   # the last step runs at min_lr
        if decay_shape == "linear":
            return lr - (lr - min_lr) * p
        if decay_shape == "sqrt":     # Hägele et al.'s 1 - sqrt
            return lr - (lr - min_lr) * math.sqrt(p)
        if decay_shape == "cosine":
            return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * p))
        raise ValueError(f"unknown decay shape {decay_shape!r}")
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    if kind == "linear":
        return min_lr + (lr - min_lr) * (1.0 - progress)
    if kind == "cosine":
        return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {kind!r}")


def wsd_decay_steps(total_steps: int, decay_fraction: float) -> int:
    """Optimiser steps of a WSD run's decay: round(f x steps), at least one and at most all."""
    return min(max(1, int(round(decay_fraction * total_steps))), total_steps)


def wsd_branch_step(total_steps: int, decay_fraction: float) -> int:
    """The step a WSD run's decay starts at: its state before that step is the constant-LR trunk's."""
    return total_steps - wsd_decay_steps(total_steps, decay_fraction)


def warmup_steps(total_steps: int, warmup: float) -> int:
    return int(math.ceil(warmup * total_steps)) if warmup > 0 else 0


def warmup_steps_of(training, total_steps: int, step_tokens: int) -> int:
    """A run's warmup in optimiser steps: `warmup_tokens` when set (a WSD trunk's warmup must not depend
    on the budget), else the `warmup` share of its steps."""
    if getattr(training, "warmup_tokens", None) is not None:
        return int(math.ceil(training.warmup_tokens / step_tokens))
    return warmup_steps(total_steps, training.warmup)


def step_tokens_of(batch_tokens: int, context: int) -> int:
    """Tokens per optimiser step (whatever the world size): whole sequences of `context` tokens."""
    return max(1, round(batch_tokens / context)) * context


def total_steps_of(tokens: int, batch_tokens: int, context: int) -> int:
    return math.ceil(tokens / step_tokens_of(batch_tokens, context))


def step_geometry(batch_tokens: int, context: int, micro_batch: int, world: int) -> tuple[int, int, int]:
    """(sequences per optimiser step, rows per micro-batch on each rank, micro-batches per step).

    The global batch is exact whatever the world size: round(batch_tokens / context) sequences, dealt
    round-robin to `world` ranks; each rank's share goes in `accum` micro-batches of at most
    `micro_batch` rows (rows a rank lacks are padding without labels)."""
    seqs = step_tokens_of(batch_tokens, context) // context
    per_rank = math.ceil(seqs / world)
    accum = math.ceil(per_rank / micro_batch)
    return seqs, math.ceil(per_rank / accum), accum
