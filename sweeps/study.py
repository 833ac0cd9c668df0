"""The study file: YAML (safe_load) validated into typed dataclasses. Reference in README.md."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from scaling.config import DataConfig, EvalConfig, TrainingConfig
from scaling.errors import InputError
from scaling.flops import CONVENTIONS
from scaling.typed_config import ConfigError, bounded, from_dict

from .gpus import PEAK_TFLOPS

FlopConvention = Literal["6ND", "6ND_nonembedding", "6ND_attention"]
assert set(FlopConvention.__args__) == set(CONVENTIONS)


class StudyError(InputError):
    """A study file that cannot be used; the message is one line: file, key path, what was expected."""


@dataclass
class Family:
    """A TextLM family: catalog members, local folders / HF ids, or a from-scratch ladder (`base`)."""
    members: Union[list[str], dict[str, dict[str, Any]]] = bounded(nonempty=True)
    catalog: Optional[str] = None
    base: Union[str, dict[str, Any], None] = None    # ladder base: a config mapping or a catalog "family/member"
    init: Literal["textlm", "random"] = "textlm"
    setup: Literal["interleaved", "textless", "text"] = "interleaved"
    tokenizer: Optional[str] = None                 # HF id or local folder; default: the member's own
    tokenizer_len: Optional[int] = bounded(None, min=1)
    weights: dict[str, str] = field(default_factory=dict)   # member -> local folder with its weights

    def check(self, path: str) -> None:
        if isinstance(self.members, dict) and self.base is None:
            raise ConfigError(f"{path}.members", "a mapping of rungs needs a ladder `base`; "
                                                 "expected a list of member names")
        if self.base is not None and not isinstance(self.members, dict):
            raise ConfigError(f"{path}.members", "expected a mapping of rung names to config overrides "
                                                 "(a ladder has a `base`)")
        if self.base is not None and self.init == "textlm":
            raise ConfigError(f"{path}.init", "a from-scratch ladder has no TextLM weights; expected random")
        if isinstance(self.members, list):
            for i, name in enumerate(self.members):
                if name in self.members[:i]:
                    raise ConfigError(f"{path}.members[{i}]", f"duplicate member {name!r}")
            for name in self.weights:
                if name not in self.members:
                    raise ConfigError(f"{path}.weights.{name}", "not a member of this family")


@dataclass
class Grid:
    """Model size x token budget. Exactly one of tokens / tokens_per_param / flops (IsoFLOP)."""
    tokens: Optional[list[float]] = bounded(None, gt=0, nonempty=True)
    tokens_per_param: Optional[list[float]] = bounded(None, gt=0, nonempty=True)
    flops: Optional[list[float]] = bounded(None, gt=0, nonempty=True)
    min_tokens_per_param: Optional[float] = bounded(None, min=0)
    max_tokens_per_param: Optional[float] = bounded(None, gt=0)
    flops_convention: FlopConvention = "6ND"
    textless_twin: bool = False
    twin_init: Literal["random", "textlm"] = "random"
    # what a twin shares with its sibling cell: `grid` the grid's own axis (the listed tokens or FLOPs;
    # in a tokens_per_param grid r x its own N, the same tokens per parameter); `tokens` the sibling's
    # token count; `flops` the sibling's FLOPs (equal compute, under flops_convention)
    twin_budget: Literal["grid", "tokens", "flops"] = "grid"
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {dotted.path: value}
    include_base: bool = True

    @property
    def mode(self) -> str:
        return next(m for m in ("tokens", "tokens_per_param", "flops") if getattr(self, m) is not None)

    def check(self, path: str) -> None:
        given = [m for m in ("tokens", "tokens_per_param", "flops") if getattr(self, m) is not None]
        if len(given) != 1:
            what = "none" if not given else ", ".join(given)
            raise ConfigError(path, f"expected exactly one of tokens, tokens_per_param, flops; got {what}")
        lo, hi = self.min_tokens_per_param, self.max_tokens_per_param
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(f"{path}.min_tokens_per_param", f"expected at most max_tokens_per_param ({hi:g}), "
                                                              f"got {lo:g}")
        for m in given:
            values = getattr(self, m)
            for i, v in enumerate(values):
                if v in values[:i]:
                    raise ConfigError(f"{path}.{m}[{i}]", f"duplicate budget {v:g}")
        if self.twin_budget != "grid" and not self.textless_twin:
            raise ConfigError(f"{path}.twin_budget", "applies to textless twins; expected textless_twin: true "
                                                     "(or leave twin_budget at grid)")
        if not self.include_base and not self.variants:
            raise ConfigError(f"{path}.include_base", "false with no variants leaves an empty grid")
        for name in self.variants:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
                raise ConfigError(f"{path}.variants.{name}", "expected a name of letters, digits, '.', '_', '-'")


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: Optional[str] = None          # default: sqlite:///<study dir>/mlflow.db
    experiment: Optional[str] = None   # default: the study name


@dataclass
class SlurmConfig:
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    cpus_per_task: int = bounded(8, min=1)
    mem_gb: Optional[float] = bounded(None, gt=0)
    time_min: int = bounded(1440, min=1)
    signal_delay_s: int = bounded(120, min=0)
    array_parallelism: int = bounded(64, min=1)
    max_array_size: Optional[int] = bounded(None, min=1)   # default: read from `scontrol show config`
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)


@dataclass
class ExecutorConfig:
    kind: Literal["local", "slurm", "debug"] = "local"
    gpu_type: str = "a100"
    peak_tflops: Optional[float] = bounded(None, gt=0)   # overrides the GPU table
    gpu_memory_gb: Optional[float] = bounded(None, gt=0)  # GiB per GPU; overrides the table (sweeps.cost)
    assumed_mfu: float = bounded(0.35, gt=0, max=1)
    nodes: int = bounded(1, min=1)
    gpus_per_node: int = bounded(1, min=1)
    max_retries: int = bounded(2, min=0)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)

    def check(self, path: str) -> None:
        if self.peak_tflops is None and self.gpu_type.lower() not in PEAK_TFLOPS:
            raise ConfigError(f"{path}.gpu_type", f"expected one of {', '.join(PEAK_TFLOPS)} "
                                                  f"(or set peak_tflops), got {self.gpu_type!r}")


TUNABLE = {"lr": float, "warmup": float, "batch_tokens": int, "weight_decay": float, "adam_beta1": float,
           "adam_beta2": float, "adam_eps": float, "grad_clip": float, "micro_batch": int, "schedule": str}


@dataclass
class TuneParam:
    """One searched training setting: a range (`low`, `high`, optionally `log`) or a list of `choices`."""
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    choices: Optional[list[Any]] = bounded(None, nonempty=True)

    def check(self, path: str) -> None:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ConfigError(path, "expected either choices or low/high, not both")
            return
        if self.low is None or self.high is None:
            raise ConfigError(path, "expected low and high (a range) or choices (a list)")
        if not self.low < self.high:
            raise ConfigError(f"{path}.low", f"expected less than high ({self.high:g}), got {self.low:g}")
        if self.log and self.low <= 0:
            raise ConfigError(f"{path}.low", f"a log range needs low > 0, got {self.low:g}")


@dataclass
class TuneConfig:
    """`launch.py tune`: an optuna search over training settings for small members (README, "Tuning")."""
    members: list[str] = field(default_factory=list)     # default for --member: names or family/member
    tokens: Optional[float] = bounded(None, gt=0)        # per-trial budget; default the member's smallest
    trials: int = bounded(8, min=1)                      # default for --trials (finished trials per member)
    trials_per_batch: int = bounded(4, min=1)            # trials asked and dispatched together
    # training field -> range or choices; merged over the default lr / warmup / batch_tokens space
    # (a null entry drops a default)
    space: dict[str, Optional[TuneParam]] = field(default_factory=dict)
    metric: Literal["speech", "text", "interleaved", "mean"] = "speech"   # final held-out loss minimised
    pruner: Literal["median", "none"] = "median"         # on intermediate val losses (eval.every_tokens)
    seed: int = bounded(0, min=0)                        # optuna sampler seed
    storage: Optional[str] = None                        # default sqlite:///<study dir>/optuna.db
    params: Literal["total", "nonembedding"] = "total"   # N of the tuned LR law
    min_lr_ratio: Optional[float] = bounded(None, min=0, max=1)   # trial min_lr = lr x ratio

    def check(self, path: str) -> None:
        for name, spec in self.space.items():
            if name not in TUNABLE:
                raise ConfigError(f"{path}.space.{name}", f"not a tunable training setting; expected one of "
                                                          f"{', '.join(TUNABLE)}")
            if spec is None:
                continue
            if TUNABLE[name] is str and spec.choices is None:
                raise ConfigError(f"{path}.space.{name}", "expected choices (a list)")


@dataclass
class Study:
    name: str
    families: dict[str, Family] = bounded(nonempty=True)
    grid: Grid = bounded()
    root: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    source: Optional[str] = field(default=None, init=False)   # the file it came from

    def check(self, path: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise ConfigError("name", f"expected letters, digits, '.', '_', '-' (it names a directory), "
                                      f"got {self.name!r}")
        for fam in self.families:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", fam):
                raise ConfigError(f"families.{fam}", "expected a family name of letters, digits, '.', '_', '-'")

    @property
    def study_dir(self) -> Path:
        return Path(self.root) / self.name


def parse_study(data: Any, source: str = "<study>") -> Study:
    """A validated Study from parsed YAML; StudyError names `source` and the key path."""
    if not isinstance(data, dict):
        raise StudyError(f"{source}: expected a mapping of study sections at the top level, got {type(data).__name__}")
    try:
        study = from_dict(Study, data)
    except InputError as e:
        raise StudyError(f"{source}: {e}") from None
    study.source = source
    return study


def load_study(path: str | Path, root: Optional[str] = None) -> Study:
    """Read and validate a study file (nothing is written)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise StudyError(f"{path}: cannot read the study file ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise StudyError(f"{path}: not valid YAML{where}: {problem}") from None
    study = parse_study(data, str(path))
    if root is not None:
        study.root = root
    return study
