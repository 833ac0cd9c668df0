"""One cell: train an interleaved (or textless, or text) LM to its token budget, evaluate, write the run
directory, mirror to MLflow.

Readable top to bottom: set-up, resume, the loop, the end. The budget counts label tokens and is hit
exactly (the last step masks what lies beyond it). SIGUSR2 / SIGTERM set a flag; the loop checkpoints
at the next step boundary and returns "INTERRUPTED" so a dispatcher can requeue the cell; the next
start resumes from the newest checkpoint with model, optimiser, schedule, RNG and data position.
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from transformers.utils.logging import disable_progress_bar

from common.locks import current_job_id
from common.rundir import Lease, LeaseBusy, RunDir, branch_ready

from . import checkpoint, sharding
from . import tracking
from .data import prepare
from .lm_step import LossModel, compile_blocks, standard_forward
from .fmt import duration, short_count
from .evaluate import pair_accuracy, read_pairs, val_loss
from .model import build_model
from .preflight import check_cell
from .schedule import lr_at, step_geometry, warmup_steps_of
from .spec import RunSpec
from .vocab import build_vocab

INTERRUPTED = "INTERRUPTED"
SEGMENT = "SEGMENT"      # a WSD trunk reached the step it was asked to stop at (a branch point)
WAITING = "WAITING"      # a WSD branch whose trunk has not reached its branch point yet


class _StopFlag:
    """Set by SIGUSR2 / SIGTERM; read at step boundaries."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> "_StopFlag":
        for sig in (signal.SIGUSR2, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._set)
            except ValueError:  # not the main thread (e.g. an in-process debug executor)
                pass
        return self

    def _set(self, signum, frame) -> None:
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class _StopAgreement:
    """With several ranks, a signal may reach only some of them (or reach them at different steps): at
    every step boundary the ranks agree, over a gloo group (no GPU sync), on the largest signal seen."""

    def __init__(self, world: int) -> None:
        self.group = None
        if world > 1:
            import torch.distributed as dist   # only with several ranks

            self.group = dist.new_group(backend="gloo")

    def __call__(self, signum: Optional[int]) -> int:
        if self.group is None:
            return signum or 0
        import torch.distributed as dist   # only with several ranks

        flag = torch.tensor([signum or 0], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return int(flag.item())


def _mirror(spec: RunSpec, run_dir: Path, log: Callable[[str], None]):
    if not spec.tracking.get("enabled", True):
        return None

    uri = spec.tracking.get("uri") or tracking.default_uri(run_dir.parent)
    spec_json = spec.to_json()
    tags = {**tracking.spec_tags(spec_json), "tokens_budget": str(spec.tokens),
            "job_id": current_job_id()}
    mirror = tracking.Mirror(run_dir, uri, spec.tracking.get("experiment") or spec.study, spec.key, tags,
                             spec_json, experiment_description=f"slm-scaling study {spec.study}")
    if not mirror.start():
        log(f"{spec.key}: MLflow at {mirror.safe_uri} unreachable; the run dir keeps everything "
            "(`launch.py sync` mirrors it later)")
    return mirror


def _precision(spec: RunSpec, cuda: bool) -> str:
    if spec.training.precision == "auto":
        return "bf16" if cuda else "no"
    if spec.training.precision == "bf16":
        return "bf16"
    return "no"


def _auto(value, cuda: bool) -> bool:
    return cuda if value == "auto" else bool(value)


PRECISION_NAME = {"no": "fp32"}  # accelerate calls full precision "no"; result.json says fp32


def train_cell(run_dir: Path, log: Callable[[str], None] = print, stop_signals: Optional[dict] = None,
               job_id: Optional[str] = None, until_step: Optional[int] = None) -> str:
    """Train the cell in `run_dir` (which holds spec.json) to its budget; returns DONE or INTERRUPTED
    (WAITING: a WSD branch whose trunk has not reached its branch point; SEGMENT: a WSD trunk stopped at
    `until_step`, one of its branch points, as its segment job asked).

    Rank 0 takes the run dir's lease before anything is written and holds it to the end; when another
    live process holds it, every rank raises LeaseBusy and nothing is touched. `stop_signals`, when
    given, receives {"signal": signum} of the signal that interrupted the run; `job_id` (the scheduler's)
    is recorded in state.json and the lease."""
    from accelerate import Accelerator   # heavy: imported when a cell trains, not when the module is read

    rd = RunDir(run_dir)
    spec = RunSpec.load(rd.path / "spec.json")
    disable_progress_bar()  # a cell logs lines, not transformers' tqdm bars ("Writing model shards")
    cuda = torch.cuda.is_available()
    acc = Accelerator(mixed_precision=_precision(spec, cuda), cpu=not cuda)
    agree = _StopAgreement(acc.num_processes)
    lease, busy = None, None
    if acc.is_main_process:
        try:
            lease = rd.lease(job_id=job_id or current_job_id())
        except LeaseBusy as e:
            busy = e
    if agree(1 if busy else None):   # every rank learns that rank 0 was refused
        raise busy or LeaseBusy(rd.path, {})
    try:
        return _train_leased(spec, rd, lease, acc, agree, log, stop_signals, job_id, until_step)
    finally:
        if lease is not None:
            lease.release()


def trunk_dir(spec: RunSpec, rd: RunDir) -> Optional[RunDir]:
    """A WSD branch's trunk run dir (beside it in the study dir); None for any other run."""
    if spec.role != "cell" or not spec.trunk:
        return None
    return RunDir(rd.path.parent / spec.trunk["key"])


def _branch_waiting(spec: RunSpec, rd: RunDir) -> Optional[str]:
    """Why a WSD branch cannot start yet (no checkpoint of its own and none at its trunk's branch point)."""
    trunk = trunk_dir(spec, rd)
    if trunk is None:
        return None
    step = int(spec.trunk["step"])
    if branch_ready(rd.path, trunk.key, step):
        return None
    t = trunk.state() if trunk.exists() else {}
    return (f"waiting on trunk {trunk.key} ({t.get('state', 'not created')}) to reach step {step}"
            + (f": {t['error']}" if t.get("state") == "FAILED" and t.get("error") else ""))


def _train_leased(spec: RunSpec, rd: RunDir, lease: Optional[Lease], acc, agree, log, stop_signals,
                  job_id: Optional[str], until_step: Optional[int] = None) -> str:
    main = acc.is_main_process
    say = log if main else (lambda *_: None)
    if main:
        prev = rd.state()
        if prev.get("state") == "DONE":
            say(f"{spec.key}: already DONE")
            return "DONE"
        rd.update("RUNNING", attempts=prev.get("attempts", 0) + 1, interrupted=False, cancelled=False)
        rd.add_job(job_id or current_job_id())
    mirror = None
    try:
        check_cell(spec)  # a missing or malformed input: the cell FAILS with one line before any data is read
        waiting = _branch_waiting(spec, rd)
        if waiting is not None:   # the same answer on every rank: the files are shared
            say(f"{spec.key}: {waiting}")
            if main:
                rd.update("PENDING", waiting=waiting)
            return WAITING
        mirror = _mirror(spec, rd.path, say) if main else None
        status = _train(spec, rd, lease, acc, agree, say, mirror, stop_signals if stop_signals is not None else {},
                        until_step)
    except BaseException as e:
        if main:
            failed = not isinstance(e, KeyboardInterrupt)
            failures = rd.state().get("failures", 0) + (1 if failed else 0)
            rd.update("FAILED" if failed else "PENDING", failures=failures,
                      error=f"{type(e).__name__}: {e}".splitlines()[0][:500])
            if failed:
                lease.write_error(traceback.format_exc())
            if mirror is not None:
                mirror.finish("FAILED" if failed else "KILLED", None)
        raise
    if main and mirror is not None:
        mirror.finish("FINISHED" if status == "DONE" else "KILLED", rd.result() if status == "DONE" else None)
    return status


def _as_branch_line(line: dict, branch_step: int, lr_lambda, lr: float) -> Optional[dict]:
    """A trunk's metrics line as the single WSD run to the branch's budget logs it (None: it logs none):
    the same up to the branch step (a trunk logs on the cadence only), with the LR by the branch's
    schedule (at the branch step the single run's LR has begun to decay)."""
    s = line.get("step", 0)
    if s > branch_step:
        return None
    return {**line, "lr": lr * lr_lambda(s)} if "lr" in line else line


def _to_device(array: np.ndarray, device) -> torch.Tensor:
    t = torch.from_numpy(array)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def loss_model(lm, eos_id: int, tr, device, compile_mode: str | None = None) -> LossModel:
    """The causal LM set up for training as `tr` asks: checkpointed activations, compiled blocks, fused
    head + loss, and (on CUDA by default) attention inside each packed document. `compile_mode` is
    torch.compile's mode for the blocks (the GPU benchmark tries max-autotune)."""
    cuda = device.type == "cuda"
    if tr.gradient_checkpointing:
        enable = getattr(lm, "activation_checkpointing_enable", None)   # transformers >= 5.2x
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    compiled, doc_mask = _auto(tr.compile, cuda), _auto(tr.doc_mask, cuda)
    if compiled:
        compile_blocks(lm, mode=compile_mode)
    return LossModel(lm, eos_id, doc_mask=doc_mask, flex=cuda, compiled_loss=compiled)


def make_optimizer(params, tr) -> torch.optim.Optimizer:
    # fused: one kernel per step, on CPU as on GPU (torch >= 2.4)
    return torch.optim.AdamW(params, lr=tr.lr, betas=(tr.adam_beta1, tr.adam_beta2), eps=tr.adam_eps,
                             weight_decay=tr.weight_decay, fused=True)


def optimizer_step(acc, model, opt, sched, micro: list, step_labels: int, grad_clip: float) -> torch.Tensor:
    """One optimiser step over the micro-batches `[(x, y), ...]` (numpy, this rank's share); returns the
    summed loss on the device (no sync). The gradient is d(sum of CE) / step_labels: every label of the
    global step weighs the same, however the micro-batches and ranks split them.

    DDP reduces gradients once, after the last micro-batch; a sharded model reduce-scatters after each
    (holding unsharded gradients across micro-batches would cost the memory sharding saves)."""
    world, device = acc.num_processes, acc.device
    sharded = sharding.is_sharded(model)
    loss_sum = torch.zeros((), device=device)
    for m, (x, y) in enumerate(micro):
        x_t, y_t = _to_device(x, device), _to_device(y, device)
        sync = nullcontext() if sharded or m == len(micro) - 1 else acc.no_sync(model)
        with sync, acc.autocast():
            ce = model(x_t, y_t)
            acc.backward(ce * world / step_labels)  # x world undoes the gradient mean over ranks
        loss_sum += ce.detach()
    if grad_clip > 0:
        if sharded:  # DTensor gradients: the norm is reduced over the shards
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        else:
            acc.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return loss_sum


def _train(spec: RunSpec, rd: RunDir, lease: Optional[Lease], acc, agree, say, mirror, stopped: dict,
           until_step: Optional[int] = None) -> str:
    run_dir = rd.path
    tr, ev = spec.training, spec.eval
    T, mb, world = tr.context, tr.micro_batch, acc.num_processes
    device = acc.device
    torch.manual_seed(tr.seed)

    # --- set-up: vocabulary, data, model, optimiser, step geometry
    vocab = build_vocab(spec.setup, spec.vocab_rows, spec.data.units, spec.tokenizer)
    cache = Path(spec.data.cache_dir) if spec.data.cache_dir else run_dir.parent / "cache"
    data = prepare(vocab, spec.data, T, tr.seed, ev.val_tokens, cache)
    lm = build_model(spec)
    core = loss_model(lm, vocab.eos_id, tr, device)   # the LossModel, whatever wraps it
    compiled, doc_mask, fused_head = core.compiled_loss, core.doc_mask, core.fused_head
    sharded = sharding.wanted(spec, device)
    # the global batch is exact whatever the world size; padding rows (no labels) change no gradient
    seqs_per_step, rows, accum = step_geometry(tr.batch_tokens, T, mb, world)
    step_tokens = seqs_per_step * T
    total_steps = math.ceil(spec.tokens / step_tokens)
    warm = warmup_steps_of(tr, total_steps, step_tokens)
    # a WSD trunk trains at the constant LR (after warmup) up to its last branch step, keeping a checkpoint
    # at each; a branch resumes from its step's checkpoint and decays by its own schedule
    is_trunk = spec.role == "trunk"
    branch_steps = set(spec.trunk["steps"]) if is_trunk else set()
    stop_at = min(until_step, total_steps) if is_trunk and until_step else total_steps
    kind = "constant" if is_trunk else tr.schedule

    def lr_lambda(s: int) -> float:
        return lr_at(s, total_steps, warm, tr.lr, tr.min_lr, kind, tr.decay_fraction, tr.decay_shape) / tr.lr

    if sharded:
        sharding.shard(core, bf16=acc.mixed_precision == "bf16", cpu_offload=tr.cpu_offload)
    raw_opt = make_optimizer(core.parameters(), tr)   # checkpoints read and write this one
    sched = torch.optim.lr_scheduler.LambdaLR(raw_opt, lr_lambda)
    model, opt = (core, raw_opt) if sharded else acc.prepare(core, raw_opt)
    padding_rows = accum * rows * world - seqs_per_step
    ckpt_every = tr.checkpoint_every_tokens or max(spec.tokens // 10, step_tokens)
    ckpt_every_steps = max(1, ckpt_every // step_tokens)
    fpt = spec.flops / spec.tokens
    p = spec.params
    say(f"{spec.key}: {spec.setup} {spec.family}/{spec.member} init={spec.init} | params {p.total:,} "
        f"(embedding {p.embedding:,}, head {p.output_head:,}, non-embedding {p.nonembedding:,}, new rows "
        f"{p.new_rows}) | budget {spec.tokens:,} tokens ({spec.tokens_per_param:.3g}/param, "
        f"{spec.flops:.3g} FLOPs {spec.flops_convention}) | {total_steps} steps x {step_tokens:,} tokens "
        f"(micro-batch {rows} x {T} x accum {accum} x {world} proc"
        f"{f', {padding_rows} padding rows' if padding_rows else ''}) | {device} {acc.mixed_precision}"
        f"{' fsdp' if sharded else ''}{' cpu-offload' if sharded and tr.cpu_offload else ''}"
        f"{' compiled' if compiled else ''}{' doc-mask' if doc_mask else ''}"
        f"{' fused-head' if fused_head else ''}")

    # --- resume
    step, tokens_done, seq_index, wall_before = 0, 0, 0, 0.0
    pos = dict.fromkeys(data.shares, 0)
    by_modality = {"text": 0, "speech": 0, "special": 0}
    last_loss = math.nan
    ck = checkpoint.latest(run_dir, also=rd.branch_points if is_trunk else None)
    trunk = trunk_dir(spec, rd)
    branched = ck is None and trunk is not None
    if branched:   # a WSD branch's first start: the trunk's state at the branch step
        ck = trunk.branch_point(int(spec.trunk["step"]))
    if ck is not None:
        state = checkpoint.load(ck, core, raw_opt)
        sched.load_state_dict(state["scheduler"])
        for group, base in zip(raw_opt.param_groups, sched.base_lrs):   # the next step's LR by this run's
            group["lr"] = base * lr_lambda(sched.last_epoch)            # schedule (a branch: its decay)
        step, tokens_done, seq_index = state["step"], state["tokens"], state["seq_index"]
        pos = dict(state["pos"])
        by_modality = dict(state["by_modality"])
        wall_before, last_loss = state["wall"], state["last_loss"]
        if acc.is_main_process:
            lease.trim_metrics(0 if branched else step)
            if branched:   # the trunk's curve up to the branch step is this run's own (LR as it runs it)
                for line in trunk.metrics():
                    line = _as_branch_line(line, step, lr_lambda, tr.lr)
                    if line is not None:
                        lease.append_metrics(line)
                        if mirror is not None:
                            mirror.log_record(line)
        say(f"{spec.key}: {'branched off ' + trunk.key + ' at' if branched else 'resumed from'} {ck.name} at "
            f"{tokens_done:,} tokens (written by {state.get('world_size', 1)} proc, now {world})")

    def save_checkpoint(root: Optional[Path] = None) -> None:  # every rank: model and optimizer shards, RNG
        checkpoint.save(run_dir, step, core, raw_opt, {            # rank 0 the rest; root: a branch point
            "scheduler": sched.state_dict(), "step": step, "tokens": tokens_done, "seq_index": seq_index,
            "pos": pos, "by_modality": by_modality, "wall": wall_before + (time.time() - t_start),
            "last_loss": float(last_loss), "world_size": world},
            tr.keep_checkpoints if root is None else None, root=root)

    def evaluate_streams() -> dict[str, float]:  # every rank its share, through the training forward
        model.eval()
        with acc.autocast():
            out = {f"val_loss/{s}": val_loss(core, data.val_windows(s, ev.val_tokens), device, mb, vocab.eos_id,
                                             acc.process_index, world) for s in data.shares}
        model.train()
        return out

    # --- the loop
    model.train()
    t_start = time.time()
    t_window, tokens_window = time.time(), 0
    next_eval = ((tokens_done // ev.every_tokens) + 1) * ev.every_tokens if ev.every_tokens else None
    rank = acc.process_index
    with _StopFlag() as stop:
        while step < stop_at:
            step_labels = min(step_tokens, spec.tokens - tokens_done)
            xs, ys = [], []
            for order in range(seqs_per_step):  # this sequence's place in the step
                _, window = data.sequence(seq_index, pos)
                seq_index += 1
                if order % world != rank:
                    continue
                y = window[1:].copy()
                allowed = step_labels - order * T      # labels left for this sequence
                if allowed < T:
                    y[max(allowed, 0):] = -100
                xs.append(window[:-1])
                ys.append(y)
            while len(xs) < accum * rows:             # padding rows: no labels
                xs.append(np.full(T, vocab.eos_id, dtype=xs[0].dtype if xs else np.int64))
                ys.append(np.full(T, -100, dtype=ys[0].dtype if ys else np.int64))
            micro = [(np.stack(xs[m * rows:(m + 1) * rows]), np.stack(ys[m * rows:(m + 1) * rows]))
                     for m in range(accum)]
            loss_sum = optimizer_step(acc, model, opt, sched, micro, step_labels, tr.grad_clip)
            for x, y in micro:
                labels = y[y != -100]
                mods = vocab.modality_of(labels)
                by_modality["text"] += int((mods == 0).sum())
                by_modality["speech"] += int((mods == 1).sum())
                by_modality["special"] += int((mods == 2).sum())
            step += 1
            tokens_done += step_labels
            tokens_window += step_labels
            last_loss = acc.reduce(loss_sum, reduction="sum") / step_labels  # a device tensor: no GPU sync per step

            line = None
            if step % tr.log_every == 0 or (step == total_steps and not is_trunk):   # a trunk: on cadence only
                now = time.time()
                tps = tokens_window / max(now - t_window, 1e-9)
                t_window, tokens_window = now, 0
                last_loss = float(last_loss)
                line = {"step": step, "tokens": tokens_done, "flops": tokens_done * fpt, "loss": last_loss,
                        "lr": sched.get_last_lr()[0], "tokens_per_second": tps,
                        "tokens_text": by_modality["text"], "tokens_speech": by_modality["speech"], "time": now}
                eta = (spec.tokens - tokens_done) / max(tps, 1e-9)
                say(f"step {step}/{total_steps} | tokens {short_count(tokens_done)}/{short_count(spec.tokens)} | "
                    f"loss {last_loss:.4f} | lr {line['lr']:.2e} | {short_count(tps)} tok/s | ETA {duration(eta)}")
            if next_eval is not None and tokens_done >= next_eval and (step < total_steps or is_trunk):
                line = line or {"step": step, "tokens": tokens_done, "flops": tokens_done * fpt, "time": time.time()}
                line.update(evaluate_streams())
                next_eval += ev.every_tokens
            if line is not None and acc.is_main_process:
                lease.append_metrics(line)
                if mirror is not None:
                    mirror.log_record(line)
            if step in branch_steps:   # a trunk: the state its branch of this step starts from
                save_checkpoint(rd.branch_points)
                say(f"{spec.key}: branch point at step {step} ({short_count(tokens_done)} tokens)")
            signum = agree(stop.signal)  # any rank's signal stops every rank at this same step
            if signum and step < stop_at:
                stopped["signal"] = signum
                save_checkpoint()
                say(f"{spec.key}: signal {signum} at step {step}: checkpointed, exiting for requeue")
                if acc.is_main_process:
                    rd.update("PENDING", interrupted=True)
                return INTERRUPTED
            if step % ckpt_every_steps == 0 and step < stop_at and step not in branch_steps:
                save_checkpoint()

    if is_trunk:   # no evaluation and no weights of its own: its branches are the cells
        if step < total_steps and step not in branch_steps:   # stopped off a branch point: resume here
            save_checkpoint()
        if acc.is_main_process:
            if step < total_steps:
                rd.update("PENDING", interrupted=False)
            else:
                rd.update("DONE", interrupted=False)
                shutil.rmtree(rd.checkpoints, ignore_errors=True)   # branch_points/ stay for the branches
            say(f"{spec.key}: trunk at step {step}/{total_steps} | {tokens_done:,} tokens | "
                f"branch points {sorted(s for s in branch_steps if s <= step)}")
        acc.wait_for_everyone()
        return "DONE" if step >= total_steps else SEGMENT

    # --- the end: held-out loss per stream, benchmarks, result.json
    last_loss = float(last_loss)
    wall = wall_before + (time.time() - t_start)
    final = evaluate_streams()
    scores, n_pairs = {}, {}
    model.eval()
    with sharding.gathered(core), standard_forward(lm):
        for b in ev.benchmarks:
            pairs = read_pairs(b.manifest, spec.data.units)
            scores[b.name] = pair_accuracy(lm, vocab, pairs, b.prompt_marker, device)
            n_pairs[b.name] = len(pairs)   # the accuracy's sample size: its interval needs it
    full = sharding.full_state_dict(core) if sharded else None  # collective: before rank 0 writes
    if acc.is_main_process:
        end_line = {"step": step, "tokens": tokens_done, "flops": tokens_done * fpt, "time": time.time(), **final,
                    **{f"eval/{k}": v for k, v in scores.items()}}
        lease.append_metrics(end_line)
        if mirror is not None:
            mirror.log_record(end_line)
        with standard_forward(lm):
            lm.save_pretrained(run_dir / "model", state_dict=full)
        vocab.save(run_dir / "model")
        result = {
            "key": spec.key, "study": spec.study, "family": spec.family, "member": spec.member,
            "init": spec.init, "setup": spec.setup, "variant": spec.variant,
            "params": {"total": spec.params.total, "embedding": spec.params.embedding,
                       "nonembedding": spec.params.nonembedding, "output_head": spec.params.output_head,
                       "new_rows": spec.params.new_rows, "new_row_params": spec.params.new_row_params,
                       "vocab_rows": spec.params.vocab_rows},
            "tokens": tokens_done, "tokens_budget": spec.tokens, "tokens_by_modality": by_modality,
            "flops": tokens_done * fpt, "flops_convention": spec.flops_convention,
            "cost_flops": spec.cost_flops, "steps": step, "loss": last_loss,
            "val_loss": {k.split("/", 1)[1]: v for k, v in final.items()},
            "eval": scores, "eval_n": n_pairs, "wall_seconds": wall, "tokens_per_second": tokens_done / max(wall, 1e-9),
            "device": str(device), "precision": PRECISION_NAME.get(acc.mixed_precision, acc.mixed_precision), "world_size": world, "sharded": sharded,
            "compiled": compiled, "doc_mask": doc_mask, "fused_head": fused_head,
            "mlflow_run_id": mirror.run_id if mirror is not None else None,
        }
        result.update(data.epochs_seen(pos))  # issue 22: epochs and unique tokens of each stream
        if trunk is not None:   # a WSD branch: what it shares with its trunk (its own tokens are the rest)
            b = int(spec.trunk["step"])
            point = trunk.branch_point(b) / checkpoint.META   # the trunk's wall time up to the branch
            trunk_wall = torch.load(point, map_location="cpu", weights_only=True)["wall"] if point.is_file() else None
            result["branched_from"] = {"trunk": trunk.key, "step": b, "tokens": b * step_tokens,
                                       "wall_seconds": trunk_wall}
        lease.write_result(result)
        rd.update("DONE", interrupted=False)
        shutil.rmtree(rd.checkpoints, ignore_errors=True)  # model/ holds the final weights
        say(f"{spec.key}: DONE | {tokens_done:,} tokens | loss {last_loss:.4f} | "
            + " ".join(f"{k} {v:.4f}" for k, v in final.items()) + f" | {duration(wall)}")
    acc.wait_for_everyone()
    return "DONE"
