"""The cell's model: a TextLM member loaded and extended (init: textlm) or built from its config
(init: random), with the embedding sized to the cell's vocabulary rows."""
from __future__ import annotations

import torch

from .errors import InputError
from .params import build_config
from .spec import RunSpec


def _reinit_embeddings(model, std: float, seed: int) -> None:
    """Fresh rows for a vocabulary of its own (textless TWIST init keeps only the transformer body)."""
    gen = torch.Generator().manual_seed(seed)
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        emb.copy_(torch.randn(emb.shape, generator=gen) * std)
        out = model.get_output_embeddings()
        if out is not None and out.weight is not emb:
            out.weight.copy_(torch.randn(out.weight.shape, generator=gen) * std)


def build_model(spec: RunSpec):
    """The model to train, in fp32 (mixed precision happens in the loop)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(spec.training.seed)
    if spec.init == "random":
        config = build_config(spec.arch, rows=spec.vocab_rows)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    else:
        if not spec.weights:
            raise InputError(f"{spec.key}: init textlm needs the member's weights (an HF id or local folder)")
        try:
            model = AutoModelForCausalLM.from_pretrained(spec.weights, dtype=torch.float32)
        except OSError as e:
            raise InputError(f"{spec.key}: cannot load TextLM weights from {spec.weights!r} "
                             f"({str(e).splitlines()[0]})") from None
        if model.get_input_embeddings().weight.shape[0] != spec.arch["vocab_size"]:
            raise InputError(f"{spec.key}: weights at {spec.weights!r} have "
                             f"{model.get_input_embeddings().weight.shape[0]} embedding rows, the planned config "
                             f"{spec.arch['vocab_size']}")
        if spec.vocab_rows != spec.arch["vocab_size"]:
            # new rows start at the mean of the old ones (transformers' mean resizing)
            model.resize_token_embeddings(spec.vocab_rows, mean_resizing=spec.setup != "textless")
        if spec.setup == "textless":
            _reinit_embeddings(model, getattr(model.config, "initializer_range", 0.02), spec.training.seed)
    built = sum(p.numel() for p in model.parameters())
    if built != spec.params.total:
        raise RuntimeError(f"{spec.key}: built model has {built:,} parameters, the closed form counted "
                           f"{spec.params.total:,}")
    return model
