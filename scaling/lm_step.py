"""The model as the training loop sees it: token ids and labels in, the summed cross-entropy out.

`LossModel` wraps a transformers causal LM so that what accelerate (and DDP) wrap is the whole step:
- the output head and the loss go through `linear_cross_entropy` (no fp32 logits over the vocabulary)
  when the head is a plain bias-free linear, else through the model's own logits;
- attention can stay inside each packed document (`doc_mask`): every window holds several documents
  separated by eos, and a token should not attend across the boundary. On CUDA this is FlexAttention
  with a block mask (only the blocks on the diagonal's documents are computed); elsewhere SDPA with a
  boolean mask. Positions restart at 0 after each eos, as in a padded batch;
- `compile_blocks` compiles each decoder block (one compiled graph reused by all blocks, so compile
  time does not grow with depth), fusing the norms, rotary embedding, SwiGLU and residual adds.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .linear_ce import IGNORE, linear_cross_entropy

ATTENTION = "slm_doc"  # the attention function registered with transformers


def doc_layout(input_ids: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token document index and position within its document; a document starts after each eos."""
    B, T = input_ids.shape
    starts = torch.zeros_like(input_ids, dtype=torch.bool)
    starts[:, 1:] = input_ids[:, :-1] == eos_id
    idx = torch.arange(T, device=input_ids.device).expand(B, T)
    first = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values
    return starts.cumsum(dim=1), idx - first


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention-function signature; q, k, v are [B, H, T, D], the output [B, T, H, D]."""
    gqa = query.shape[1] != key.shape[1]
    if attention_mask is None:
        out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling,
                                             dropout_p=dropout if module.training else 0.0, enable_gqa=gqa)
    elif isinstance(attention_mask, torch.Tensor):
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=scaling,
                                             dropout_p=dropout if module.training else 0.0, enable_gqa=gqa)
    else:
        from torch.nn.attention.flex_attention import flex_attention  # heavy: torch only for the training path

        out = flex_attention(query, key, value, block_mask=attention_mask, scale=scaling, enable_gqa=gqa)
    return out.transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface  # heavy: transformers only when a model/tokenizer is built

    AttentionInterface.register(ATTENTION, _attention)


def _doc_mask(doc: torch.Tensor, flex: bool):
    B, T = doc.shape
    if flex:
        from torch.nn.attention.flex_attention import create_block_mask  # heavy: torch only for the training path

        def same_doc_causal(b, h, q, kv):
            return (kv <= q) & (doc[b, q] == doc[b, kv])

        return create_block_mask(same_doc_causal, B, None, T, T, device=doc.device)
    causal = torch.ones(T, T, dtype=torch.bool, device=doc.device).tril()
    return ((doc[:, :, None] == doc[:, None, :]) & causal)[:, None]


def _set_attention(lm: nn.Module, name: str) -> str:
    """Switch the attention function of `lm` (and its sub-configs); returns the previous one."""
    before = lm.config._attn_implementation
    for module in lm.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            cfg._attn_implementation = name
    if before != ATTENTION:
        lm._slm_plain_attention = before
    return before


@contextmanager
def standard_forward(lm: nn.Module) -> Iterator[nn.Module]:
    """The plain transformers model for evaluation and saving: its own attention (padding masks work, a
    saved config loads anywhere) and compiled blocks run eagerly (eval shapes vary; no recompiles)."""
    before = _set_attention(lm, getattr(lm, "_slm_plain_attention", lm.config._attn_implementation))
    stance = getattr(torch.compiler, "set_stance", None)
    try:
        if stance is not None:
            with stance("force_eager"):
                yield lm
        else:
            yield lm
    finally:
        _set_attention(lm, before)


def decoder_blocks(lm: nn.Module) -> Optional[nn.ModuleList]:
    """The list of decoder blocks of a transformers causal LM (llama, qwen2, gpt_neox, opt, ...)."""
    n = getattr(lm.config, "num_hidden_layers", None)
    for module in lm.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    return None


def fusable_head(lm: nn.Module) -> bool:
    """Whether logits are exactly `hidden @ head.weight.T` (no bias, scaling or soft-capping)."""
    head = lm.get_output_embeddings()
    cfg = lm.config
    return (isinstance(head, nn.Linear) and head.bias is None
            and getattr(cfg, "final_logit_softcapping", None) is None
            and getattr(cfg, "logit_scale", None) in (None, 1, 1.0)
            and getattr(cfg, "output_mult", None) is None)


class LossModel(nn.Module):
    """Causal LM + loss. `forward(input_ids, labels)` returns the summed CE over labels != -100."""

    def __init__(self, lm: nn.Module, eos_id: int, doc_mask: bool = False, fused_head: bool = True,
                 flex: bool = False, compiled_loss: bool = False) -> None:
        super().__init__()
        self.lm = lm
        self.eos_id = eos_id
        self.doc_mask = doc_mask
        self.flex = flex
        self.fused_head = fused_head and fusable_head(lm)
        self.compiled_loss = compiled_loss
        if doc_mask:
            _register_attention()
            _set_attention(lm, ATTENTION)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        kwargs = {"use_cache": False}
        if self.doc_mask:
            doc, pos = doc_layout(input_ids, self.eos_id)
            kwargs["position_ids"] = pos
            kwargs["attention_mask"] = _doc_mask(doc, self.flex)
        if self.fused_head:
            base = getattr(self.lm, self.lm.base_model_prefix)
            hidden = base(input_ids=input_ids, **kwargs)[0]
            return linear_cross_entropy(hidden, self.lm.get_output_embeddings().weight, labels,
                                        compiled=self.compiled_loss)
        logits = self.lm(input_ids=input_ids, **kwargs).logits
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                               ignore_index=IGNORE, reduction="sum")


def compile_blocks(lm: nn.Module, mode: Optional[str] = None) -> int:
    """Compile each decoder block in place; returns how many were compiled."""
    blocks = decoder_blocks(lm)
    if blocks is None:
        return 0
    for block in blocks:
        block.compile(dynamic=False, mode=mode)
    return len(blocks)
