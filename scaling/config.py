"""The settings one training run reads: data, training and evaluation sections of a study file.

Defaults are the SIMS recipe (slp-rl/slamkit `train_inter_scale.yaml`, `scaling_interleaving.yaml`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Optional, Union

from .typed_config import ConfigError, bounded

STREAMS = ("text", "interleaved", "speech")


@dataclass
class Corpus:
    """One corpus on disk, in the formats SlamKit users already have (see README, 'Corpus formats')."""
    path: str
    format: Literal["units", "tokens", "text"]
    name: Optional[str] = None
    alignments: Optional[str] = None      # directory of `<stem>.json` word-alignment side-cars
    synthetic: bool = False               # e.g. sTinyStories; dropped when data.use_synthetic is false
    split: Literal["train", "val"] = "train"


@dataclass
class StreamMix:
    """Share of training tokens drawn from each stream (SIMS: matched token counts)."""
    text: float = bounded(0.2023584112, min=0, max=1)
    interleaved: float = bounded(0.5433262899, min=0, max=1)
    speech: float = bounded(0.2543152989, min=0, max=1)

    def check(self, path: str) -> None:
        total = self.text + self.interleaved + self.speech
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(path, f"expected stream shares that sum to 1, got {total:g}")


@dataclass
class Interleave:
    """Word-level interleaving (SIMS: poisson, span 10, prob 0.3)."""
    method: Literal["poisson", "random", "span", "none"] = "poisson"
    span: float = bounded(10.0, gt=0)
    prob: float = bounded(0.3, min=0, max=1)


@dataclass
class DataConfig:
    units: int = bounded(500, min=1)
    vocab_resize: Literal["append", "tokenizer"] = "append"
    pad_vocab_to: int = bounded(1, min=1)
    corpora: list[Corpus] = field(default_factory=list)
    mix: StreamMix = field(default_factory=StreamMix)
    interleave: Interleave = field(default_factory=Interleave)
    use_synthetic: bool = True
    cache_dir: Optional[str] = None
    # unique tokens of the corpora, in total or per stream, for corpora not yet on disk (planning and
    # analysis only: `plan` reads the packed-data cache when this is not given)
    unique_tokens: Union[float, dict[str, float], None] = None
    warn_epochs: float = bounded(4.0, gt=0)   # `plan` warns when a stream repeats more often than this

    def check(self, path: str) -> None:
        u = self.unique_tokens
        if isinstance(u, dict):
            if not u:
                raise ConfigError(f"{path}.unique_tokens", "expected a number or a mapping of streams "
                                                           f"({', '.join(STREAMS)}) to token counts, got {{}}")
            for name, n in u.items():
                if name not in STREAMS:
                    raise ConfigError(f"{path}.unique_tokens.{name}", f"unknown stream; expected one of "
                                                                      f"{', '.join(STREAMS)}")
                if not n > 0:
                    raise ConfigError(f"{path}.unique_tokens.{name}", f"expected a token count > 0, got {n:g}")
        elif u is not None and not u > 0:
            raise ConfigError(f"{path}.unique_tokens", f"expected a token count > 0, got {u:g}")


# Data settings that inform planning and analysis but change nothing a cell computes: left out of the key
PLANNING_ONLY = ("unique_tokens", "warn_epochs")


def _hashed(config, left_out: tuple[str, ...]) -> dict:
    """A config section as the cell key hashes it: every field but `left_out`."""
    d = asdict(config)
    for name in left_out:
        d.pop(name, None)
    return d


def hashed_data(data: "DataConfig") -> dict:
    """The data settings that enter the cell key."""
    return _hashed(data, PLANNING_ONLY)


# Training settings that change how a cell runs but not what it computes: left out of the cell key
EXECUTION_ONLY = ("sharding", "cpu_offload", "share_trunk")


WSD_ONLY = ("decay_fraction", "decay_shape")   # read only by the wsd schedule


def hashed_training(training: "TrainingConfig") -> dict:
    """The training settings that enter the cell key. Settings a cell does not read are left out
    (the decay of a non-wsd schedule, an unset warmup_tokens), so the keys of studies written before
    they existed are unchanged."""
    d = _hashed(training, EXECUTION_ONLY)
    if training.schedule != "wsd":
        for name in WSD_ONLY:
            d.pop(name, None)
    if d.get("warmup_tokens") is None:
        d.pop("warmup_tokens", None)
    return d


@dataclass
class TrainingConfig:
    context: int = bounded(2048, min=8)
    # global batch; SIMS does not publish it (8 GPUs x 8 x 2048 assumed). `tuned`: from <study>/tuned.json
    batch_tokens: Union[int, Literal["tuned"]] = bounded(131072, min=1)
    micro_batch: int = bounded(8, min=1)
    lr: Union[float, Literal["tuned"]] = bounded(5e-4, gt=0)   # `tuned`: a x N^b from <study>/tuned.json
    min_lr: float = bounded(5e-5, min=0)
    warmup: float = bounded(0.01, min=0, max=0.5)  # share of the optimiser steps
    # warmup in tokens instead of a share (whole steps, rounded up); a wsd study without it warms up over
    # `warmup` x the smallest budget of each model, so every budget of a trunk shares one warmup
    warmup_tokens: Optional[int] = bounded(None, min=0)
    # wsd: warmup-stable-decay; with grid.share_trunks every budget of a model branches off one trunk
    schedule: Literal["cosine", "linear", "constant", "wsd"] = "cosine"
    decay_fraction: float = bounded(0.2, gt=0, max=1)   # wsd: share of the steps spent decaying
    decay_shape: Literal["linear", "sqrt", "cosine"] = "linear"   # wsd: the decay's shape (sqrt: 1 - sqrt)
    # wsd: the budgets of one model (family, member, init, setup, variant, these settings) branch off one
    # constant-LR trunk instead of each training from scratch; false trains every budget on its own
    share_trunk: bool = True
    weight_decay: float = bounded(0.0, min=0)
    adam_beta1: float = bounded(0.9, min=0, max=1)
    adam_beta2: float = bounded(0.999, min=0, max=1)
    adam_eps: float = bounded(1e-8, gt=0)
    grad_clip: float = bounded(0.5, min=0)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    compile: Union[bool, Literal["auto"]] = "auto"      # auto: compile the decoder blocks on CUDA
    doc_mask: Union[bool, Literal["auto"]] = "auto"     # attention inside each packed document; auto: on CUDA
    gradient_checkpointing: bool = False
    # FSDP2 over the cell's GPUs: auto shards when the memory estimate of one unsharded replica exceeds
    # one GPU (scaling.memory); fsdp always; none never (plain data parallelism)
    sharding: Literal["auto", "fsdp", "none"] = "auto"
    cpu_offload: bool = False          # sharded cells: parameters, gradients and optimizer state on the host
    seed: int = bounded(0, min=0)
    log_every: int = bounded(10, min=1)             # optimiser steps between metric lines
    checkpoint_every_tokens: Optional[int] = bounded(None, min=1)
    keep_checkpoints: int = bounded(2, min=1)

    def check(self, path: str) -> None:
        # `tuned` values are resolved per cell (sweeps.grid) before anything trains; min_lr then follows lr
        if self.lr != "tuned" and self.min_lr > self.lr:
            raise ConfigError(f"{path}.min_lr", f"expected at most lr ({self.lr:g}), got {self.min_lr:g}")
        if self.batch_tokens != "tuned" and self.batch_tokens < self.context:
            raise ConfigError(f"{path}.batch_tokens",
                              f"expected at least one context of tokens ({self.context}), got {self.batch_tokens}")


@dataclass
class Benchmark:
    """A pairwise likelihood benchmark given by an explicit pair manifest (JSONL)."""
    name: str
    manifest: str
    prompt_marker: bool = True   # start speech prompts with <speech>, as training sequences do
    # the setups whose cells score it (None: every setup); a manifest with text items leaves out textless
    setups: Optional[list[str]] = None

    def check(self, path: str) -> None:
        for i, s in enumerate(self.setups or []):
            if s not in ("interleaved", "textless", "text"):
                raise ConfigError(f"{path}.setups[{i}]", f"expected one of interleaved, textless, text, got {s!r}")


@dataclass
class EvalConfig:
    every_tokens: Optional[int] = bounded(None, min=1)
    val_tokens: int = bounded(1_000_000, min=0)      # held-out tokens per stream
    benchmarks: list[Benchmark] = field(default_factory=list)

    def check(self, path: str) -> None:
        names = [b.name for b in self.benchmarks]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ConfigError(f"{path}.benchmarks[{i}].name", f"duplicate benchmark {name!r}")
