"""Family members: a catalog name, a local model folder, a Hugging Face id, or a from-scratch ladder rung,
each resolved to an architecture config (the fields of its `config.json`).

Nothing here reaches the network unless a member is an HF id that is neither in the catalog nor in the
local Hugging Face cache and HF_HUB_OFFLINE is not set.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from . import catalog
from .errors import InputError

# Fields of a config.json that do not change the model a run trains.
_COSMETIC = {"_name_or_path", "architectures", "torch_dtype", "dtype", "transformers_version", "use_cache",
             "auto_map", "_attn_implementation_autoset", "output_attentions", "output_hidden_states"}

REQUIRED = {
    "llama": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"),
    "mistral": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"),
    "qwen2": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"),
    "qwen3": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"),
    "gpt_neox": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"),
    "opt": ("hidden_size", "ffn_dim", "num_hidden_layers", "num_attention_heads", "vocab_size"),
}
# Keys a ladder rung may override besides those of its base.
LADDER_KEYS = {"hidden_size", "intermediate_size", "ffn_dim", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings", "max_position_embeddings",
               "rope_theta", "attention_bias", "mlp_bias", "rms_norm_eps", "layer_norm_eps", "word_embed_proj_dim"}


@dataclass(frozen=True)
class Member:
    name: str                      # the name used in cell keys
    config: dict[str, Any]         # architecture fields (config.json without cosmetic keys)
    source: str                    # catalog | local | hf-cache | hub | ladder
    weights: Optional[str] = None  # HF id or local folder the TextLM weights load from
    tokenizer_len: Optional[int] = None

    @property
    def width(self) -> int:
        return int(self.config["hidden_size"])

    @property
    def layers(self) -> int:
        return int(self.config["num_hidden_layers"])


def key_name(text: str) -> str:
    """A member name fit for a cell key and a directory name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_-") or "member"


def check_arch(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """Reject a config the counting cannot trust; return it without cosmetic keys."""
    mtype = cfg.get("model_type")
    if not isinstance(mtype, str):
        raise InputError(f"{where}: expected a model_type (e.g. llama, qwen2, gpt_neox, opt), got {mtype!r}")
    for key in REQUIRED.get(mtype, ()):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InputError(f"{where}.{key}: expected a positive integer, got {value!r}")
    if mtype in REQUIRED:
        heads, width = cfg["num_attention_heads"], cfg["hidden_size"]
        if cfg.get("head_dim") is None and width % heads:
            raise InputError(f"{where}.num_attention_heads: expected a divisor of hidden_size {width}, got {heads}")
        kv = cfg.get("num_key_value_heads")
        if kv is not None and (not isinstance(kv, int) or kv <= 0 or heads % kv):
            raise InputError(f"{where}.num_key_value_heads: expected a positive divisor of "
                             f"num_attention_heads {heads}, got {kv!r}")
    return {k: v for k, v in cfg.items() if k not in _COSMETIC}


def read_config_json(path: Path, where: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{where}: cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: {path} is not a JSON object")
    if "text_config" in data and "hidden_size" not in data:
        data = data["text_config"]  # multimodal wrappers keep the LM under text_config
    return data


def _from_catalog(m: catalog.CatalogMember, weights: Optional[str]) -> Member:
    return Member(name=m.name, config=dict(m.config), source="catalog", weights=weights or m.hf_id,
                  tokenizer_len=m.tokenizer_len)


def _hf_config(repo_id: str, where: str) -> tuple[Path, str]:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):
        return Path(cached), "hf-cache"
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise InputError(f"{where}: {repo_id!r} is not a catalog member, a local folder with config.json, "
                         "or in the Hugging Face cache (HF_HUB_OFFLINE is set)")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, "config.json")), "hub"
    except Exception as e:  # any hub failure is the same answer to the user
        raise InputError(f"{where}: cannot find {repo_id!r} locally or on the Hugging Face hub "
                         f"({type(e).__name__}); give a local folder with config.json") from None


def resolve(spec: str, where: str, catalog_family: Optional[str] = None,
            weights: Optional[str] = None, base_dir: Optional[Path] = None) -> Member:
    """The member named by `spec`: a catalog name of `catalog_family`, a local folder or config.json,
    or a Hugging Face id. `where` names the study key for error messages."""
    if catalog_family is not None:
        found = catalog.find_member(catalog_family, spec)
        if found is not None:
            return _from_catalog(found, weights)
    by_id = catalog.BY_HF_ID.get(spec.lower())
    if by_id is not None:
        return _from_catalog(by_id, weights)
    path = Path(spec).expanduser()
    if not path.is_absolute() and base_dir is not None and (base_dir / path).exists():
        path = base_dir / path
    if path.is_dir() or path.suffix == ".json":
        cfg_path = path / "config.json" if path.is_dir() else path
        if not cfg_path.is_file():
            raise InputError(f"{where}: {spec!r} has no readable config.json")
        cfg = check_arch(read_config_json(cfg_path, where), where)
        name = path.name if path.is_dir() else path.parent.name
        return Member(name=key_name(name), config=cfg, source="local",
                      weights=weights or (str(path) if path.is_dir() else None))
    if catalog_family is not None and "/" not in spec:
        names = ", ".join(catalog.member_names(catalog_family))
        raise InputError(f"{where}: unknown member {spec!r} of catalog family {catalog_family}; "
                         f"expected one of {names}, a local model folder or an HF id")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", spec) and not spec.startswith((".", "/")):
        cfg_path, source = _hf_config(spec, where)
        cfg = check_arch(read_config_json(cfg_path, where), where)
        return Member(name=key_name(spec.split("/")[-1]), config=cfg, source=source, weights=weights or spec)
    raise InputError(f"{where}: unknown member {spec!r}; expected a local model folder with config.json, "
                     "an HF id (org/name) or a catalog member")


def ladder(name: str, base: dict[str, Any], overrides: dict[str, Any], where: str) -> Member:
    """A from-scratch rung: `base` config with `overrides` (width, depth, ...)."""
    allowed = LADDER_KEYS | set(base)
    for key in overrides:
        if key not in allowed:
            raise InputError(f"{where}.{key}: unknown config key; expected one of {', '.join(sorted(allowed))}")
    cfg = check_arch({**base, **overrides}, where)
    return Member(name=key_name(name), config=cfg, source="ladder")
