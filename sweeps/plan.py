"""`launch.py plan`: the cells of a study with parameter counts, tokens, FLOPs, GPU-hours, and the memory
per GPU and GPUs each cell needs (scaling.memory)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from analysis.lr_law import describe_law
from scaling.memory import GIB, USABLE, Allocation, Memory
from scaling.spec import RunSpec

from .cost import CostBasis, cell_allocation, estimate, gpu_memory_bytes
from .epochs import CellEpochs, EpochCounter, epochs_note
from .grid import VariantCount, expand, expand_counted, load_tuned_law, tuned_fields, variants
from .keys import short_count
from .preflight import preflight
from .table import format_table
from .study import Study
from .trunks import Sharing, Trunk, is_branch, own_tokens, sharing, trunks_of


@dataclass
class Plan:
    study: Study
    cells: list[RunSpec]
    gpu_hours: dict[str, float]
    basis: CostBasis
    tuned: Optional[dict] = None            # <study dir>/tuned.json when the study uses `tuned` settings
    tuned_fields: tuple[str, ...] = ()      # which settings (lr, batch_tokens)
    # cell key -> GPUs needed and given for its memory; empty when the executor runs on CPUs
    allocations: dict[str, Allocation] = field(default_factory=dict)
    # variant (None: base) -> cells it gives and how many equal earlier cells (planned once)
    variant_counts: dict[Optional[str], VariantCount] = field(default_factory=dict)
    epochs: dict[str, CellEpochs] = field(default_factory=dict)   # cell key -> epochs of each stream
    trunks: dict[str, Trunk] = field(default_factory=dict)        # WSD trunks shared by branch cells

    @property
    def sharing(self) -> Optional[Sharing]:
        return sharing(self.cells)

    def own_gpu_hours(self, cell: RunSpec) -> float:
        """GPU-hours a cell trains itself (a WSD branch: its decay after the trunk's branch point)."""
        return self.gpu_hours[cell.key] * own_tokens(cell) / cell.tokens

    def trunk_gpu_hours(self, trunk: Trunk) -> float:
        """A trunk's GPU-hours at its largest branch's rate of GPU-hours per cost FLOP."""
        top = max((c for c in self.cells if c.key in trunk.branches), key=lambda c: c.tokens)
        return self.gpu_hours[top.key] / top.cost_flops * trunk.spec.cost_flops

    @property
    def shared_gpu_hours(self) -> float:
        """What the study costs when WSD branches share their trunks (= total_gpu_hours without trunks)."""
        return sum(self.own_gpu_hours(c) for c in self.cells) + \
            sum(self.trunk_gpu_hours(t) for t in self.trunks.values())

    @property
    def total_gpu_hours(self) -> float:
        return sum(self.gpu_hours.values())

    @property
    def total_flops(self) -> float:
        return sum(c.flops for c in self.cells)


def make_plan(study: Study) -> Plan:
    cells, counted = expand_counted(study)
    preflight(study, cells)  # a missing or malformed data file is found before anything is planned
    hours, basis = estimate(study, cells)
    fields = tuple(sorted({f for v in variants(study) for f in tuned_fields(v.training)}))
    tuned = load_tuned_law(study) if fields else None
    allocations, cache = {}, {}
    for c in cells:
        alloc = cell_allocation(study, c, cache)
        if alloc is not None:
            allocations[c.key] = alloc
    counter = EpochCounter(study)
    epochs = {c.key: counter(c) for c in cells}
    return Plan(study, cells, hours, basis, tuned, fields, allocations, counted, epochs, trunks_of(cells))


def _shown(alloc: Allocation) -> Memory:
    """The memory a plan shows: at the GPUs needed, or (when nothing fits) at the GPUs given."""
    return alloc.memory if alloc.memory is not None else alloc.memory_allocated


def _gpus_text(alloc: Optional[Allocation]) -> str:
    if alloc is None:
        return "-"
    if alloc.needed is None:
        return "no fit"
    m = alloc.memory
    return f"{alloc.needed}{' fsdp' if m.sharded else ''}{'+offload' if m.cpu_offload else ''}"


def member_sizes(study: Study) -> list[dict]:
    """Each member's parameter counts per (family, setup, variant) group, as its cells count them: the
    groups `recommend` fits (a textless twin has its own vocabulary, so its own count)."""
    seen, out = set(), []
    for c in expand(study):
        group = (c.family, c.member, c.setup, c.variant)
        if group in seen:
            continue
        seen.add(group)
        out.append({"family": c.family, "member": c.member, "setup": c.setup, "variant": c.variant,
                    "params_total": c.params.total, "params_nonembedding": c.params.nonembedding})
    return out


def cell_rows(plan: Plan) -> list[dict]:
    """One JSON-able dict per cell (the `plan --json` output)."""
    out = []
    for c in plan.cells:
        p = c.params
        out.append({
            "key": c.key, "family": c.family, "member": c.member, "init": c.init, "setup": c.setup,
            "variant": c.variant, "params_total": p.total, "params_embedding": p.embedding,
            "params_output_head": p.output_head, "params_nonembedding": p.nonembedding,
            "vocab_rows": p.vocab_rows, "new_rows": p.new_rows, "new_row_params": p.new_row_params,
            "tokens": c.tokens, "tokens_per_param": c.tokens / p.total, "flops": c.flops,
            "flops_convention": c.flops_convention, "cost_flops": c.cost_flops,
            "gpu_hours": plan.gpu_hours[c.key], "gpus": plan.basis.gpus_per_cell,
            "lr": c.training.lr, "min_lr": c.training.min_lr, "batch_tokens": c.training.batch_tokens,
            **_memory_fields(plan.allocations.get(c.key)), **_epoch_fields(plan.epochs.get(c.key)),
            "schedule": c.training.schedule, "trunk": c.trunk["key"] if is_branch(c) else None,
            "branch_step": int(c.trunk["step"]) if is_branch(c) else None,
            "own_gpu_hours": plan.own_gpu_hours(c),
        })
    return out


def _memory_fields(alloc: Optional[Allocation]) -> dict:
    """Per-GPU memory (GiB) at the GPUs needed, the count needed (None: no count fits), whether it
    shards, and what submit gives the cell; all None when the executor runs on CPUs."""
    names = ("weights", "grads", "optimizer", "activations", "transient", "total")
    if alloc is None:
        return {**{f"mem_{n}_gb": None for n in names}, "gpus_needed": None, "sharded": False,
                "cpu_offload": False, "gpus_allocated": None, "nodes": None}
    m = _shown(alloc)
    values = (m.weights, m.gradients, m.optimizer, m.activations, m.transient, m.total)
    return {**{f"mem_{n}_gb": round(v / GIB, 3) for n, v in zip(names, values)},
            "gpus_needed": alloc.needed, "sharded": alloc.sharded,
            "cpu_offload": bool(alloc.memory_allocated and alloc.memory_allocated.cpu_offload),
            "gpus_allocated": alloc.gpus, "nodes": alloc.nodes}


def _epoch_fields(e: Optional[CellEpochs]) -> dict:
    """Epochs and unique tokens per stream ("all" for a declared total; None where unknown)."""
    if e is None:
        return {"epochs": None, "epochs_max": None, "unique_tokens": None, "unique_tokens_source": None}
    return {"epochs": e.epochs, "epochs_max": e.max, "unique_tokens": e.unique_tokens,
            "unique_tokens_source": e.source}


def format_plan(plan: Plan) -> str:
    """The human table and totals."""
    show_variant = any(c.variant for c in plan.cells)
    tuned_cols = (["lr"] if "lr" in plan.tuned_fields else []) + \
                 (["batch"] if "batch_tokens" in plan.tuned_fields else [])
    header = ["family", "member", "init", "setup"] + (["variant"] if show_variant else []) + \
             ["params", "non-emb", "tokens", "tok/param", "FLOPs", "GPU-h", "epochs", "mem/GPU", "GPUs"] + \
        tuned_cols + ["key"]
    rows = []
    for c in plan.cells:
        row = [c.family, c.member, c.init, c.setup] + ([c.variant or "-"] if show_variant else [])
        row += [short_count(c.params.total), short_count(c.params.nonembedding), short_count(c.tokens),
                f"{c.tokens / c.params.total:.3g}", f"{c.flops:.3g}", f"{plan.gpu_hours[c.key]:.3g}",
                plan.epochs[c.key].text()]
        alloc = plan.allocations.get(c.key)
        row += [f"{_shown(alloc).total / GIB:.1f}G" if alloc else "-", _gpus_text(alloc)]
        row += ([f"{c.training.lr:.3g}"] if "lr" in plan.tuned_fields else []) + \
               ([short_count(c.training.batch_tokens)] if "batch_tokens" in plan.tuned_fields else []) + [c.key]
        rows.append(row)
    first_num = 5 if show_variant else 4
    table = format_table(header, rows, set(range(first_num, first_num + 9 + len(tuned_cols))))
    ex = plan.study.executor
    gpu = ex.gpu_type if ex.peak_tflops is None else f"{ex.gpu_type} ({ex.peak_tflops:g} TFLOP/s)"
    totals = (f"\n{len(plan.cells)} cells, {plan.total_flops:.3g} FLOPs ({plan.cells[0].flops_convention}), "
              f"{plan.total_gpu_hours:,.4g} {gpu} GPU-hours ({plan.basis.describe()}; "
              f"cost counts 6ND + attention FLOPs)")
    totals += _memory_totals(plan) + _repeats(plan) + _trunk_lines(plan)
    totals += "\n" + epochs_note(plan.study, [plan.epochs[c.key] for c in plan.cells])
    if plan.tuned is not None:

        members = ", ".join(plan.tuned.get("members", {}))
        totals += (f"\ntuned ({', '.join(plan.tuned_fields)}) from {plan.study.study_dir / 'tuned.json'} "
                   f"(members {members}):\n  " + describe_law(plan.tuned).replace("\n", "\n  "))
    return table + totals


def _trunk_lines(plan: Plan) -> str:
    """The WSD trunks: each with its branches, and what sharing them saves."""
    if not plan.trunks:
        return ""
    by_key = {c.key: c for c in plan.cells}
    rows = []
    for t in plan.trunks.values():
        tr = t.spec.training
        branches = sorted(t.branches, key=lambda k: t.branches[k])
        rows.append([t.key, short_count(t.tokens), f"{plan.trunk_gpu_hours(t):.3g}", str(len(branches)),
                     ", ".join(f"{short_count(by_key[k].tokens)}@{t.branches[k]}" for k in branches)])
        shape = f"{tr.decay_shape} decay over {tr.decay_fraction:g} of each budget's steps"
    table = format_table(["trunk", "tokens", "GPU-h", "branches", "budget@branch step"], rows, {1, 2, 3})
    sh = plan.sharing
    gpu = plan.study.executor.gpu_type
    return (f"\nWSD trunks (training.schedule wsd, {shape}): each budget of a model branches off its "
            f"trunk at its step and decays alone\n{table}\n"
            f"{sh.trunks} trunks + {sh.branches} branches: {plan.shared_gpu_hours:,.4g} {gpu} GPU-hours with "
            f"shared trunks, {plan.total_gpu_hours:,.4g} without (each budget from scratch): saving "
            f"{1 - plan.shared_gpu_hours / plan.total_gpu_hours:.1%} ({short_count(sh.tokens_shared)} tokens "
            f"trained instead of {short_count(sh.tokens_alone)})")


def _memory_totals(plan: Plan) -> str:
    """The memory lines under the table: what the columns mean, the cells that shard, the GPUs given."""
    ex = plan.study.executor
    gpu_bytes = gpu_memory_bytes(ex)
    if gpu_bytes is None or not plan.allocations:
        why = "CPU executor" if ex.gpu_type.lower() == "cpu" else \
            f"no memory known for gpu_type {ex.gpu_type!r}: set executor.gpu_memory_gb"
        return f"\nmem/GPU, GPUs: - ({why})"
    gpu = f"{ex.gpu_type} ({gpu_bytes / GIB:g} GiB)"
    allocs = [plan.allocations[c.key] for c in plan.cells]
    base = ex.nodes * ex.gpus_per_node
    lines = [f"\nmem/GPU: peak training memory per GPU in GiB at the GPUs needed (weights, gradients, AdamW "
             f"state, activations at the cell's micro-batch and context; scaling.memory), planned to "
             f"{USABLE:.0%} of one {gpu}"]
    sharded = [a for a in allocs if a.needed is not None and a.memory.sharded]
    if sharded:
        counts = sorted({a.needed for a in sharded})
        span = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        lines.append(f"{len(sharded)} of {len(allocs)} cells need sharding (FSDP) over {span} {gpu} GPUs "
                     f"(sharding: {_modes(plan)})")
    else:
        lines.append(f"no cell needs sharding on {gpu} GPUs")
    nofit = [a for a in allocs if a.needed is None]
    if nofit:
        lines.append(f"{len(nofit)} cells fit no GPU count (mem/GPU shown at {base} GPUs): with sharding none "
                     "a replica must fit one GPU, and activations never shard; set training."
                     "gradient_checkpointing: true, a smaller micro_batch, or sharding auto")
    given = Counter(a.gpus for a in allocs)
    per = ", ".join(f"{n} cells x {g} GPUs" for g, n in sorted(given.items()))
    lines.append(f"submit gives each cell max({base}, needed) GPUs in whole nodes of {ex.gpus_per_node}: {per}")
    return "\n".join(lines)


def _repeats(plan: Plan) -> str:
    """Lines naming the variants whose cells equal earlier cells (same key: planned once)."""
    lines = []
    for name, n in plan.variant_counts.items():
        if name is None or not n.repeated:
            continue
        if n.changes_nothing:
            lines.append(f"variant {name}: changes nothing a cell reads; its {n.cells} cells are earlier cells "
                         "(planned once): drop it or change what it overrides")
        else:
            lines.append(f"variant {name}: {n.repeated} of its {n.cells} cells equal earlier cells (e.g. textless "
                         "twins, which read no text, mix or interleaving settings): planned once")
    return "".join(f"\n{line}" for line in lines)


def _modes(plan: Plan) -> str:
    return ", ".join(sorted({c.training.sharding for c in plan.cells}))
