"""Built-in TextLM families: architecture shapes copied from each model's public `config.json`.

Only the fields that decide the parameter count (and FLOPs) are kept; the published totals of the
base models are recorded beside them so the tests can check the counting against the model cards.
`tokenizer_len` is `len(tokenizer)` where it is known; it can differ from `vocab_size` (Qwen2.5 pads
its embedding to 151,936 rows while its tokenizer holds 151,665 tokens).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class CatalogMember:
    family: str
    name: str
    hf_id: str
    config: dict[str, Any]
    tokenizer_len: Optional[int] = None
    published_params: Optional[int] = None  # total before any vocabulary change, from the model card
    published_nonembedding: Optional[int] = None


def _qwen2(hidden, inter, layers, heads, kv, vocab=151936, tied=True):
    return {"model_type": "qwen2", "hidden_size": hidden, "intermediate_size": inter,
            "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv,
            "vocab_size": vocab, "tie_word_embeddings": tied, "max_position_embeddings": 32768,
            "rope_theta": 1000000.0, "rms_norm_eps": 1e-6}


def _llama(hidden, inter, layers, heads, kv, vocab, head_dim=None, tied=True, rope_theta=500000.0,
           max_pos=131072, eps=1e-5):
    cfg = {"model_type": "llama", "hidden_size": hidden, "intermediate_size": inter,
           "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv,
           "vocab_size": vocab, "tie_word_embeddings": tied, "max_position_embeddings": max_pos,
           "rope_theta": rope_theta, "rms_norm_eps": eps, "attention_bias": False, "mlp_bias": False}
    if head_dim is not None:
        cfg["head_dim"] = head_dim
    return cfg


def _neox(hidden, layers, heads, vocab=50304):
    return {"model_type": "gpt_neox", "hidden_size": hidden, "intermediate_size": 4 * hidden,
            "num_hidden_layers": layers, "num_attention_heads": heads, "vocab_size": vocab,
            "tie_word_embeddings": False, "max_position_embeddings": 2048, "rotary_pct": 0.25,
            "use_parallel_residual": True, "layer_norm_eps": 1e-5}


def _opt(hidden, ffn, layers, heads, proj=None, ln_before=True):
    return {"model_type": "opt", "hidden_size": hidden, "ffn_dim": ffn, "num_hidden_layers": layers,
            "num_attention_heads": heads, "vocab_size": 50272, "max_position_embeddings": 2048,
            "word_embed_proj_dim": proj or hidden, "do_layer_norm_before": ln_before,
            "tie_word_embeddings": True, "enable_bias": True}


_MEMBERS = [
    # Qwen2.5: config.json of Qwen/Qwen2.5-*; totals from the model cards (0.49B, 1.54B, 3.09B, 7.61B).
    CatalogMember("qwen2.5", "0.5B", "Qwen/Qwen2.5-0.5B", _qwen2(896, 4864, 24, 14, 2), 151665, 494_032_768),
    CatalogMember("qwen2.5", "1.5B", "Qwen/Qwen2.5-1.5B", _qwen2(1536, 8960, 28, 12, 2), 151665, 1_543_714_304),
    CatalogMember("qwen2.5", "3B", "Qwen/Qwen2.5-3B", _qwen2(2048, 11008, 36, 16, 2), 151665, 3_085_938_688),
    CatalogMember("qwen2.5", "7B", "Qwen/Qwen2.5-7B", _qwen2(3584, 18944, 28, 28, 4, vocab=152064, tied=False),
                  151665, 7_615_616_512),
    # Llama-3.2: config.json of meta-llama/Llama-3.2-*; tokenizer and embedding both 128,256.
    CatalogMember("llama3.2", "1B", "meta-llama/Llama-3.2-1B", _llama(2048, 8192, 16, 32, 8, 128256, head_dim=64),
                  128256, 1_235_814_400),
    CatalogMember("llama3.2", "3B", "meta-llama/Llama-3.2-3B", _llama(3072, 8192, 28, 24, 8, 128256, head_dim=128),
                  128256, 3_212_749_824),
    # SmolLM2 (Llama architecture): config.json of HuggingFaceTB/SmolLM2-*.
    CatalogMember("smollm2", "135M", "HuggingFaceTB/SmolLM2-135M",
                  _llama(576, 1536, 30, 9, 3, 49152, head_dim=64, rope_theta=100000.0, max_pos=8192), 49152),
    CatalogMember("smollm2", "360M", "HuggingFaceTB/SmolLM2-360M",
                  _llama(960, 2560, 32, 15, 5, 49152, head_dim=64, rope_theta=100000.0, max_pos=8192), 49152),
    CatalogMember("smollm2", "1.7B", "HuggingFaceTB/SmolLM2-1.7B",
                  _llama(2048, 8192, 24, 32, 32, 49152, head_dim=64, rope_theta=130000.0, max_pos=8192), 49152),
    # Pythia (GPT-NeoX): config.json of EleutherAI/pythia-*; non-embedding counts from the Pythia README.
    CatalogMember("pythia", "70M", "EleutherAI/pythia-70m", _neox(512, 6, 8), None, None, 18_915_328),
    CatalogMember("pythia", "160M", "EleutherAI/pythia-160m", _neox(768, 12, 12), None, None, 85_056_000),
    CatalogMember("pythia", "410M", "EleutherAI/pythia-410m", _neox(1024, 24, 16), None, None, 302_311_424),
    CatalogMember("pythia", "1B", "EleutherAI/pythia-1b", _neox(2048, 16, 8), None, None, 805_736_448),
    CatalogMember("pythia", "1.4B", "EleutherAI/pythia-1.4b", _neox(2048, 24, 16), None, None, 1_208_602_624),
    # OPT: config.json of facebook/opt-*; 350M projects a 512-wide embedding to 1024 and norms after.
    CatalogMember("opt", "125M", "facebook/opt-125m", _opt(768, 3072, 12, 12)),
    CatalogMember("opt", "350M", "facebook/opt-350m", _opt(1024, 4096, 24, 16, proj=512, ln_before=False)),
    CatalogMember("opt", "1.3B", "facebook/opt-1.3b", _opt(2048, 8192, 24, 32)),
]

FAMILIES: dict[str, dict[str, CatalogMember]] = {}
for _m in _MEMBERS:
    FAMILIES.setdefault(_m.family, {})[_m.name] = _m
BY_HF_ID: dict[str, CatalogMember] = {m.hf_id.lower(): m for m in _MEMBERS}


def find_member(family: str, name: str) -> Optional[CatalogMember]:
    """The catalog member `name` of `family` (case-insensitive; an HF id of that family works too)."""
    members = FAMILIES.get(family.lower(), {})
    for key, member in members.items():
        if key.lower() == name.lower() or member.hf_id.lower() == name.lower():
            return member
    return None


def member_names(family: str) -> list[str]:
    return list(FAMILIES.get(family.lower(), {}))
