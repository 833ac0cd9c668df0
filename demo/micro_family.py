"""A micro TextLM family for CPU studies: a byte-level BPE tokenizer trained on the text, Llama-style
configs of a few widths, and the export of a text-only training run into an ordinary Hugging Face model
folder (config.json + weights + tokenizer) that a study names as a local-path member.

The pretraining itself is the study training cell in text-only mode (`setup: text`, `init: random`),
run like any other cell (`demo/stages.py` makes that study); nothing here trains.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterable

EOS = "<|endoftext|>"
PAD = "<|pad|>"

# name -> shape. Widths 8 to 64: at the IsoFLOP budgets two CPU cores afford in a few minutes (1e9 to 1e11
# FLOPs) the compute-optimal speech LM has a few thousand to a few tens of thousands of parameters, so the
# family must reach below it.
SIZES: dict[str, dict[str, int]] = {
    "d8": {"hidden_size": 8, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
           "num_key_value_heads": 1},
    "d16": {"hidden_size": 16, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 1},
    "d32": {"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2},
    "d64": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2},
    "d128": {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 3, "num_attention_heads": 4,
             "num_key_value_heads": 2},
}


def train_tokenizer(texts: Iterable[str], folder: Path, vocab_size: int = 512) -> Path:
    """Train a byte-level BPE tokenizer on `texts` and save it as a transformers tokenizer folder (eos and
    pad specials, no bos; id 0 is a real token, as in Qwen2.5 / Llama-3). Written atomically."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # heavy: tokenizers only when a tokenizer is trained
    from transformers import PreTrainedTokenizerFast  # heavy: transformers only when a member is exported

    folder = Path(folder)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 2, special_tokens=[], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens([EOS, PAD])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    fast.save_pretrained(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def tokenizer_len(folder: Path) -> int:
    from transformers import AutoTokenizer  # heavy: transformers only when a member is exported

    return len(AutoTokenizer.from_pretrained(str(folder)))


def member_config(shape: dict[str, int], vocab_size: int, context: int, eos_id: int) -> dict[str, Any]:
    """A Llama config (as a config.json mapping) for one member: tied embeddings, RoPE. No pad_token_id: it
    would become the embedding's padding_idx, out of range in a textless twin's small vocabulary."""
    return {"model_type": "llama", "vocab_size": vocab_size, "max_position_embeddings": context,
            "tie_word_embeddings": True, "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "initializer_range": 0.02,
            "bos_token_id": eos_id, "eos_token_id": eos_id, **shape}


def export_member(model_dir: Path, tokenizer_dir: Path, dest: Path) -> Path:
    """Copy a finished run's `model/` (weights + config) and the family tokenizer into `dest`, an ordinary
    HF model folder (AutoModelForCausalLM / AutoTokenizer load it). Atomic: a temporary folder, renamed."""
    model_dir, tokenizer_dir, dest = Path(model_dir), Path(tokenizer_dir), Path(dest)
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in model_dir.iterdir():
        if f.is_file() and (f.name == "config.json" or f.name == "generation_config.json"
                            or f.suffix in (".safetensors", ".bin") or f.name.endswith(".index.json")):
            shutil.copy2(f, tmp / f.name)
    for f in tokenizer_dir.iterdir():
        if f.is_file():
            shutil.copy2(f, tmp / f.name)
    if not (tmp / "config.json").exists():
        raise FileNotFoundError(f"{model_dir}: no config.json; expected a finished run's model folder")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest
