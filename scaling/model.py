"""The cell's model: a TextLM member loaded and extended (init: textlm) or built from its config
(init: random), with the embedding sized to the cell's vocabulary rows.

TextLM weights come from an HF id, a local folder, or a GGUF file (a folder converted by
`scaling.members.gguf_folder`, or a .gguf path): transformers dequantises GGUF tensors to fp32."""
from __future__ import annotations

import torch

from .errors import InputError
from .members import file_sha256, gguf_source
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


def load_textlm(weights: str, where: str):
    """The TextLM at `weights` (HF id, local folder, converted GGUF folder or .gguf file), in fp32."""
    from transformers import AutoModelForCausalLM  # heavy: transformers only when a model/tokenizer is built

    gguf = gguf_source(weights)
    if gguf is None:
        try:
            return AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32)
        except OSError as e:
            raise InputError(f"{where}: cannot load TextLM weights from {weights!r} "
                             f"({str(e).splitlines()[0]})") from None
    path, marker = gguf
    if not path.is_file():
        raise InputError(f"{where}: the GGUF file {str(path)!r} that {weights!r} was converted from is gone; "
                         "expected it at that path (plan the study again to point at a new copy)")
    if "sha256" in marker and file_sha256(path) != marker["sha256"]:
        raise InputError(f"{where}: {str(path)!r} changed since {weights!r} was converted from it "
                         "(SHA-256 differs); plan the study again")
    try:
        import gguf as _  # noqa: F401
    except ImportError:
        raise InputError(f"{where}: loading {path.name} needs the `gguf` package (pip install gguf)") from None
    extra = {}
    try:  # transformers >= 5 may keep GGUF blocks packed (not trainable): ask for plain fp32 tensors
        from transformers import GgufConfig  # heavy: transformers only when a model/tokenizer is built

        extra["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older transformers always dequantise
        pass
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32,
                                                     **extra)
    except (OSError, ValueError) as e:
        raise InputError(f"{where}: cannot load TextLM weights from {str(path)!r} "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        # dense fp32 weights now: drop the GGUF quantizer, which would refuse save_pretrained
        quantizer.remove_quantization_config(model)
    return model


def build_model(spec: RunSpec):
    """The model to train, in fp32 (mixed precision happens in the loop)."""
    from transformers import AutoModelForCausalLM  # heavy: transformers only when a model/tokenizer is built

    torch.manual_seed(spec.training.seed)
    if spec.init == "random":
        config = build_config(spec.arch, rows=spec.vocab_rows)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    else:
        if not spec.weights:
            raise InputError(f"{spec.key}: init textlm needs the member's weights (an HF id, local folder or "
                             ".gguf file)")
        model = load_textlm(spec.weights, spec.key)
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
