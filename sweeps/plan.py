"""`launch.py plan`: the cells of a study with parameter counts, tokens, FLOPs and GPU-hours."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from scaling.spec import RunSpec

from .cost import CostBasis, estimate
from .grid import expand, load_tuned_law, tuned_fields, variants
from .keys import short_count
from .table import format_table
from .study import Study


@dataclass
class Plan:
    study: Study
    cells: list[RunSpec]
    gpu_hours: dict[str, float]
    basis: CostBasis
    tuned: Optional[dict] = None            # <study dir>/tuned.json when the study uses `tuned` settings
    tuned_fields: tuple[str, ...] = ()      # which settings (lr, batch_tokens)

    @property
    def total_gpu_hours(self) -> float:
        return sum(self.gpu_hours.values())

    @property
    def total_flops(self) -> float:
        return sum(c.flops for c in self.cells)


def make_plan(study: Study) -> Plan:
    cells = expand(study)
    hours, basis = estimate(study, cells)
    fields = tuple(sorted({f for v in variants(study) for f in tuned_fields(v.training)}))
    tuned = load_tuned_law(study) if fields else None
    return Plan(study, cells, hours, basis, tuned, fields)


def member_sizes(study: Study) -> list[dict]:
    """Each family member's parameter counts in the study's setup (for `recommend`)."""
    seen, out = set(), []
    for c in expand(study):
        if (c.family, c.member, c.setup) in seen:
            continue
        seen.add((c.family, c.member, c.setup))
        out.append({"family": c.family, "member": c.member, "setup": c.setup, "params_total": c.params.total,
                    "params_nonembedding": c.params.nonembedding})
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
        })
    return out


def format_plan(plan: Plan) -> str:
    """The human table and totals."""
    show_variant = any(c.variant for c in plan.cells)
    tuned_cols = (["lr"] if "lr" in plan.tuned_fields else []) + \
                 (["batch"] if "batch_tokens" in plan.tuned_fields else [])
    header = ["family", "member", "init", "setup"] + (["variant"] if show_variant else []) + \
             ["params", "non-emb", "tokens", "tok/param", "FLOPs", "GPU-h"] + tuned_cols + ["key"]
    rows = []
    for c in plan.cells:
        row = [c.family, c.member, c.init, c.setup] + ([c.variant or "-"] if show_variant else [])
        row += [short_count(c.params.total), short_count(c.params.nonembedding), short_count(c.tokens),
                f"{c.tokens / c.params.total:.3g}", f"{c.flops:.3g}", f"{plan.gpu_hours[c.key]:.3g}"]
        row += ([f"{c.training.lr:.3g}"] if "lr" in plan.tuned_fields else []) + \
               ([short_count(c.training.batch_tokens)] if "batch_tokens" in plan.tuned_fields else []) + [c.key]
        rows.append(row)
    first_num = 5 if show_variant else 4
    table = format_table(header, rows, set(range(first_num, first_num + 6 + len(tuned_cols))))
    ex = plan.study.executor
    gpu = ex.gpu_type if ex.peak_tflops is None else f"{ex.gpu_type} ({ex.peak_tflops:g} TFLOP/s)"
    totals = (f"\n{len(plan.cells)} cells, {plan.total_flops:.3g} FLOPs ({plan.cells[0].flops_convention}), "
              f"{plan.total_gpu_hours:,.4g} {gpu} GPU-hours ({plan.basis.describe()}; "
              f"cost counts 6ND + attention FLOPs)")
    if plan.tuned is not None:
        from analysis.lr_law import describe_law

        members = ", ".join(plan.tuned.get("members", {}))
        totals += (f"\ntuned ({', '.join(plan.tuned_fields)}) from {plan.study.study_dir / 'tuned.json'} "
                   f"(members {members}):\n  " + describe_law(plan.tuned).replace("\n", "\n  "))
    return table + totals
