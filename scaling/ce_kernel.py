"""One-pass cross-entropy over a chunk of logits on CUDA (Triton): per row, an online logsumexp over the
vocabulary, then d(loss)/d(logits) = softmax - onehot written over the logits in place.

The compiled PyTorch version reads the bf16 logits in a looped reduction and writes an fp32 temporary;
on an H100 it ran at about 0.6 TB/s, 15 ms per step of a Qwen2.5-0.5B cell. This reads the logits twice
and writes them once (6 bytes per element). Used by `linear_ce` when the logits live on a CUDA device
and Triton imports; everywhere else the PyTorch function is used.
"""
from __future__ import annotations

import torch

try:
    import triton  # heavy/optional: triton only on GPU
    import triton.language as tl  # heavy/optional: triton only on GPU
except ImportError:  # CPU-only installs
    triton = None


if triton is not None:
    @triton.jit
    def _ce_rows(logits_ptr, stride, labels_ptr, loss_ptr, V, n_cols, ignore, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        ptr = logits_ptr + row * stride
        y = tl.load(labels_ptr + row).to(tl.int64)
        m = tl.zeros((), tl.float32) - float("inf")
        s = tl.zeros((), tl.float32)
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            x = tl.load(ptr + cols, mask=cols < V, other=-float("inf")).to(tl.float32)
            new_m = tl.maximum(m, tl.max(x, 0))
            s = s * tl.exp(m - new_m) + tl.sum(tl.exp(x - new_m), 0)
            m = new_m
        lse = m + tl.log(s)
        valid = y != ignore
        safe = tl.where(valid, y, 0)
        target = tl.load(ptr + safe).to(tl.float32)
        tl.store(loss_ptr + row, tl.where(valid, lse - target, 0.0))
        scale = tl.where(valid, 1.0, 0.0)
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            x = tl.load(ptr + cols, mask=cols < V, other=-float("inf")).to(tl.float32)
            g = tl.exp(x - lse)
            g = tl.where(cols == safe, g - 1.0, g) * scale
            tl.store(ptr + cols, g.to(logits_ptr.dtype.element_ty), mask=cols < n_cols)


def available(logits: torch.Tensor) -> bool:
    return triton is not None and logits.is_cuda and logits.stride(-1) == 1


def loss_and_grad_inplace(logits: torch.Tensor, labels: torch.Tensor, vocab: int,
                          ignore: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed CE of the rows of `logits` [n, cols] (columns >= vocab are padding) and the gradient,
    written into `logits` itself; returns (loss, logits)."""
    n, cols = logits.shape
    losses = torch.empty(n, dtype=torch.float32, device=logits.device)
    _ce_rows[(n,)](logits, logits.stride(0), labels.contiguous(), losses, vocab, cols, ignore,
                   BLOCK=4096, num_warps=8)
    return losses.sum(), logits
