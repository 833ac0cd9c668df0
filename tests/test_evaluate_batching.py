"""Pair scoring batches sequences by length: the scores are those of each sequence scored alone, in input
order (a real tiny Llama from its config)."""
import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from scaling.evaluate import mean_logprobs


def test_length_batching_keeps_order_and_scores():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
    model = LlamaForCausalLM(cfg).eval()
    rng = random.Random(0)
    seqs = []
    for _ in range(150):
        n = rng.randint(3, 90)
        seqs.append(([rng.randrange(40) for _ in range(n)], rng.randint(1, n - 1)))
    batched = mean_logprobs(model, seqs, "cpu")                 # up to 64 rows per call here
    alone = [mean_logprobs(model, [s], "cpu", batch=1, logit_elems=1)[0] for s in seqs]
    assert batched == pytest.approx(alone, abs=1e-5)
