"""A member that does not fit one GPU unsharded, trained a few steps on ONE GPU with FSDP2 (a group of
one) plus CPU offload and/or activation checkpointing: measured peak GPU memory against the estimate
`plan` prints (scaling/memory.py), and the unsharded estimate that says it needs sharding.

    python bench/sharded_memory.py                  # Qwen2.5-3B (+502 rows), mb 8 x 2048: 97 GiB unsharded
                                                    # (estimate); FSDP + activation checkpointing on one GPU
    python bench/sharded_memory.py --offload        # ... plus parameters, gradients, AdamW on the host
    python bench/sharded_memory.py --shape qwen2.5-7B --micro-batch 2 --offload   # needs ~115 GiB of host RAM
    python bench/sharded_memory.py --shape tiny --steps 2 --context 128           # CPU smoke run

The model is built on the meta device, sharded, then materialised (on the host with offload) and
initialised at random: a 7.6B model never exists unsharded. The step is the cell's own
(scaling.train.loss_model / make_optimizer / optimizer_step). Ends with one JSON line; the target is
that the measured peak fits the GPU (and the estimate is within 25% of it).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_throughput import packed_stream, shape, windows  # noqa: E402  (bench/ is on sys.path as the script's folder)

TINY = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": False,
        "max_position_embeddings": 4096}


def member_config(name: str) -> tuple[dict, int]:
    """(HF config dict, rows) of a catalog member (`family-member`) or the tiny CPU shape, +502 rows."""
    if name != "tiny":
        arch, rows, _ = shape(name)
        return dict(arch), rows
    from scaling.vocab import vocab_rows

    return dict(TINY), vocab_rows("interleaved", TINY["vocab_size"], 500)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="qwen2.5-3B")
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--offload", action="store_true", help="CPU offload (host RAM: 16 bytes per parameter)")
    ap.add_argument("--no-checkpointing", action="store_true")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--gpu-gib", type=float, default=80.0, help="the GPU the member should not fit (A100 80 GB)")
    args = ap.parse_args()

    from accelerate import Accelerator
    from transformers import AutoConfig

    from scaling import memory, sharding
    from scaling.config import TrainingConfig
    from scaling.train import loss_model, make_optimizer, optimizer_step

    cuda = torch.cuda.is_available()
    cfg_dict, rows = member_config(args.shape)
    T, mb = args.context, args.micro_batch
    offload, ckpt = args.offload, not args.no_checkpointing
    tr = TrainingConfig(context=T, micro_batch=mb, batch_tokens=mb * T, lr=1e-5, min_lr=1e-6,
                        precision="bf16" if cuda else "fp32", compile=cuda and not args.no_compile,
                        doc_mask=cuda, gradient_checkpointing=ckpt, sharding="fsdp", cpu_offload=offload)
    shape = memory.ModelShape.from_arch(cfg_dict, rows)
    wl = memory.Workload(mb, T, bf16=cuda, compiled=tr.compile, checkpointing=ckpt)
    gpu_bytes = args.gpu_gib * memory.GIB
    unsharded = memory.estimate(shape, 1, False, workload=wl)
    sharded_est = memory.estimate(shape, 1, True, offload, workload=wl)
    print(f"{args.shape}: {shape.params:,} parameters, {rows:,} rows")
    print(f"unsharded on 1 GPU: {unsharded.describe()} -> "
          f"{'fits' if unsharded.fits(gpu_bytes) else 'does NOT fit'} {args.gpu_gib:g} GiB")
    print(f"this run (estimate): {sharded_est.describe()}")

    model_type = cfg_dict.pop("model_type")
    cfg = AutoConfig.for_model(model_type, **{**cfg_dict, "vocab_size": rows})
    acc = Accelerator(mixed_precision="bf16" if cuda else "no", cpu=not cuda)
    device = acc.device
    from transformers import AutoModelForCausalLM

    t0 = time.time()
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    eos = rows - 3
    core = loss_model(lm, eos, tr, device)
    sharding.shard(core, bf16=cuda, cpu_offload=offload)
    core.to_empty(device="cpu" if offload or not cuda else device)
    with torch.no_grad():
        for name, p in core.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    base = getattr(lm, lm.base_model_prefix)
    rope = base.rotary_emb  # a non-persistent buffer: rebuild it after to_empty
    base.rotary_emb = type(rope)(config=lm.config).to(device)
    opt = make_optimizer(core.parameters(), tr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    print(f"built and sharded in {time.time() - t0:.0f}s")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    n = mb * (args.steps + 1)
    wins = windows(packed_stream(n * T + 1, cfg_dict["vocab_size"], eos), T, n)
    losses, times = [], []
    for i in range(args.steps + 1):
        w = wins[i * mb:(i + 1) * mb]
        t = time.time()
        loss = optimizer_step(acc, core, opt, sched, [(w[:, :-1], w[:, 1:])], mb * T, 1.0)
        losses.append(float(loss) / (mb * T))
        if cuda:
            torch.cuda.synchronize()
        times.append(time.time() - t)
        print(f"step {i + 1}: loss {losses[-1]:.4f}, {times[-1]:.1f}s"
              + (f", peak {torch.cuda.max_memory_allocated() / memory.GIB:.2f} GiB" if cuda else ""), flush=True)
    peak = torch.cuda.max_memory_allocated() / memory.GIB if cuda else None
    reserved = torch.cuda.max_memory_reserved() / memory.GIB if cuda else None
    host_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)
    timed = times[1:] or times
    out = {"bench": "sharded_memory", "device": torch.cuda.get_device_name() if cuda else "cpu",
           "shape": args.shape, "params": shape.params, "context": T, "micro_batch": mb, "gpus": 1,
           "fsdp": True, "cpu_offload": offload, "activation_checkpointing": ckpt, "compiled": tr.compile,
           "steps": args.steps, "losses": [round(x, 4) for x in losses],
           "peak_gpu_gib": None if peak is None else round(peak, 2),
           "peak_gpu_reserved_gib": None if reserved is None else round(reserved, 2),
           "peak_host_gib": round(host_gib, 1),
           "tokens_per_second": round(mb * T / (sum(timed) / len(timed)), 1),
           "estimate_gib": round(sharded_est.gib(), 2), "unsharded_estimate_gib": round(unsharded.gib(), 2),
           "target_gpu_gib": args.gpu_gib,
           "fits": None if peak is None else bool(reserved <= args.gpu_gib),
           "estimate_within_25pct": None if peak is None else bool(abs(sharded_est.gib() - peak) <= 0.25 * peak)}
    print(json.dumps(out))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
