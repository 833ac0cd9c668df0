"""Exact parameter counts of a causal LM from its config, in closed form.

The closed forms follow transformers' module layouts for the architectures below; the tests build the
same configs on the meta device and compare every field. Other architectures are counted by building
them on the meta device (`count_params_meta`), which needs torch and transformers.

Conventions (recorded per run, chosen at analysis time):
- embedding: input token embedding rows (plus learned position embeddings where the model has them);
- output_head: the untied output projection (0 when it shares the input embedding);
- nonembedding: total - embedding - output_head (Kaplan et al.'s N).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

CLOSED_FORM_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gpt_neox", "opt")


@dataclass(frozen=True)
class ParamCounts:
    total: int
    embedding: int
    output_head: int
    nonembedding: int
    vocab_rows: int        # rows of the token embedding (and head) as built
    new_rows: int          # rows that did not exist in the base model (all rows for a fresh vocabulary)
    new_row_params: int    # parameters those rows add (embedding, plus head when untied)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def head_dim(cfg: dict[str, Any]) -> int:
    return int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])


def llama_block(cfg: dict[str, Any]) -> tuple[int, int]:
    """(parameters of one Llama-like decoder block, of which in its linear layers, weights and biases)."""
    d, inter = cfg["hidden_size"], cfg["intermediate_size"]
    hd = head_dim(cfg)
    q, kv = cfg["num_attention_heads"] * hd, cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    kv *= hd
    mtype = cfg["model_type"]
    if mtype == "qwen2":  # Qwen2 hard-codes bias on q, k, v and none on o
        qkv_bias, o_bias = q + 2 * kv, 0
    elif cfg.get("attention_bias", False):
        qkv_bias, o_bias = q + 2 * kv, d
    else:
        qkv_bias, o_bias = 0, 0
    linear = d * q + 2 * d * kv + q * d + qkv_bias + o_bias + 3 * d * inter \
        + ((2 * inter + d) if cfg.get("mlp_bias", False) else 0)
    qk_norms = 2 * hd if mtype == "qwen3" else 0   # per-head RMSNorm on queries and keys
    return linear + qk_norms + 2 * d, linear


def _llama_like(cfg: dict[str, Any], rows: int) -> tuple[int, int, int]:
    d = cfg["hidden_size"]
    body = cfg["num_hidden_layers"] * llama_block(cfg)[0] + d
    emb = rows * d
    head = 0 if cfg.get("tie_word_embeddings", True) else rows * d
    return emb, head, body


def _gpt_neox(cfg: dict[str, Any], rows: int) -> tuple[int, int, int]:
    d, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    bias = cfg.get("attention_bias", True)
    attn = d * 3 * d + d * d + ((3 * d + d) if bias else 0)
    mlp = d * inter + inter + inter * d + d
    body = layers * (attn + mlp + 4 * d) + 2 * d  # two LayerNorms (weight + bias) per layer, one final
    emb = rows * d
    head = 0 if cfg.get("tie_word_embeddings", False) else rows * d
    return emb, head, body


def _opt(cfg: dict[str, Any], rows: int) -> tuple[int, int, int]:
    d, ffn, layers = cfg["hidden_size"], cfg["ffn_dim"], cfg["num_hidden_layers"]
    proj = cfg.get("word_embed_proj_dim") or d
    bias = cfg.get("enable_bias", True)
    ln = 2 * d if cfg.get("layer_norm_elementwise_affine", True) else 0
    layer = 4 * (d * d + (d if bias else 0)) + d * ffn + ffn * d + ((ffn + d) if bias else 0) + 2 * ln
    body = layers * layer
    if cfg.get("do_layer_norm_before", True) and not cfg.get("_remove_final_layer_norm", False):
        body += ln
    if proj != d:
        body += 2 * proj * d  # project_in and project_out, no bias
    positions = (cfg.get("max_position_embeddings", 2048) + 2) * d  # OPT offsets positions by 2
    emb = rows * proj + positions
    head = 0 if cfg.get("tie_word_embeddings", True) else rows * proj
    return emb, head, body


def row_width(cfg: dict[str, Any]) -> int:
    """Width of the embedding and head rows (OPT may project them)."""
    if cfg["model_type"] == "opt":
        return cfg.get("word_embed_proj_dim") or cfg["hidden_size"]
    return cfg["hidden_size"]


def tied(cfg: dict[str, Any]) -> bool:
    return bool(cfg.get("tie_word_embeddings", cfg["model_type"] != "gpt_neox"))


def count_params(cfg: dict[str, Any], rows: int | None = None, base_rows: int | None = None) -> ParamCounts:
    """Exact counts for `cfg` with `rows` vocabulary rows (default: cfg's vocab_size).

    `base_rows` is the row count of the model the weights come from; rows beyond it are new (pass 0 for
    a vocabulary built from scratch, as in textless cells)."""
    rows = cfg["vocab_size"] if rows is None else rows
    base_rows = rows if base_rows is None else base_rows
    mtype = cfg["model_type"]
    if mtype in ("llama", "mistral", "qwen2", "qwen3"):
        emb, head, body = _llama_like(cfg, rows)
    elif mtype == "gpt_neox":
        emb, head, body = _gpt_neox(cfg, rows)
    elif mtype == "opt":
        emb, head, body = _opt(cfg, rows)
    else:
        raise KeyError(f"no closed form for model_type {mtype!r}")
    new_rows = max(rows - base_rows, 0)
    width = row_width(cfg)
    new_params = new_rows * width * (1 if tied(cfg) else 2)
    return ParamCounts(total=emb + head + body, embedding=emb, output_head=head, nonembedding=body,
                       vocab_rows=rows, new_rows=new_rows, new_row_params=new_params)


def build_config(cfg: dict[str, Any], rows: int | None = None):
    """A transformers config object for `cfg` (with `rows` vocabulary rows)."""
    from transformers import AutoConfig  # heavy: transformers only when a model/tokenizer is built

    fields = {k: v for k, v in cfg.items() if k != "model_type"}
    if rows is not None:
        fields["vocab_size"] = rows
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):  # e.g. a textless twin's K+2 rows
            if isinstance(fields.get(name), int) and fields[name] >= rows:
                fields[name] = None
    return AutoConfig.for_model(cfg["model_type"], **fields)


def count_params_meta(cfg: dict[str, Any], rows: int | None = None, base_rows: int | None = None) -> ParamCounts:
    """The same counts, read off the model transformers builds on the meta device (no memory used)."""
    import torch  # heavy: torch only for the training path
    from transformers import AutoModelForCausalLM  # heavy: transformers only when a model/tokenizer is built

    config = build_config(cfg, rows)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    emb = inp.weight.numel()
    positions = getattr(getattr(model, "model", None), "decoder", None)
    if positions is not None and hasattr(positions, "embed_positions"):
        emb += positions.embed_positions.weight.numel()
    head = 0 if out is None or out.weight is inp.weight else out.weight.numel()
    rows_built = inp.weight.shape[0]
    base_rows = rows_built if base_rows is None else base_rows
    new_rows = max(rows_built - base_rows, 0)
    new_params = new_rows * inp.weight.shape[1] * (1 if head == 0 else 2)
    return ParamCounts(total=total, embedding=emb, output_head=head, nonembedding=total - emb - head,
                       vocab_rows=rows_built, new_rows=new_rows, new_row_params=new_params)


def count(cfg: dict[str, Any], rows: int | None = None, base_rows: int | None = None) -> ParamCounts:
    """Closed form where known, the meta-device build otherwise."""
    if cfg.get("model_type") in CLOSED_FORM_TYPES:
        return count_params(cfg, rows, base_rows)
    return count_params_meta(cfg, rows, base_rows)
