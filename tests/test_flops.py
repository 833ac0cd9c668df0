"""FLOP conventions against hand-computed values."""
import pytest

from scaling import catalog
from scaling.flops import flops_per_token
from scaling.params import count_params


def test_sims_final_model_budget():
    # SIMS: Qwen2.5-7B ("7.6B") at 15B tokens = 6.86e20 FLOPs under C = 6ND, N with embeddings.
    c = count_params(catalog.FAMILIES["qwen2.5"]["7B"].config, 152064 + 502, 152064)
    assert flops_per_token(c, "6ND", 28, 2048, 3584) * 15e9 == pytest.approx(6.86e20, rel=2e-3)


def test_conventions_by_hand():
    c = count_params(catalog.FAMILIES["qwen2.5"]["0.5B"].config)
    assert flops_per_token(c, "6ND", 24, 2048, 896) == 6 * 494_032_768
    # Kaplan: non-embedding = total minus the tied 151,936 x 896 embedding.
    assert flops_per_token(c, "6ND_nonembedding", 24, 2048, 896) == 6 * (494_032_768 - 151_936 * 896)
    assert flops_per_token(c, "6ND_attention", 24, 2048, 896) == 6 * 494_032_768 + 6 * 24 * 2048 * 896
    with pytest.raises(ValueError):
        flops_per_token(c, "7ND", 24, 2048, 896)
