"""The memory estimate (scaling.memory) against real tensors and measured GPU peaks, and what `plan` and
`submit` do with it. Reference values come from transformers models built here (their tensors'
bytes, the tensors autograd saves), from bench/results/ (H100 peaks) or from brute force, never
from the estimate itself."""
import dataclasses
import json
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from scaling import memory
from scaling.catalog import find_member
from scaling.head_chunks import ROW_ALIGN
from scaling.lm_step import LossModel, decoder_blocks
from scaling.memory import GIB, ModelShape, Workload, estimate, gpus_needed, needs_sharding, plan_at
from scaling.params import count_params
from scaling.vocab import vocab_rows
from sweeps.lifecycle import group_by_nodes, make_executor
from sweeps.grid import expand
from sweeps.plan import cell_rows, format_plan, make_plan
from sweeps.study import load_study, parse_study

ROOT = Path(__file__).resolve().parents[1]
A100 = 80 * GIB
VOCAB, B, T = 300, 2, 64


def tiny_arch(kind: str, tied: bool, layers: int = 2, hidden: int = 64, inter: int = 176) -> dict:
    return {"model_type": kind, "vocab_size": VOCAB, "hidden_size": hidden, "intermediate_size": inter,
            "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2,
            "tie_word_embeddings": tied, "max_position_embeddings": 256}


def build(arch: dict):
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = {k: v for k, v in arch.items() if k != "model_type"}
    cfg = AutoConfig.for_model(arch["model_type"], attn_implementation="sdpa", **fields)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg)


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, VOCAB, (B, T), generator=g), torch.randint(0, VOCAB, (B, T), generator=g)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("tied", [True, False])
def test_weights_gradients_adam_state_are_the_tensors_bytes(kind, tied):
    arch = tiny_arch(kind, tied)
    lm = build(arch)
    model = LossModel(lm, VOCAB - 1)
    params = list(model.parameters())            # a tied head is one parameter
    opt = torch.optim.AdamW(params, lr=1e-3, fused=True)   # as scaling.train.make_optimizer
    x, y = batch()
    model(x, y).backward()
    opt.step()
    weights = sum(p.nbytes for p in params)
    grads = sum(p.grad.nbytes for p in params)
    state = sum(t.nbytes for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
    shape = ModelShape.from_arch(arch, VOCAB)
    assert shape.params == sum(p.numel() for p in params)
    assert shape.param_tensors == len(params)
    assert shape.block_params == sum(p.numel() for p in decoder_blocks(lm)[0].parameters())
    e = estimate(shape, 1)
    assert (e.weights, e.gradients, e.optimizer) == (weights, grads, state)
    # FSDP over n GPUs divides the fp32 states (AdamW's per-tensor step counters stay whole); offload
    # moves them to the host
    for n in (2, 3, 8):
        s = estimate(shape, n, sharded=True)
        assert (s.weights, s.gradients) == (weights // n, grads // n)
        assert s.optimizer == (state - 4 * len(params)) // n + 4 * len(params)
    off = estimate(shape, 4, sharded=True, cpu_offload=True)
    assert off.weights == off.gradients == off.optimizer == 0
    assert estimate(shape, 4, sharded=False, cpu_offload=True).weights == weights   # offload needs FSDP


def saved_bytes(model, compiled: bool = False) -> int:
    """Bytes of the distinct storages autograd saves in one forward under bf16 autocast (parameters
    excluded): a brute-force count of what backward will need."""
    x, y = batch()
    if compiled:  # warm up the compiled blocks outside the hooks
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x, y)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x, y)
    return sum(seen.values())


TOLERANCE = 0.05   # the estimate counts RoPE tables per token (an upper bound); all else is exact


@pytest.mark.parametrize("kind,tied,layers,mode", [
    ("llama", False, 2, "eager"), ("llama", True, 3, "eager"), ("qwen2", False, 2, "eager"),
    ("qwen2", True, 2, "checkpointing"), ("llama", False, 3, "checkpointing"),
    ("llama", False, 2, "compiled"),
])
def test_activations_match_the_saved_tensors(kind, tied, layers, mode):
    arch = tiny_arch(kind, tied, layers=layers, hidden=128, inter=352)
    lm = build(arch)
    lm.train()
    if mode == "checkpointing":
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if mode == "compiled":  # AOT autograd's min-cut partition, as inductor partitions on CUDA
        for block in decoder_blocks(lm):
            block.compile(backend="aot_eager_decomp_partition", dynamic=False)
    model = LossModel(lm, VOCAB - 1, doc_mask=False, flex=False, compiled_loss=False)
    measured = saved_bytes(model, compiled=mode == "compiled")
    wl = Workload(micro_batch=B, context=T, compiled=mode == "compiled", checkpointing=mode == "checkpointing")
    e = estimate(ModelShape.from_arch(arch, VOCAB), 1, workload=wl)
    padded = -(-VOCAB // ROW_ALIGN) * ROW_ALIGN
    head_grad = 4 * padded * arch["hidden_size"]          # the fused head saves d(loss)/d(head) in fp32
    # autocast's bf16 weight copies are saved by the linears, except inside checkpointed blocks
    expected = e.activations + head_grad + (0 if mode == "checkpointing" else e.copies)
    assert abs(expected / measured - 1) < TOLERANCE, (expected, measured)
    assert expected >= measured


MEASURED = json.loads((ROOT / "bench/results/gpu_throughput_h100_2026-11-25.json").read_text())


@pytest.mark.parametrize("name,variant,micro_batch", [
    ("qwen2.5-0.5B", "ours_doc", 8), ("qwen2.5-0.5B", "ours_mb16", 16),
    ("llama3.2-1B", "ours_doc", 8), ("llama3.2-1B", "ours_mb16", 16),
])
def test_estimate_matches_measured_h100_peaks(name, variant, micro_batch):
    """bench/gpu_throughput.py on an H100: the cell's step (compiled blocks, FlexAttention document
    masks, fused head, bf16 autocast, fused AdamW), vocabulary + 502 rows, context 2048, one GPU;
    peak = torch.cuda.max_memory_allocated."""
    row = next(r for r in MEASURED["shapes"] if r["shape"] == name)
    peak = row[variant]["peak_memory_gib"] * GIB
    family, member = name.split("-", 1)
    arch = find_member(family, member).config
    rows, _ = vocab_rows("interleaved", arch["vocab_size"], 500)
    counts = count_params(arch, rows, arch["vocab_size"])
    assert counts.total == row["params"]
    e = estimate(ModelShape.from_arch(arch, rows, counts), 1,
                 workload=Workload(micro_batch=micro_batch, context=2048, compiled=True))
    assert abs(e.total / peak - 1) < 0.05, (e.describe(), peak / GIB)   # (the bar: within 25%)


def sims(**training) -> "Study":
    data = yaml.safe_load((ROOT / "examples/sims.yaml").read_text())
    data["training"].update(training)
    data["root"] = tempfile.mkdtemp()
    return parse_study(data, "sims.yaml")


def by_member(study):
    out = {}
    for c in expand(study):
        out.setdefault(f"{c.family}-{c.member}", c)
    return out


def test_sims_needs_fsdp_for_big_members_on_a100():
    study = sims()
    plan = make_plan(study)
    cells = by_member(study)
    seven, half = cells["qwen2.5-7B"], cells["qwen2.5-0.5B"]
    a7, a05 = plan.allocations[seven.key], plan.allocations[half.key]
    assert a7.needed >= 2 and a7.memory.sharded and a7.sharded
    assert a7.gpus >= a7.needed and a7.gpus % 8 == 0 and a7.nodes == a7.gpus // 8
    assert a05.needed == 1 and not a05.sharded and a05.gpus == 8 and a05.nodes == 1
    # the needed count is the smallest that fits: brute force over every smaller count
    for c in cells.values():
        a = plan.allocations[c.key]
        assert a.memory.fits(A100)
        assert not any(plan_at(c, n, A100).fits(A100) for n in range(1, a.needed))
        assert plan_at(c, a.gpus, A100).fits(A100)            # and what submit gives fits too
    # one unsharded 7B replica holds 16 bytes per parameter at least: more than an A100
    assert estimate(seven, 1).weights + estimate(seven, 1).optimizer > A100
    assert needs_sharding(seven, A100, gpus=8) and not needs_sharding(half, A100, gpus=8)
    rows = {r["key"]: r for r in cell_rows(plan)}
    r7 = rows[seven.key]
    assert r7["sharded"] and r7["gpus_needed"] == a7.needed and r7["gpus"] == 8
    assert r7["gpus_allocated"] == a7.gpus
    parts = sum(r7[f"mem_{n}_gb"] for n in ("weights", "optimizer", "activations", "transient"))
    assert r7["mem_total_gb"] <= parts + r7["mem_grads_gb"] + 1e-3
    assert rows[half.key]["gpus_needed"] == 1 and not rows[half.key]["sharded"]


def test_sharding_none_and_fsdp():
    none = sims(sharding="none")
    cells = by_member(none)
    assert gpus_needed(cells["qwen2.5-7B"], A100) == (None, False)
    assert gpus_needed(cells["qwen2.5-0.5B"], A100) == (1, False)
    plan = make_plan(none)
    assert plan.allocations[cells["qwen2.5-7B"].key].needed is None
    text = format_plan(plan)
    assert "no fit" in text and "fit no GPU count" in text and "fsdp" not in text.split("\n16 cells")[0]
    forced = by_member(sims(sharding="fsdp"))
    assert gpus_needed(forced["qwen2.5-0.5B"], A100) == (1, True)
    assert needs_sharding(forced["qwen2.5-0.5B"], A100, gpus=1)


def test_checkpointing_and_offload_lower_the_need():
    seven = by_member(sims())["qwen2.5-7B"]
    n, sharded = gpus_needed(seven, A100)
    ck = by_member(sims(gradient_checkpointing=True))["qwen2.5-7B"]
    n_ck, _ = gpus_needed(ck, A100)
    assert sharded and 2 <= n_ck < n
    off = by_member(sims(gradient_checkpointing=True, cpu_offload=True))["qwen2.5-7B"]
    m = plan_at(off, n_ck, A100)
    assert m.cpu_offload and m.weights == 0 and gpus_needed(off, A100)[0] <= n_ck


def test_gpu_memory_override_and_cpu():
    data = yaml.safe_load((ROOT / "examples/sims.yaml").read_text())
    data["executor"]["gpu_type"] = "h200"
    plan = make_plan(parse_study(data))
    assert all(a.needed is not None for a in plan.allocations.values())
    data["executor"]["gpu_memory_gb"] = 24
    small = make_plan(parse_study(data))
    cells = by_member(parse_study(data))
    assert small.allocations[cells["qwen2.5-0.5B"].key].sharded
    tiny = make_plan(load_study(ROOT / "examples/tiny.yaml"))   # from its file: data paths resolve beside it
    assert tiny.allocations == {}
    assert all(r["gpus_needed"] is None and r["mem_total_gb"] is None for r in cell_rows(tiny))
    assert "mem/GPU, GPUs: - (CPU executor)" in format_plan(tiny)


def test_gpu_memory_gb_is_validated():
    from sweeps.study import StudyError

    data = yaml.safe_load((ROOT / "examples/sims.yaml").read_text())
    data["executor"]["gpu_memory_gb"] = 0
    with pytest.raises(StudyError, match="executor.gpu_memory_gb"):
        parse_study(data)


def mixed_study(kind="slurm", gpu_type="a100"):
    data = yaml.safe_load((ROOT / "examples/sims.yaml").read_text())
    data["families"] = {"qwen2.5": {"members": ["0.5B", "7B"], "init": "textlm"}}
    data["executor"].update(kind=kind, gpu_type=gpu_type, gpus_per_node=4)
    if gpu_type == "cpu":
        data["executor"]["peak_tflops"] = 0.1
    data["root"] = tempfile.mkdtemp()
    return parse_study(data)


def test_submit_groups_cells_by_the_nodes_they_need(tmp_path):
    study = mixed_study()
    cells = expand(study)
    groups = group_by_nodes(study, cells, log=lambda _: None)
    need7 = make_plan(study).allocations[by_member(study)["qwen2.5-7B"].key].gpus
    assert set(groups) == {1, need7 // 4} and need7 > 4
    assert {c.member for c in groups[1]} == {"0.5B"}
    assert {c.member for c in groups[need7 // 4]} == {"7B"}
    small = make_executor(study, "slurm", tmp_path)._executor.parameters
    big = make_executor(study, "slurm", tmp_path, nodes=need7 // 4)._executor.parameters
    assert (small["nodes"], small["ntasks_per_node"], small["gpus_per_node"]) == (1, 4, 4)
    assert (big["nodes"], big["ntasks_per_node"], big["gpus_per_node"]) == (need7 // 4, 4, 4)


def test_cpu_slurm_gpus_per_node_counts_tasks(tmp_path):
    study = mixed_study(gpu_type="cpu")
    assert set(group_by_nodes(study, expand(study), log=lambda _: None)) == {1}
    params = make_executor(study, "slurm", tmp_path)._executor.parameters
    assert params["ntasks_per_node"] == 4 and "gpus_per_node" not in params


def test_runtime_world_size_default(monkeypatch):
    """Training asks `needs_sharding(spec, gpu_bytes)` with the world size it runs under."""
    arch = find_member("qwen2.5", "1.5B").config
    shape = ModelShape.from_arch(arch, arch["vocab_size"] + 502)
    one, eight = estimate(shape, 1).total, estimate(shape, 8).total
    assert eight - one == 4 * shape.params          # DDP's fp32 gradient buckets
    gpu = (one + eight) / 2 / memory.USABLE
    assert not needs_sharding(shape, gpu, gpus=1) and needs_sharding(shape, gpu, gpus=8)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not needs_sharding(shape, gpu)
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert needs_sharding(shape, gpu)
