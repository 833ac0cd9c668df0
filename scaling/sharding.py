"""Sharded data parallelism for cells bigger than one GPU: PyTorch FSDP2 (`fully_shard`), applied directly.

Why FSDP2 directly rather than through accelerate's FSDP plugin: the sharding units must be exactly
the decoder blocks that `compile_blocks` compiles (one unit and one compiled graph per block) plus a
root unit that owns embeddings, final norm and the output head, which the fused head + loss
(`LossModel`) reads outside any submodule's forward; the checkpoints are torch.distributed.checkpoint
keyed by parameter name (scaling/checkpoint.py), which reshard across world sizes. accelerate still
sets up the process group, the device and autocast, and wraps unsharded cells in DDP.

Numerics: fp32 master parameters, gradients and AdamW state, sharded over the ranks. Under bf16 the
parameters are all-gathered in bf16 (MixedPrecisionPolicy param_dtype) and gradients reduce-scattered
in fp32, the recipe of torchtitan / Megatron: the compute is the autocast baseline's except that
norms and embeddings also see bf16 weights. In fp32 the sharded step is the unsharded step up to the
order of floating-point sums (tests/test_sharded.py).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn as nn

from .lm_step import LossModel, decoder_blocks
from .memory import needs_sharding


def wanted(spec, device: torch.device) -> bool:
    """Whether this cell trains sharded: `training.sharding` fsdp, or auto and one unsharded replica
    (weights, gradients, optimizer state, activations) does not fit this GPU (scaling.memory)."""
    mode = spec.training.sharding
    if mode != "auto":
        return mode == "fsdp"
    if device.type != "cuda":
        return False

    return needs_sharding(spec, torch.cuda.get_device_properties(device).total_memory)


def shard(model: LossModel, bf16: bool, cpu_offload: bool) -> LossModel:
    """fully_shard each decoder block, then the LossModel as the root unit (in place)."""
    import torch.distributed as dist  # heavy: torch only for the training path
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard  # heavy: torch only for the training path

    if not dist.is_initialized():  # one process (e.g. one GPU with CPU offload): a group of one
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo",
                                store=dist.HashStore(), rank=0, world_size=1)
    kwargs: dict[str, Any] = {}
    if bf16:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=torch.cuda.is_available())
    blocks = decoder_blocks(model.lm)
    if blocks is not None:
        for i, block in enumerate(blocks):
            # the last block's parameters are needed again first in backward: keep them gathered
            fully_shard(block, reshard_after_forward=i < len(blocks) - 1, **kwargs)
    fully_shard(model, **kwargs)
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule  # heavy: torch only for the training path

    return isinstance(model, FSDPModule)


@contextmanager
def gathered(model: nn.Module) -> Iterator[None]:
    """The root unit's parameters gathered, so the inner LM can be called outside LossModel.forward
    (evaluation); the blocks gather their own."""
    if not is_sharded(model):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Collective: the LM's full (unsharded) state dict on CPU, on rank 0 (empty elsewhere), keyed as
    `lm.state_dict()`."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict  # heavy: torch only for the training path

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    lm = model.lm
    every = {n for n, _ in lm.named_parameters(remove_duplicate=False)}
    aliases = every - {n for n, _ in lm.named_parameters()}   # tied weights: saved once, as transformers does
    return {k[len("lm."):]: v for k, v in sd.items() if k.startswith("lm.") and k[len("lm."):] not in aliases}
