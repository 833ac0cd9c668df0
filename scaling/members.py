"""Family members: a catalog name, a local model folder, a local `.gguf` file, a Hugging Face id, or a
from-scratch ladder rung, each resolved to an architecture config (the fields of its `config.json`).

A `.gguf` file (a member, or a family's `weights` entry) is converted once into a small HF folder in the
user cache (`gguf_folder`): its config.json and tokenizer, keyed by the file's SHA-256, plus `gguf.json`
naming the file the weights load from (`scaling.model` dequantises them to fp32). From then on the member
is an ordinary local folder: the tokenizer, the counts and the cell's spec all point at that folder.

Nothing here reaches the network unless a member is an HF id that is neither in the catalog nor in the
local Hugging Face cache and HF_HUB_OFFLINE is not set.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
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
    weights: Optional[str] = None  # HF id or local folder the TextLM weights load from (for a GGUF file:
                                   # its converted folder, see gguf_folder)
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


GGUF_SUFFIX = ".gguf"
GGUF_MARKER = "gguf.json"   # in a converted folder: {"file", "sha256", "size"} of the GGUF the weights load from


def cache_root() -> Path:
    """Where converted GGUF folders go: $SLM_SCALING_CACHE, else $XDG_CACHE_HOME/slm-scaling, else
    ~/.cache/slm-scaling (a home directory is shared by a cluster's nodes, so jobs find it)."""
    if os.environ.get("SLM_SCALING_CACHE"):
        return Path(os.environ["SLM_SCALING_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "slm-scaling"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) in this process and in the cache folder, so
    a multi-GB GGUF is read through once, not at every plan and cell."""
    path = Path(path).resolve()
    st = path.stat()
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    stat_key = {"path": path, "size": size, "mtime_ns": mtime_ns}
    memo = cache_root() / "gguf" / f".sha256-{hashlib.sha1(path.encode()).hexdigest()[:16]}.json"
    try:
        known = json.loads(memo.read_text())
        if isinstance(known, dict) and {k: known.get(k) for k in stat_key} == stat_key:
            return str(known["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(memo, json.dumps({**stat_key, "sha256": digest}))
    except OSError:
        pass  # a read-only cache only costs a re-read
    return digest


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def gguf_folder(path: Path, where: str) -> Path:
    """The HF folder converted from the GGUF file at `path` (config.json, tokenizer, gguf.json), made on
    first use under cache_root()/gguf/<stem>-<sha256[:16]>/ and reused by every later plan or cell.

    Conversion reads the file's metadata through transformers (needs the `gguf` package, ~15 s for
    SmolLM2-135M); the weights stay in the GGUF file. The folder is built aside and renamed into place,
    so concurrent jobs never see half of one."""
    path = Path(path).resolve()
    if not path.is_file():
        raise InputError(f"{where}: {str(path)!r} is not a readable .gguf file")
    try:
        digest = file_sha256(path)
    except OSError as e:
        raise InputError(f"{where}: cannot read {path}: {e}") from None
    folder = cache_root() / "gguf" / f"{key_name(path.stem)}-{digest[:16]}"
    marker = {"file": str(path), "sha256": digest, "size": path.stat().st_size}
    if (folder / GGUF_MARKER).is_file():
        try:
            known = json.loads((folder / GGUF_MARKER).read_text())
        except (OSError, ValueError):
            known = None
        if known != marker:
            # the same content at another path (a moved venv): point the weights at this copy
            try:
                _write_atomic(folder / GGUF_MARKER, json.dumps(marker, indent=1))
            except OSError:
                pass  # a read-only cache still serves config and tokenizer
        return folder
    try:
        import gguf  # noqa: F401  (transformers' GGUF reader needs it)
    except ImportError:
        raise InputError(f"{where}: reading {path.name} needs the `gguf` package (pip install gguf)") from None
    from transformers import AutoConfig, AutoTokenizer  # heavy: transformers only when a model/tokenizer is built

    try:
        config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as e:  # transformers raises many kinds for a file it cannot read
        raise InputError(f"{where}: transformers cannot read {path} as a GGUF model ({_first_line(e)})") from None
    cfg = config.to_diff_dict()
    # the counts read these from config.json, where a default would otherwise be left out
    for key in ("tie_word_embeddings", "vocab_size", "num_key_value_heads", "head_dim", "attention_bias",
                "mlp_bias"):
        if getattr(config, key, None) is not None:
            cfg[key] = getattr(config, key)
    cfg = {k: v for k, v in cfg.items() if k not in ("_name_or_path", "_model_name_or_path")}
    cfg["model_type"] = config.model_type
    cfg["architectures"] = [type(config).__name__.replace("Config", "ForCausalLM")]
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        tokenizer.save_pretrained(str(tmp))
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        (tmp / GGUF_MARKER).write_text(json.dumps(marker, indent=1))
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / GGUF_MARKER).is_file():  # another job won the race unless this is a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def gguf_source(weights: Optional[str]) -> Optional[tuple[Path, dict[str, Any]]]:
    """(GGUF file, marker) when `weights` is a converted GGUF folder or a .gguf file, else None."""
    if not weights:
        return None
    path = Path(weights).expanduser()
    if path.suffix == GGUF_SUFFIX and path.is_file():
        return path, {"file": str(path)}
    marker = path / GGUF_MARKER
    if path.is_dir() and marker.is_file():
        try:
            data = json.loads(marker.read_text())
            return Path(data["file"]), data
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(f"{marker}: expected a JSON object naming the GGUF file (`file`)") from None
    return None


def _local_weights(weights: Optional[str], where: str, base_dir: Optional[Path]) -> Optional[str]:
    """A family's `weights` entry: a .gguf file becomes its converted folder; others pass through."""
    if weights is None:
        return None
    if not weights.endswith(GGUF_SUFFIX):  # a local folder (relative to the study) becomes absolute
        local = Path(weights).expanduser()
        if not local.is_absolute() and base_dir is not None and (base_dir / local).is_dir():
            return str((base_dir / local).resolve())
        return str(local.resolve()) if local.is_dir() else weights
    path = Path(weights).expanduser()
    if not path.is_absolute() and base_dir is not None and (base_dir / path).exists():
        path = base_dir / path
    return str(gguf_folder(path, f"{where} weights"))


def _from_catalog(m: catalog.CatalogMember, weights: Optional[str]) -> Member:
    return Member(name=m.name, config=dict(m.config), source="catalog", weights=weights or m.hf_id,
                  tokenizer_len=m.tokenizer_len)


def _hf_config(repo_id: str, where: str) -> tuple[Path, str]:
    from huggingface_hub import try_to_load_from_cache  # heavy: hub client only when a member is fetched

    cached = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):
        return Path(cached), "hf-cache"
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise InputError(f"{where}: {repo_id!r} is not a catalog member, a local folder with config.json, "
                         "or in the Hugging Face cache (HF_HUB_OFFLINE is set)")
    from huggingface_hub import hf_hub_download  # heavy: hub client only when a member is fetched

    try:
        return Path(hf_hub_download(repo_id, "config.json")), "hub"
    except Exception as e:  # any hub failure is the same answer to the user
        raise InputError(f"{where}: cannot find {repo_id!r} locally or on the Hugging Face hub "
                         f"({type(e).__name__}); give a local folder with config.json") from None


def resolve(spec: str, where: str, catalog_family: Optional[str] = None,
            weights: Optional[str] = None, base_dir: Optional[Path] = None) -> Member:
    """The member named by `spec`: a catalog name of `catalog_family`, a local folder or config.json,
    a local .gguf file, or a Hugging Face id. `where` names the study key for error messages."""
    weights = _local_weights(weights, where, base_dir)
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
    if path.suffix == GGUF_SUFFIX:
        folder = gguf_folder(path, where)
        cfg = check_arch(read_config_json(folder / "config.json", where), where)
        return Member(name=key_name(path.stem), config=cfg, source="local", weights=weights or str(folder))
    if path.is_dir() or path.suffix == ".json":
        cfg_path = path / "config.json" if path.is_dir() else path
        if not cfg_path.is_file():
            raise InputError(f"{where}: {spec!r} has no readable config.json")
        cfg = check_arch(read_config_json(cfg_path, where), where)
        name = path.name if path.is_dir() else path.parent.name
        return Member(name=key_name(name), config=cfg, source="local",   # absolute: jobs start elsewhere
                      weights=weights or (str(path.resolve()) if path.is_dir() else None))
    if catalog_family is not None and "/" not in spec:
        if catalog_family.lower() not in catalog.FAMILIES:  # issue 16: never "expected one of ," with no names
            raise InputError(f"{where}: {spec!r}: {catalog_family!r} is not a catalog family; expected a family "
                             f"named {', '.join(catalog.FAMILIES)} (or its `catalog:`), or members given as "
                             "local model folders or HF ids (org/name)")
        names = ", ".join(catalog.member_names(catalog_family))
        raise InputError(f"{where}: unknown member {spec!r} of catalog family {catalog_family}; "
                         f"expected one of {names}, a local model folder or an HF id")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", spec) and not spec.startswith((".", "/")):
        cfg_path, source = _hf_config(spec, where)
        cfg = check_arch(read_config_json(cfg_path, where), where)
        return Member(name=key_name(spec.split("/")[-1]), config=cfg, source=source, weights=weights or spec)
    raise InputError(f"{where}: unknown member {spec!r}; expected a local model folder with config.json, "
                     "a .gguf file, an HF id (org/name) or a catalog member")


def ladder(name: str, base: dict[str, Any], overrides: dict[str, Any], where: str) -> Member:
    """A from-scratch rung: `base` config with `overrides` (width, depth, ...)."""
    allowed = LADDER_KEYS | set(base)
    for key in overrides:
        if key not in allowed:
            raise InputError(f"{where}.{key}: unknown config key; expected one of {', '.join(sorted(allowed))}")
    cfg = check_arch({**base, **overrides}, where)
    return Member(name=key_name(name), config=cfg, source="ladder")
