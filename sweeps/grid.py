"""Expand a study into cells: families x members x budgets (x textless twin) x ablation variants.

Budgets: explicit token counts; tokens per parameter (D = r x N_total); or IsoFLOP compute budgets
(D = C / FLOPs-per-token of the member under the study's convention), optionally filtered by tokens per
parameter (always D / N_total). A textless twin follows grid.twin_budget: the same rule on its own N
(`grid`), or its interleaved sibling's tokens (`tokens`) or FLOPs (`flops`).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from analysis.errors import InputError as AnalysisInputError
from analysis.lr_law import TUNED_NAME, load_tuned, resolve
from scaling import members as members_mod
from scaling.config import DataConfig, EvalConfig, TrainingConfig, hashed_data, hashed_training
from scaling.errors import InputError
from scaling.flops import flops_per_token
from scaling.params import ParamCounts, count
from scaling.schedule import step_tokens_of, total_steps_of, warmup_steps, warmup_steps_of, wsd_branch_step
from scaling.spec import RunSpec
from scaling.typed_config import from_dict
from scaling.vocab import vocab_rows

from .extra import ExtraCell, extra_path, load_extra
from .keys import KeyHasher, read_data
from .study import Family, Study, StudyError

_OVERRIDABLE = ("data", "training", "eval", "init", "setup")


@dataclass
class Variant:
    name: Optional[str]
    data: DataConfig
    training: TrainingConfig
    eval: EvalConfig
    init: Optional[str] = None
    setup: Optional[str] = None


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    parts = dotted.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
            raise StudyError(f"{where}: unknown override path {dotted!r} (no {'.'.join(parts[:i + 1])!r})")
        node = node[part]
    if parts[-1] not in node:
        raise StudyError(f"{where}: unknown override path {dotted!r}")
    node[parts[-1]] = value


def variants(study: Study) -> list[Variant]:
    """The base study (unless include_base is false) and each named ablation variant."""
    out = []
    if study.grid.include_base:
        out.append(Variant(None, study.data, study.training, study.eval))
    base = {"data": dataclasses.asdict(study.data), "training": dataclasses.asdict(study.training),
            "eval": dataclasses.asdict(study.eval)}
    for name, overrides in study.grid.variants.items():
        where = f"{study.source}: grid.variants.{name}"
        tree = copy.deepcopy(base)
        init = setup = None
        for dotted, value in overrides.items():
            head = dotted.split(".")[0]
            if head not in _OVERRIDABLE:
                raise StudyError(f"{where}.{dotted}: unknown override path; expected one under "
                                 f"{', '.join(_OVERRIDABLE)}")
            if dotted == "init":
                if value not in ("textlm", "random"):
                    raise StudyError(f"{where}.init: expected one of textlm, random, got {value!r}")
                init = value
            elif dotted == "setup":
                if value not in ("interleaved", "textless", "text"):
                    raise StudyError(f"{where}.setup: expected one of interleaved, textless, text, got {value!r}")
                setup = value
            else:
                _set_dotted(tree, dotted, value, f"{where}.{dotted}")
        try:
            data = from_dict(DataConfig, tree["data"], f"grid.variants.{name}.data")
            training = from_dict(TrainingConfig, tree["training"], f"grid.variants.{name}.training")
            ev = from_dict(EvalConfig, tree["eval"], f"grid.variants.{name}.eval")
        except InputError as e:
            raise StudyError(f"{study.source}: {e}") from None
        out.append(Variant(name, data, training, ev, init, setup))
    return out


@dataclass
class ResolvedFamily:
    name: str
    family: Family
    members: list[tuple[str, members_mod.Member]]   # (spec as written, member)


def resolve_families(study: Study) -> list[ResolvedFamily]:
    base_dir = Path(study.source).parent if study.source else None
    out = []
    for fam_name, fam in study.families.items():
        where = f"{study.source}: families.{fam_name}"
        resolved = []
        try:
            if fam.base is not None:
                base = fam.base
                if isinstance(base, str):
                    fam_part, _, mem_part = base.partition("/")
                    base = members_mod.resolve(mem_part or fam_part, f"{where}.base",
                                               catalog_family=fam_part if mem_part else None,
                                               base_dir=base_dir).config
                for i, (rung, overrides) in enumerate(fam.members.items()):
                    if not isinstance(overrides, dict):
                        raise StudyError(f"{where}.members.{rung}: expected a mapping of config overrides")
                    resolved.append((rung, members_mod.ladder(rung, base, overrides, f"{where}.members.{rung}")))
            else:
                catalog_family = fam.catalog or fam_name
                for i, spec in enumerate(fam.members):
                    member = members_mod.resolve(spec, f"{where}.members[{i}]", catalog_family=catalog_family,
                                                 weights=fam.weights.get(spec), base_dir=base_dir)
                    resolved.append((spec, member))
        except InputError as e:  # member errors already name the file and key path
            raise StudyError(str(e)) from None
        names = [m.name for _, m in resolved]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise StudyError(f"{where}.members[{i}]: duplicate member {name!r}")
        out.append(ResolvedFamily(fam_name, fam, resolved))
    return out


def _budgets(study: Study, counts: ParamCounts, fpt: float) -> list[int]:
    grid = study.grid
    if grid.tokens is not None:
        raw = grid.tokens
    elif grid.tokens_per_param is not None:
        raw = [r * counts.total for r in grid.tokens_per_param]
    else:
        raw = [c / fpt for c in grid.flops]
    out = []
    for d in raw:
        d = int(round(d))
        ratio = d / counts.total
        if grid.min_tokens_per_param is not None and ratio < grid.min_tokens_per_param:
            continue
        if grid.max_tokens_per_param is not None and ratio > grid.max_tokens_per_param:
            continue
        if d >= 1:
            out.append(d)
    return out


def _twin_budgets(rule: str, sibling: tuple[list[int], float], fpt: float) -> list[int]:
    """A textless twin's token budgets under grid.twin_budget `tokens` (its sibling's token counts) or
    `flops` (its sibling's FLOPs at the twin's own FLOPs per token); `grid` twins use _budgets."""
    tokens, sibling_fpt = sibling
    if rule == "tokens":
        return list(tokens)
    return [max(int(round(t * sibling_fpt / fpt)), 1) for t in tokens]


def _abs(path: Optional[str], base_dir: Optional[Path]) -> Optional[str]:
    """A path relative to the study file, made absolute (HF ids and absolute paths pass through)."""
    if path is None or base_dir is None or Path(path).is_absolute():
        return path
    candidate = base_dir / path
    return str(candidate.resolve()) if candidate.exists() or "/" not in path or path.startswith(".") else path


def _file(path: Optional[str], base_dir: Optional[Path]) -> Optional[str]:
    """A data file or folder relative to the study file, made absolute (it is never an HF id, so a
    missing one stays a path the preflight names)."""
    if path is None or base_dir is None or Path(path).expanduser().is_absolute():
        return path
    return str((base_dir / Path(path).expanduser()).resolve())


def _resolve_paths(data: DataConfig, ev: EvalConfig, base_dir: Optional[Path]) -> tuple[DataConfig, EvalConfig]:
    corpora = [dataclasses.replace(c, path=_file(c.path, base_dir), alignments=_file(c.alignments, base_dir))
               for c in data.corpora]
    benchmarks = [dataclasses.replace(b, manifest=_file(b.manifest, base_dir)) for b in ev.benchmarks]
    return (dataclasses.replace(data, corpora=corpora, cache_dir=_file(data.cache_dir, base_dir)),
            dataclasses.replace(ev, benchmarks=benchmarks))


def _hashed_eval(ev: EvalConfig) -> dict:
    """The evaluation as the cell key hashes it: a benchmark's `setups` only when given (so the keys of
    studies written before the field existed do not change)."""
    out = dataclasses.asdict(ev)
    for b in out["benchmarks"]:
        if b.get("setups") is None:
            b.pop("setups", None)
    return out


def _eval_for(ev: EvalConfig, setup: str) -> EvalConfig:
    """The evaluation a cell of `setup` runs: the benchmarks whose `setups` name it (or name none)."""
    keep = [b for b in ev.benchmarks if b.setups is None or setup in b.setups]
    return ev if len(keep) == len(ev.benchmarks) else dataclasses.replace(ev, benchmarks=keep)


TUNED_FIELDS = ("lr", "batch_tokens")


def tuned_fields(training: TrainingConfig) -> list[str]:
    """The training settings written `tuned` (resolved per cell from <study dir>/tuned.json)."""
    return [f for f in TUNED_FIELDS if getattr(training, f) == "tuned"]


def uses_tuned(study: Study) -> bool:
    return any(tuned_fields(v.training) for v in variants(study))


def load_tuned_law(study: Study, what: str = "training.lr") -> dict:
    """<study dir>/tuned.json, or a one-line StudyError saying to run `tune` first."""

    path = study.study_dir / TUNED_NAME
    if not path.exists():
        raise StudyError(f"{study.source}: {what}: tuned needs {path}, which does not exist; run "
                         f"`launch.py tune {study.source or 'STUDY'} --member M` first")
    try:
        return load_tuned(path)
    except AnalysisInputError as e:
        raise StudyError(f"{study.source}: {what}: tuned: {e}") from None


def _resolve_tuned(study: Study, training: TrainingConfig, doc: dict, counts: ParamCounts,
                   where: str) -> TrainingConfig:
    """`training` with its `tuned` settings replaced by the law's values at this cell's N."""

    fields = tuned_fields(training)
    n = counts.total if doc["params"] == "total" else counts.nonembedding
    try:
        values = resolve(doc, n, fields, context=training.context)
    except KeyError as e:
        raise StudyError(f"{study.source}: {where}.{e.args[0]}: tuned, but {study.study_dir / 'tuned.json'} has no "
                         f"{e.args[0]} law ({e.args[0]} was not searched: add it to tune.space and tune again)") from None
    resolved = dataclasses.replace(training, **values)
    try:
        resolved.check(where)
    except InputError as e:
        raise StudyError(f"{study.source}: {e} (resolved from tuned.json at N = {n:,})") from None
    return resolved


def _wsd_warmup(study: Study, training: TrainingConfig, budgets: list[int], where: str) -> TrainingConfig:
    """A wsd cell's warmup in tokens, the same for every budget of its model: `warmup_tokens` as given,
    or `warmup` x the steps of the smallest budget of the grid (proposed cells do not move it)."""
    if training.warmup_tokens is not None or not budgets:
        return training
    step = step_tokens_of(training.batch_tokens, training.context)
    steps = warmup_steps(total_steps_of(min(budgets), training.batch_tokens, training.context), training.warmup)
    return dataclasses.replace(training, warmup_tokens=steps * step)


def _branch_step(study: Study, training: TrainingConfig, tokens: int, where: str) -> int:
    """The step a wsd cell's decay starts at (its branch point off the trunk); the warmup must be over."""
    total = total_steps_of(tokens, training.batch_tokens, training.context)
    start = wsd_branch_step(total, training.decay_fraction)
    warm = warmup_steps_of(training, total, step_tokens_of(training.batch_tokens, training.context))
    if warm > start:
        raise StudyError(f"{study.source}: {where}.warmup_tokens: a budget of {tokens:,} tokens decays from step "
                         f"{start} but its warmup lasts {warm} steps; expected a warmup that ends before the "
                         "decay of the smallest budget (lower warmup / warmup_tokens or decay_fraction)")
    return start


def expand(study: Study, extra: Optional[list[ExtraCell]] = None) -> list[RunSpec]:
    """Every cell of the study, in a stable order. Raises StudyError for an empty grid.

    `extra`: cells added to the grid (default: <study dir>/proposed.yaml, written by `propose`); one that
    names no family / member / setup / variant of the study is a StudyError.

    `lr: tuned` / `batch_tokens: tuned` are resolved per cell from <study dir>/tuned.json before the cell
    key is hashed, so a key reflects the value the cell trains with (and equals the key of the same cell
    with that value written out)."""
    return expand_counted(study, extra)[0]


@dataclass
class VariantCount:
    """Cells a variant (None: the base study) gives, and how many of them an earlier variant already
    gave (the same key: it overrides nothing those cells read); planned once."""
    cells: int = 0
    repeated: int = 0

    @property
    def changes_nothing(self) -> bool:
        return self.cells > 0 and self.repeated == self.cells


def expand_counted(study: Study, extra: Optional[list[ExtraCell]] = None
                   ) -> tuple[list[RunSpec], dict[Optional[str], VariantCount]]:
    """`expand`'s cells and, per variant, how many cells it gave and how many repeated earlier ones."""
    families = resolve_families(study)
    per_variant: dict[Optional[str], VariantCount] = {}
    from_file = extra is None
    extra = load_extra(study) if from_file else list(extra)
    extra_used = [False] * len(extra)
    convention = study.grid.flops_convention
    tracking = dataclasses.asdict(study.tracking)
    tracking["experiment"] = tracking["experiment"] or study.name
    cells: list[RunSpec] = []
    seen: dict[str, str] = {}
    tuned_doc = None
    for variant in variants(study):
        data, training = variant.data, variant.training
        shared = {"data": hashed_data(data), "training": hashed_training(training),
                  "eval": _hashed_eval(variant.eval), "convention": convention}
        count_v = per_variant.setdefault(variant.name, VariantCount())
        tuned_where = f"grid.variants.{variant.name}.training" if variant.name else "training"
        if tuned_fields(training) and tuned_doc is None:
            tuned_doc = load_tuned_law(study, f"{tuned_where}.{tuned_fields(training)[0]}")
        hashers: dict[tuple, KeyHasher] = {}   # per (setup reads, resolved training)
        base_dir = Path(study.source).parent if study.source else None
        run_data, run_eval = _resolve_paths(data, variant.eval, base_dir)
        ctx = training.context
        for rf in families:
            fam = rf.family
            setups = [(variant.setup or fam.setup, variant.init or fam.init)]
            if study.grid.textless_twin and setups[0][0] != "textless":
                setups.append(("textless", study.grid.twin_init))
            for spec_str, member in rf.members:
                cfg = member.config
                sibling: tuple[list[int], float] = ([], 0.0)   # the first setup's budgets and FLOPs per token
                for si, (setup, init) in enumerate(setups):
                    try:
                        rows, shared_rows = vocab_rows(setup, cfg["vocab_size"], data.units, data.vocab_resize,
                                                       data.pad_vocab_to, fam.tokenizer_len or member.tokenizer_len)
                    except InputError as e:
                        raise StudyError(f"{study.source}: families.{rf.name}: {e}") from None
                    counts = count(cfg, rows, shared_rows)
                    layers, width = member.layers, member.width
                    fpt = flops_per_token(counts, convention, layers, ctx, width)
                    cost_fpt = flops_per_token(counts, "6ND_attention", layers, ctx, width)
                    if init == "textlm" and member.source == "ladder":
                        raise StudyError(f"{study.source}: families.{rf.name}: init textlm needs TextLM weights, "
                                         "a ladder has none")
                    cell_training = training
                    if tuned_fields(training):
                        cell_training = _resolve_tuned(study, training, tuned_doc, counts, tuned_where)
                    rule = study.grid.twin_budget if si == 1 else "grid"
                    budgets = _budgets(study, counts, fpt) if rule == "grid" else _twin_budgets(rule, sibling, fpt)
                    if si == 0:
                        sibling = (budgets, fpt)
                    if cell_training.schedule == "wsd":
                        cell_training = _wsd_warmup(study, cell_training, budgets, tuned_where)
                    sig = (setup == "textless", cell_training.lr, cell_training.min_lr, cell_training.batch_tokens,
                           cell_training.warmup_tokens)
                    if sig not in hashers:
                        hashers[sig] = KeyHasher({**shared, "data": read_data(setup, shared["data"]),
                                                  "training": hashed_training(cell_training)})
                    cell_hasher = hashers[sig]
                    here = (rf.name, member.name, setup, variant.name)
                    mine = [i for i, e in enumerate(extra) if e.where == here]   # proposed cells (propose)
                    budgets = budgets + [extra[i].tokens for i in mine]          # a new list: not the twin's
                    for i in mine:
                        extra_used[i] = True
                    for tokens in budgets:
                        fields = {"arch": cfg, "member": spec_str, "weights": fam.weights.get(spec_str),
                                  "tokenizer": fam.tokenizer, "init": init, "setup": setup, "rows": rows,
                                  "tokens": tokens}
                        if setup == "textless":
                            del fields["tokenizer"]  # a textless vocabulary is the units alone
                        key = cell_hasher.key(rf.name, member.name, tokens, fields)
                        trunk = None
                        if cell_training.schedule == "wsd" and cell_training.share_trunk:
                            trunk = {"key": cell_hasher.trunk_key(rf.name, member.name, fields),
                                     "step": _branch_step(study, cell_training, tokens, tuned_where)}
                        count_v.cells += 1
                        if key in seen:
                            count_v.repeated += 1
                            continue  # a variant that overrides nothing this cell reads: planned once
                        seen[key] = key
                        cells.append(RunSpec(
                            key=key, study=study.name, family=rf.name, member=member.name, setup=setup,
                            init=init, variant=variant.name, arch=cfg, weights=member.weights,
                            tokenizer=_abs(fam.tokenizer, base_dir) or member.weights, vocab_rows=rows,
                            base_rows=shared_rows,
                            params=counts, tokens=tokens, flops=fpt * tokens, flops_convention=convention,
                            cost_flops=cost_fpt * tokens, data=run_data, training=cell_training,
                            eval=_eval_for(run_eval, setup), tracking=tracking, trunk=trunk))
    unused = [i for i, used in enumerate(extra_used) if not used]
    if unused:
        e = extra[unused[0]]
        where = f"{extra_path(study)}: cells[{unused[0]}]" if from_file else f"extra cell {unused[0]}"
        raise StudyError(f"{where}: no cell of the study has family {e.family}, member {e.member}, setup "
                         f"{e.setup} and variant {e.variant}; expected one that `plan` lists")
    if not cells:
        raise StudyError(f"{study.source}: grid: no cells; every budget was filtered out by "
                         "min/max_tokens_per_param (or no budget gives a whole token)")
    return cells, per_variant
