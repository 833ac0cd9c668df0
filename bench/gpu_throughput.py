"""GPU training throughput and numerics: this project's cell step against the plain Hugging Face Trainer.

Throughput, per shape (Qwen2.5-0.5B and Llama-3.2-1B configs, random init, vocabulary + 502 rows,
context 2048, micro-batch 8, same packed token stream for both, same process):
- the Trainer as SlamKit uses it: bf16 autocast over fp32 weights, fused AdamW, SDPA, its own loss;
- the cell's step (`scaling.train.loss_model` / `make_optimizer` / `optimizer_step`, the functions the
  training loop calls): compiled decoder blocks, fused head + cross-entropy, FlexAttention inside each
  packed document, the same bf16 autocast over fp32 master weights and fused AdamW.
Reported: tokens/s, MFU (6N + attention FLOPs per token, `6ND_attention`, against the GPU's dense bf16
peak), peak memory, the ratio ours / Trainer.

Numerics: a smaller Llama (d512 x 8) on real packed interleaved data (examples/tiny-data through the
cell's data pipeline), the first N optimiser steps of both from the same initial weights and the same
windows; the Trainer gets the same document masks (a 4D boolean mask), so both compute the same
function. Prints the largest loss difference against the stated tolerance.

Ends with one JSON line. Needs a CUDA GPU; on a machine without one it says so and exits 0.
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}
TARGETS = {"qwen2.5-0.5B": {"ratio": 2.5, "mfu": 0.40}, "llama3.2-1B": {"ratio": 2.2, "mfu": 0.50}}
NUMERICS_TOLERANCE = 0.03  # or twice the calibration drift, whichever is larger; largest |difference| of the 10-step mean loss curves (bf16 kernels differ, and the
                           # difference of two bf16 runs grows with the steps like any rounding perturbation)


def peak_flops() -> float:
    name = torch.cuda.get_device_name()
    for key, tf in PEAK_TFLOPS.items():
        if key in name:
            return tf * 1e12
    return 989e12


def shape(name: str):
    from scaling.catalog import find_member
    from scaling.params import count_params
    from scaling.vocab import vocab_rows

    family, member = name.split("-", 1)
    m = find_member(family, member)
    base = m.config["vocab_size"]
    rows, _ = vocab_rows("interleaved", base, 500)
    return m.config, rows, count_params(m.config, rows, base)


def packed_stream(n_tokens: int, vocab: int, eos: int, seed: int = 0, mean_doc: int = 700) -> np.ndarray:
    """Random tokens in documents of geometric length, each ending with eos."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, n_tokens, dtype=np.int64)
    ids[ids == eos] = (eos + 1) % vocab
    ends = np.cumsum(rng.geometric(1.0 / mean_doc, n_tokens // 8))
    ids[ends[ends < n_tokens]] = eos
    return ids


def windows(stream: np.ndarray, T: int, n: int) -> np.ndarray:
    return np.stack([stream[i * T:i * T + T + 1] for i in range(n)])


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class _Timer:
    def __init__(self, warmup: int):
        self.warmup, self.t0, self.t1, self.n = warmup, None, None, 0

    def step(self, i: int) -> None:  # called after step i (1-based) finished
        if i == self.warmup:
            _sync()
            self.t0 = time.perf_counter()
        elif i > self.warmup:
            self.n += 1

    def stop(self) -> float:
        _sync()
        self.t1 = time.perf_counter()
        return self.t1 - self.t0


def run_trainer(cfg, model_state, wins: np.ndarray, mb: int, warmup: int, steps: int, out: Path,
                masks: bool = False, eos: int = 0, lr: float = 1e-4, losses: list | None = None,
                bf16: bool = True) -> float:
    """Plain transformers.Trainer; returns tokens/s over the timed steps."""
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from scaling.lm_step import doc_layout

    T = wins.shape[1] - 1
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="sdpa")
    if model_state is not None:
        model.load_state_dict(model_state)
    data = torch.from_numpy(wins)

    class Windows(torch.utils.data.Dataset):
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return {"input_ids": data[i, :-1], "labels": data[i, 1:]}

    def collate(items):
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}

    class PackedTrainer(Trainer):
        def _get_train_sampler(self, *args, **kwargs):  # the windows in order, as the cell reads them
            return torch.utils.data.SequentialSampler(self.train_dataset)

        # labels are the next tokens already (packed windows); with `masks`, the same document masks as ours
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            x, y = inputs["input_ids"], inputs["labels"]
            kw = {}
            if masks:
                doc, pos = doc_layout(x, eos)
                causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
                kw = {"attention_mask": ((doc[:, :, None] == doc[:, None, :]) & causal)[:, None], "position_ids": pos}
            logits = model(input_ids=x, **kw).logits
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
            if losses is not None:
                losses.append(loss.detach())
            return (loss, logits) if return_outputs else loss

    timer = _Timer(warmup)

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            timer.step(state.global_step)

    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=mb, max_steps=warmup + steps, learning_rate=lr,
        lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, weight_decay=0.0, bf16=bf16,
        optim="adamw_torch_fused", report_to=[], save_strategy="no", logging_steps=10 ** 9,
        dataloader_num_workers=2, dataloader_pin_memory=True, seed=0, disable_tqdm=True,
        use_cpu=not torch.cuda.is_available())
    trainer = PackedTrainer(model=model, args=args, train_dataset=Windows(), data_collator=collate,
                            callbacks=[Clock()])
    trainer.train()
    seconds = timer.stop()
    del trainer, model
    return steps * mb * T / seconds


def run_ours(cfg, model_state, wins: np.ndarray, mb: int, warmup: int, steps: int, eos: int,
             lr: float = 1e-4, losses: list | None = None, whole: bool = False, profile: bool = False,
             bf16_weights: bool = False, compile_mode: str | None = None, sdpa_backend: str | None = None,
             precision: str = "bf16", **training) -> float:
    """The cell's own step functions; returns tokens/s over the timed steps."""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from scaling.config import TrainingConfig
    from scaling.train import loss_model, make_optimizer, optimizer_step

    T = wins.shape[1] - 1
    tr = TrainingConfig(context=T, micro_batch=mb, batch_tokens=mb * T, lr=lr, grad_clip=1.0, precision=precision,
                        **training)
    acc = Accelerator(mixed_precision="bf16" if precision == "bf16" else "no")
    lm = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    if model_state is not None:
        lm.load_state_dict(model_state)
    lm.to(acc.device)
    model = loss_model(lm, eos, tr, acc.device, compile_mode=compile_mode)
    if whole:  # experiment: one graph for the whole forward instead of one per block
        model.forward = torch.compile(model.forward, dynamic=False)
    if bf16_weights:  # FSDP2 over a group of one: bf16 compute weights, fp32 master weights in AdamW
        from scaling import sharding

        sharding.shard(model, bf16=True, cpu_offload=False)
    opt = make_optimizer(model.parameters(), tr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    if not bf16_weights:
        model, opt = acc.prepare(model, opt)
    model.train()
    timer = _Timer(warmup)
    backend = nullcontext()
    if sdpa_backend:  # chosen while the compiled blocks trace, so it holds for the whole run
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = sdpa_kernel([getattr(SDPBackend, f"{sdpa_backend.upper()}_ATTENTION")])
    with backend:
        for i in range(warmup + steps):
            w = wins[i * mb:(i + 1) * mb]
            loss = optimizer_step(acc, model, opt, sched, [(w[:, :-1], w[:, 1:])], mb * T, tr.grad_clip)
            if losses is not None:
                losses.append(loss / (mb * T))
            timer.step(i + 1)
        seconds = timer.stop()
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as prof

        with prof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            for i in range(2):
                w = wins[i * mb:(i + 1) * mb]
                optimizer_step(acc, model, opt, sched, [(w[:, :-1], w[:, 1:])], mb * T, tr.grad_clip)
            _sync()
        print(p.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=70))
    del model, opt, lm, acc
    return steps * mb * T / seconds


VARIANT_PARTS = {
    "doc": "attention inside each packed document (FlexAttention block mask); the default",
    "causal": "plain causal attention across documents (SDPA, flash on CUDA)",
    "cudnn": "with causal: SDPA restricted to the cuDNN attention backend",
    "mb16": "micro-batch 16 (the same tokens per step through fewer, larger micro-batches)",
    "bf16w": "bf16 compute weights through FSDP2 over one GPU, fp32 master weights in AdamW",
    "autotune": "blocks compiled with mode max-autotune-no-cudagraphs",
    "ckpt": "activation checkpointing",
    "eager": "blocks not compiled",
    "profile": "print a torch.profiler table of two steps",
    "whole": "one compiled graph for the whole forward instead of one per block",
}


def variant_options(name: str) -> tuple[dict, int | None]:
    """`doc_bf16w`, `causal_cudnn`, `mb16_bf16w_autotune`, ...: parts joined by '_' (VARIANT_PARTS);
    returns run_ours keyword arguments and the micro-batch (None: the --micro-batch)."""
    parts = name.split("_")
    unknown = [p for p in parts if p not in VARIANT_PARTS]
    if unknown:
        raise ValueError(f"--variants: unknown part {unknown[0]!r} in {name!r}; expected parts of "
                         f"{', '.join(VARIANT_PARTS)} joined by '_'")
    opts = {"doc_mask": "causal" not in parts}
    if "cudnn" in parts:
        opts["sdpa_backend"] = "cudnn"
    if "bf16w" in parts:
        opts["bf16_weights"] = True
    if "autotune" in parts:
        opts["compile_mode"] = "max-autotune-no-cudagraphs"
    if "ckpt" in parts:
        opts["gradient_checkpointing"] = True
    if "eager" in parts or "whole" in parts:
        opts["compile"] = False
    if "whole" in parts:
        opts["whole"] = True
    if "profile" in parts:
        opts["profile"] = True
    return opts, (16 if "mb16" in parts else None)


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def throughput(name: str, mb: int, T: int, warmup: int, steps: int, variants: list[str], tmp: Path,
               trainer: bool = True) -> dict:
    from scaling.flops import flops_per_token
    from scaling.params import build_config

    arch, rows, counts = shape(name)
    cfg = build_config(arch, rows=rows)
    fpt = flops_per_token(counts, "6ND_attention", arch["num_hidden_layers"], T, arch["hidden_size"])
    eos = rows - 1
    n = (warmup + steps) * mb
    wins = windows(packed_stream(n * T + 1, rows, eos), T, n)
    peak = peak_flops()
    row = {"shape": name, "params": counts.total, "flops_per_token": fpt}

    def record(label: str, tps: float) -> None:
        row[label] = {"tokens_per_second": round(tps), "mfu": round(tps * fpt / peak, 4),
                      "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)}
        print(f"  {name:14s} {label:22s} {tps:10,.0f} tok/s  MFU {tps * fpt / peak:6.1%}  "
              f"peak {row[label]['peak_memory_gib']:6.2f} GiB", flush=True)

    _free()
    if trainer:
        record("hf_trainer", run_trainer(cfg, None, wins, mb, warmup, steps, tmp / name))
    else:
        row["hf_trainer"] = {"tokens_per_second": float("nan"), "peak_memory_gib": None}
    for v in variants:
        _free()
        opts, micro = variant_options(v)
        micro = micro or mb
        w, s = (warmup, steps) if micro == mb else (max(2, warmup * mb // micro), max(1, steps * mb // micro))
        try:  # one failing variant must not hide the others' figures
            record(f"ours_{v}", run_ours(cfg, None, wins, micro, w, s, eos, **opts))
        except Exception:
            traceback.print_exc()
    base = row["hf_trainer"]["tokens_per_second"]
    for v in variants:
        if f"ours_{v}" in row:
            row[f"ours_{v}"]["ratio"] = round(row[f"ours_{v}"]["tokens_per_second"] / base, 3)
    return row


def tiny_data_windows(T: int, n: int, cache: Path) -> tuple[np.ndarray, int, int]:
    """`n` packed interleaved windows of examples/tiny-data through the cell's data pipeline:
    (windows [n, T + 1], vocabulary rows, eos id)."""
    from transformers import AutoTokenizer

    from scaling.config import Corpus, DataConfig, StreamMix
    from scaling.data import prepare
    from scaling.vocab import build_vocab, vocab_rows

    tiny = ROOT / "examples" / "tiny-data"
    base = len(AutoTokenizer.from_pretrained(str(tiny / "tokenizer")))
    rows, _ = vocab_rows("interleaved", base, 50)
    vocab = build_vocab("interleaved", rows, 50, str(tiny / "tokenizer"))
    data_cfg = DataConfig(units=50, corpora=[Corpus(str(tiny / "units.jsonl"), "units", alignments=str(tiny / "align")),
                                             Corpus(str(tiny / "text.jsonl"), "text")],
                          mix=StreamMix(text=0.2, interleaved=0.55, speech=0.25))
    packed = prepare(vocab, data_cfg, T, 0, 2000, cache)
    pos = dict.fromkeys(packed.shares, 0)
    wins = np.stack([packed.sequence(j, pos)[1] for j in range(n)]).astype(np.int64)
    return wins, rows, vocab.eos_id


def numerics(steps: int, T: int, mb: int, tmp: Path, variant: str = "doc") -> dict:
    from transformers import AutoModelForCausalLM, LlamaConfig

    wins, rows, eos = tiny_data_windows(T, steps * mb, tmp / "cache")
    cfg = LlamaConfig(vocab_size=rows, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                      num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=T,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    state = copy.deepcopy(AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).state_dict())
    hf_losses, our_losses = [], []
    _free()
    run_trainer(cfg, state, wins, mb, 1, steps - 1, tmp / "num", masks=True, eos=eos, lr=1e-3,
                losses=hf_losses)
    _free()
    opts, _ = variant_options(variant)  # the cell as the throughput run measured it (micro-batch aside)
    if not opts["doc_mask"]:
        raise ValueError(f"--numerics-variant {variant!r}: the Trainer gets the document masks; use a doc variant")
    opts.pop("profile", None)
    run_ours(cfg, state, wins, mb, 1, steps - 1, eos, lr=1e-3, losses=our_losses, **opts)
    # calibration: the same numerics through other kernels (eager, unfused blocks); how far two correct
    # bf16 runs drift apart on this data is the scale the Trainer comparison is judged on
    eager_losses = []
    _free()
    eager = {k: v for k, v in opts.items() if k not in ("compile_mode", "whole")}
    run_ours(cfg, state, wins, mb, 1, steps - 1, eos, lr=1e-3, losses=eager_losses,
             **{**eager, "compile": False})
    a = np.array([float(v) for v in hf_losses])
    b = np.array([float(v) for v in our_losses])
    c = np.array([float(v) for v in eager_losses])
    diff = np.abs(a - b)
    k = 10

    def smoothed(u, v):
        return np.abs(np.convolve(u, np.ones(k) / k, "valid") - np.convolve(v, np.ones(k) / k, "valid"))

    smooth = smoothed(a, b)
    calib = float(smoothed(b, c).max())
    print(f"  calibration: compiled vs eager cell, same numerics: {k}-step mean curves differ by at most "
          f"{calib:.4f} (per step {np.abs(b - c).max():.4f})", flush=True)
    print(f"  numerics: {steps} steps, loss {a[0]:.4f} -> {a[-1]:.4f} (Trainer) vs {b[0]:.4f} -> {b[-1]:.4f} "
          f"(ours); largest |diff| per step {diff.max():.4f} at step {int(diff.argmax()) + 1} (mean {diff.mean():.4f}), "
          f"first 20 steps {diff[:20].max():.4f}; of the {k}-step mean curves {smooth.max():.4f} "
          f"(tolerance {NUMERICS_TOLERANCE})", flush=True)
    return {"steps": steps, "variant": variant, "max_abs_smoothed_loss_diff": round(float(smooth.max()), 5),
            "max_abs_loss_diff_first_20": round(float(diff[:20].max()), 5),
            "max_abs_loss_diff": round(float(diff.max()), 5), "calibration_smoothed_diff": round(calib, 5),
            "within_tolerance": bool(smooth.max() <= max(NUMERICS_TOLERANCE, 2 * calib)),
            "mean_abs_loss_diff": round(float(diff.mean()), 5), "tolerance": NUMERICS_TOLERANCE,
            "first_loss": [round(float(a[0]), 4), round(float(b[0]), 4)],
            "last_loss": [round(float(a[-1]), 4), round(float(b[-1]), 4)],
            "losses_trainer": [round(float(v), 4) for v in a], "losses_ours": [round(float(v), 4) for v in b]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="qwen2.5-0.5B,llama3.2-1B")
    ap.add_argument("--variants", default="doc,causal",
                    help="comma-separated; each is parts joined by '_': " + "; ".join(
                        f"{k}: {v}" for k, v in VARIANT_PARTS.items()))
    ap.add_argument("--no-trainer", action="store_true", help="skip the Trainer baseline (profiling runs)")
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--numerics-steps", type=int, default=200)
    ap.add_argument("--numerics-variant", default="doc",
                    help="the cell variant whose numerics are compared with the Trainer's (a doc variant)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    for v in args.variants.split(",") + [args.numerics_variant]:  # a misspelt variant fails now
        try:
            variant_options(v)
        except ValueError as e:
            ap.error(str(e))
    if not torch.cuda.is_available():
        print(json.dumps({"bench": "gpu_throughput", "skipped": "no CUDA GPU on this machine"}))
        return
    device = torch.cuda.get_device_name()
    print(f"device: {device}, torch {torch.__version__}, peak {peak_flops() / 1e12:.0f} TFLOP/s bf16", flush=True)
    result = {"bench": "gpu_throughput", "device": device, "torch": torch.__version__, "shapes": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in [s for s in args.shapes.split(",") if s]:
            result["shapes"].append(throughput(name, args.micro_batch, args.context, args.warmup, args.steps,
                                               args.variants.split(","), tmp, not args.no_trainer))
            if args.out:  # after every shape: a run cut short by a time limit keeps what it measured
                Path(args.out).write_text(json.dumps(result, indent=1))
        if args.numerics_steps:
            result["numerics"] = numerics(args.numerics_steps, 512, 8, tmp, args.numerics_variant)
    summary = {"bench": "gpu_throughput", "device": device}
    for row in result["shapes"]:
        best = max((k for k in row if k.startswith("ours_")), key=lambda k: row[k]["tokens_per_second"])
        tgt = TARGETS.get(row["shape"], {})
        summary[row["shape"]] = {"tokens_per_second": row[best]["tokens_per_second"], "variant": best,
                                 "hf_trainer_tokens_per_second": row["hf_trainer"]["tokens_per_second"],
                                 "ratio": row[best]["ratio"], "target_ratio": tgt.get("ratio"),
                                 "mfu": row[best]["mfu"], "target_mfu": tgt.get("mfu"),
                                 "peak_memory_gib": row[best]["peak_memory_gib"],
                                 "hf_peak_memory_gib": row["hf_trainer"]["peak_memory_gib"]}
    if "numerics" in result:
        n = result["numerics"]
        summary["numerics"] = {k: n[k] for k in ("steps", "variant", "max_abs_smoothed_loss_diff", "max_abs_loss_diff_first_20",
                                                 "max_abs_loss_diff", "mean_abs_loss_diff", "tolerance",
                                                 "calibration_smoothed_diff", "within_tolerance")}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
