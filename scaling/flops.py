"""Training FLOPs per token under the conventions scaling-law papers use.

- `6ND`: N = every parameter, embeddings included (Chinchilla; SIMS: 7.6B x 15B tokens = 6.86e20).
- `6ND_nonembedding`: N = non-embedding parameters (Kaplan et al. 2020).
- `6ND_attention`: 6N (all parameters) plus the attention score and value products,
  6 x layers x context x width per token (Porian et al. 2024's attention variant).
Cost estimates always use the fullest count (`6ND_attention`), whatever convention the fit uses.
"""
from __future__ import annotations

from .params import ParamCounts

CONVENTIONS = ("6ND", "6ND_nonembedding", "6ND_attention")


def attention_flops_per_token(layers: int, context: int, width: int) -> float:
    return 6.0 * layers * context * width


def flops_per_token(counts: ParamCounts, convention: str, layers: int, context: int, width: int) -> float:
    if convention == "6ND":
        return 6.0 * counts.total
    if convention == "6ND_nonembedding":
        return 6.0 * counts.nonembedding
    if convention == "6ND_attention":
        return 6.0 * counts.total + attention_flops_per_token(layers, context, width)
    raise ValueError(f"unknown FLOP convention {convention!r}; expected one of {', '.join(CONVENTIONS)}")


def convention_params(counts: ParamCounts, convention: str) -> int:
    """The N a convention counts."""
    return counts.nonembedding if convention == "6ND_nonembedding" else counts.total
