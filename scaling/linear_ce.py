"""Cross-entropy through the output head without materialising fp32 logits over the whole vocabulary.

A speech LM's vocabulary is the TextLM's plus 502 rows (Qwen2.5: 152k). Full logits for one micro-batch
of 8 x 2048 tokens are 10 GB in fp32; the head's loss then dominates memory and a good share of the
step. Here the tokens go through the head in chunks: each chunk's logits are computed (in the
activation dtype, as autocast's linear would), upcast to fp32 for log-softmax, and the gradients with
respect to the hidden states and the head weight are formed right away, so the backward pass only
scales them. Same arithmetic as `F.cross_entropy(linear(h, W).float(), y, reduction="sum")` under
autocast, chunk by chunk: no second head matmul and at most one chunk of logits alive.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import ce_kernel
from .head_chunks import ROW_ALIGN, chunk_tokens

IGNORE = -100


def _chunk_loss_and_grad(logits: torch.Tensor, labels: torch.Tensor, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed CE of a chunk and d(loss)/d(logits) in the logits' dtype; columns >= `vocab` are padding."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if logits.shape[-1] > vocab:
        cols = torch.arange(logits.shape[-1], device=logits.device)
        logits = logits.masked_fill(cols >= vocab, float("-inf"))
    valid = labels != IGNORE
    safe = torch.where(valid, labels, 0)
    lse = torch.logsumexp(logits, dim=-1)
    target = logits.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    loss = torch.where(valid, lse - target, 0.0).sum()
    grad = torch.exp(logits - lse.unsqueeze(-1))
    grad.scatter_add_(-1, safe.unsqueeze(-1), torch.full_like(target, -1.0).unsqueeze(-1))
    grad = grad * valid.unsqueeze(-1)
    return loss, grad


_compiled = {}


def _chunk_fn(compiled: bool):
    if not compiled:
        return _chunk_loss_and_grad
    if "fn" not in _compiled:
        _compiled["fn"] = torch.compile(_chunk_loss_and_grad, dynamic=False)
    return _compiled["fn"]


# ROW_ALIGN: head rows padded to this in the matmul copy: 152,438 rows (Qwen2.5 + 502) are not 16-byte
# aligned, which keeps cuBLAS off its fastest Hopper kernels. It and chunk_tokens live in scaling.head_chunks
# (no torch there), which the memory planner reads too.


def _head_copy(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    V, d = weight.shape
    padded = -(-V // ROW_ALIGN) * ROW_ALIGN
    if padded == V:
        return weight.to(dtype)
    w = torch.zeros((padded, d), dtype=dtype, device=weight.device)
    w[:V] = weight
    return w


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk, dtype, compiled):
        V = weight.shape[0]
        h = hidden.to(dtype)
        w = _head_copy(weight, dtype)
        acc = torch.promote_types(dtype, torch.float32)  # fp32 accumulation (fp64 when checking in fp64)
        grad_w = torch.zeros(w.shape, dtype=acc, device=weight.device)
        loss = torch.zeros((), dtype=acc, device=hidden.device)
        grads_h = []
        fn = _chunk_fn(compiled)
        for start in range(0, h.shape[0], chunk):
            hc = h[start:start + chunk]
            logits = hc @ w.t()
            if ce_kernel.available(logits):   # one pass, gradient written over the logits
                part, g = ce_kernel.loss_and_grad_inplace(logits, labels[start:start + chunk], V)
            else:
                part, g = fn(logits, labels[start:start + chunk], V)
            loss += part
            g = g.to(dtype)
            grads_h.append(g @ w)
            grad_w += (g.t() @ hc).to(acc)
        ctx.save_for_backward(torch.cat(grads_h), grad_w[:V])
        ctx.dtypes = (hidden.dtype, weight.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        hd, wd = ctx.dtypes
        return (grad_h * grad_loss).to(hd), (grad_w * grad_loss).to(wd), None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         dtype: Optional[torch.dtype] = None, chunk: Optional[int] = None,
                         compiled: bool = False) -> torch.Tensor:
    """Sum over tokens of CE(hidden @ weight.T, labels), ignoring label -100.

    hidden [..., d], weight [V, d], labels [...]; the head matmul runs in `dtype` (default: hidden's,
    or bf16 under an enabled CUDA/CPU autocast), log-softmax in fp32."""
    if dtype is None:
        dtype = hidden.dtype
        if torch.is_autocast_enabled(hidden.device.type):
            dtype = torch.get_autocast_dtype(hidden.device.type)
    hidden = hidden.reshape(-1, hidden.shape[-1])
    labels = labels.reshape(-1)
    chunk = chunk or chunk_tokens(weight.shape[0])
    with torch.autocast(hidden.device.type, enabled=False):
        if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
            return _LinearCrossEntropy.apply(hidden, weight, labels, chunk, dtype, compiled)
        w = weight.to(dtype)
        acc = torch.promote_types(dtype, torch.float32)
        loss = torch.zeros((), dtype=acc, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            logits = (hidden[start:start + chunk].to(dtype) @ w.t()).to(acc)
            loss += torch.nn.functional.cross_entropy(logits, labels[start:start + chunk], ignore_index=IGNORE,
                                                      reduction="sum")
        return loss
