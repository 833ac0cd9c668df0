"""GPU memory of one training cell, per GPU, from its shape and training settings (no torch).

What is counted follows what `scaling.train` does on a CUDA GPU: fp32 master parameters, bf16
autocast (precision auto/bf16), fused AdamW (two fp32 states per parameter and a step counter per
parameter tensor), fp32 gradients, the fused and chunked output head + cross-entropy
(`scaling.linear_ce`), compiled decoder blocks with flash/flex attention (no T x T matrix kept),
optional per-block activation checkpointing, DDP or FSDP2 over the cell's GPUs.

Per GPU, with P parameters, n GPUs and N = rows x context tokens per micro-batch (rows: the
micro-batch `scaling.train` actually runs, `micro_batch` or less when the global batch split over n
ranks is smaller; accum: micro-batches per optimiser step):

  weights    4P                 (FSDP: 4P/n; cpu_offload: on the host, 0)
  gradients  4P                 (FSDP: 4P/n; cpu_offload: 0)
  optimizer  8P + 4 x tensors   (FSDP: 8P/n + 4 x tensors; cpu_offload: 0)
  activations  N x (layers x A + A_other)
  copies     unsharded bf16: the bf16 weight copies autocast makes of every linear layer of the
             blocks (2 bytes each; saved for backward); FSDP: the all-gathered root unit
             (embeddings, final norm, head) and two blocks, in the parameter dtype
  head       fused head + loss transients: the gradient w.r.t. the head weight (fp32, rows padded to
             128), a bf16 copy of the head, one chunk of bf16 logits (chunk tokens as
             `linear_ce.chunk_tokens`), the chunk's weight-gradient product (bf16 + its fp32 cast),
             a bf16 copy of the hidden states and the per-chunk hidden-state gradients
  buffers    DDP (unsharded, n > 1): gradient buckets, 4P; FSDP in backward: one block's unsharded
             fp32 gradients and its reduce-scatter buffer, and the root unit's unsharded gradients

  total (the peak) = weights + optimizer + DDP buckets + max(forward end, backward)
      forward end = activations + copies + head (+ gradients when accum > 1: they are held
                    across micro-batches)
      backward    = gradients + FSDP buffers + gathered units (+ with checkpointing: one
                    block's activations recomputed)
  (the step's gradients are allocated during backward while the activations are freed, so at the
  usual peak, the end of the forward pass, only earlier micro-batches' gradients are resident.)

A, the bytes saved for backward per token by one Llama/Qwen2 decoder block (d hidden, q = heads x
head_dim, kv = kv_heads x head_dim, H heads, I intermediate; a = 2 bytes under bf16 autocast, 4 in
fp32; r = bytes of the residual stream: 4 with fp32 parameters, 2 under FSDP's bf16 parameters):

  compiled (AOT autograd's min-cut partition; counted with saved-tensor hooks on a compiled block):
    A = r d                 block input (RMSNorm 1 backward; the mid residual is recomputed)
      + 3 a d               normed inputs of q/k/v and of gate/up, attention output projection
      + 2 a q + 2 a kv      q, k (after RoPE), v, attention output
      + 4 H                 attention logsumexp (fp32)
      + 3 a I               gate, up, silu(gate) x up
      + 8                   two RMSNorm reciprocal RMS (fp32)
  eager (torch ops as transformers runs them):
    A = 4 r d               both RMSNorms' inputs and fp32 outputs
      + 5 a d               autocast's bf16 copies of the q, k, v, gate and up inputs (one per linear)
      + 2 a q + 2 a kv + 4 H + 4 a I + 8     (the MLP keeps gate, silu(gate), up and their product)
  activation checkpointing: r d per block (its input) in forward, plus one block's A while it is
  recomputed in backward.
  A_other = 8 (token ids) + 2 r d + 4 (final norm) + 8 head_dim (RoPE cos/sin, at most; none under
  checkpointing) + a d (the head's saved hidden-state gradient).

Bf16 copies of the block weights (autocast's cast cache) are saved in both modes. GPT-NeoX and OPT
blocks follow the same list with a two-matrix MLP (2 a I). Checked against saved-tensor hooks on
transformers models (tests/test_memory.py) and against measured H100 peaks (bench/results).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from .head_chunks import ROW_ALIGN, chunk_tokens
from .params import count, head_dim, llama_block, row_width
from .schedule import step_geometry

GIB = 1 << 30
USABLE = 0.9           # share of a GPU's memory a cell may plan to use (CUDA context, NCCL, fragmentation)
LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3")
MAX_GPUS = 1 << 16     # search bound for gpus_needed


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on in a causal LM's architecture (after the vocabulary change)."""
    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab_rows: int
    row_width: int             # embedding / head width (OPT may project)
    params: int                # total trainable parameters (a tied head counted once)
    embedding: int             # input embedding parameters (rows x width, + learned positions)
    output_head: int           # untied head parameters (0 when tied)
    block_params: int          # one decoder block
    block_linear_params: int   # of which in linear layers (weights and biases): autocast casts these
    param_tensors: int         # parameter tensors (AdamW keeps a step counter per tensor)
    gated_mlp: bool = True     # SwiGLU (three matrices) or a two-matrix MLP
    rope: bool = True

    @property
    def root_params(self) -> int:
        """Parameters outside the decoder blocks: embeddings, final norm, head (FSDP's root unit)."""
        return self.params - self.layers * self.block_params

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def padded_rows(self) -> int:
        return -(-self.vocab_rows // ROW_ALIGN) * ROW_ALIGN

    @classmethod
    def from_arch(cls, arch: dict[str, Any], vocab_rows: int, counts: Any = None) -> "ModelShape":
        """From an HF config dict (as in RunSpec.arch) with `vocab_rows` rows; `counts` (ParamCounts)
        defaults to scaling.params.count."""

        if counts is None:
            counts = count(arch, vocab_rows)
        mtype = arch.get("model_type", "llama")
        d, layers = int(arch["hidden_size"]), int(arch["num_hidden_layers"])
        heads = int(arch["num_attention_heads"])
        kv = int(arch.get("num_key_value_heads") or heads)
        hd = head_dim(arch)
        inter = int(arch.get("intermediate_size") or arch.get("ffn_dim") or 4 * d)
        width = int(row_width({"model_type": mtype, **arch}))
        tied = counts.output_head == 0
        if mtype in LLAMA_LIKE:
            block, linear = llama_block({"model_type": mtype, **arch})
            bias_t = 3 if mtype == "qwen2" else (4 if arch.get("attention_bias", False) else 0)
            mlp_bias = arch.get("mlp_bias", False)
            per_block_t = 7 + 2 + bias_t + (3 if mlp_bias else 0) + (2 if mtype == "qwen3" else 0)
            tensors = 1 + layers * per_block_t + 1 + (0 if tied else 1)
            return cls(mtype, d, layers, heads, kv, hd, inter, vocab_rows, width, counts.total, counts.embedding,
                       counts.output_head, block, linear, tensors, gated_mlp=True, rope=True)
        # GPT-NeoX, OPT and others: blocks share the non-embedding parameters; norms are LayerNorms
        block = counts.nonembedding // max(layers, 1)
        linear = max(block - 4 * d, 0)
        tensors = 2 + layers * 16 + (0 if tied else 1)
        return cls(mtype, d, layers, heads, kv, hd, inter, vocab_rows, width, counts.total, counts.embedding,
                   counts.output_head, block, linear, tensors, gated_mlp=False, rope=mtype == "gpt_neox")


@dataclass(frozen=True)
class Workload:
    """The training settings memory depends on."""
    micro_batch: int = 8
    context: int = 2048
    bf16: bool = True               # autocast over fp32 parameters (precision auto on a GPU, or bf16)
    compiled: bool = True           # compiled decoder blocks (compile auto on a GPU)
    checkpointing: bool = False     # activation checkpointing per decoder block
    batch_tokens: Optional[int] = None   # global batch; None: one micro-batch per GPU per step

    @classmethod
    def of(cls, training: Any) -> "Workload":
        """From a TrainingConfig, as the cell runs on a CUDA GPU (auto settings resolved for CUDA)."""
        bt = training.batch_tokens if isinstance(training.batch_tokens, int) else None
        compiled = training.compile if isinstance(training.compile, bool) else True
        return cls(training.micro_batch, training.context, training.precision != "fp32", compiled,
                   bool(training.gradient_checkpointing), bt)

    def geometry(self, gpus: int) -> tuple[int, int]:
        """(rows, accum): sequences per micro-batch on each rank and micro-batches per step, exactly as
        `scaling.train` deals the global batch to `gpus` ranks."""
        if self.batch_tokens is None:
            return self.micro_batch, 1

        _, rows, accum = step_geometry(self.batch_tokens, self.context, self.micro_batch, gpus)
        return rows, accum


@dataclass(frozen=True)
class Memory:
    """Per-GPU training memory in bytes (see the module docstring for each term)."""
    weights: int
    gradients: int
    optimizer: int
    activations: int
    copies: int          # autocast's bf16 weight copies, or FSDP's gathered units
    head: int            # fused head + loss transients
    buffers: int         # DDP gradient buckets, FSDP unsharded gradient / reduce-scatter buffers
    total: int           # the peak
    gpus: int = 1
    sharded: bool = False
    cpu_offload: bool = False
    rows: int = 1        # micro-batch rows per rank
    accum: int = 1       # micro-batches per optimiser step
    phase: str = "forward"   # where the peak is: forward (end of forward) or backward

    @property
    def transient(self) -> int:
        return self.copies + self.head + self.buffers

    def gib(self, name: str = "total") -> float:
        return getattr(self, name) / GIB

    def fits(self, gpu_bytes: float, usable: float = USABLE) -> bool:
        return self.total <= usable * gpu_bytes

    def describe(self) -> str:
        parts = [f"{n} {getattr(self, n) / GIB:.2f}" for n in
                 ("weights", "gradients", "optimizer", "activations", "copies", "head", "buffers")]
        how = f"{self.gpus} GPU{'s' if self.gpus > 1 else ''}{' fsdp' if self.sharded else ''}" \
              f"{' cpu-offload' if self.cpu_offload else ''}"
        return f"{self.total / GIB:.2f} GiB per GPU ({how}; {', '.join(parts)} GiB; peak at {self.phase})"


def layer_bytes(shape: ModelShape, compiled: bool, act: int = 2, resid: int = 4, casts: bool = True) -> int:
    """Bytes one decoder block saves for backward per token (module docstring)."""
    d, q, kv, H, inter = shape.hidden, shape.q_dim, shape.kv_dim, shape.heads, shape.intermediate
    attn = 2 * act * q + 2 * act * kv + 4 * H
    if compiled:
        mlp = (3 if shape.gated_mlp else 2) * act * inter
        return resid * d + 3 * act * d + attn + mlp + 8
    mlp = (4 if shape.gated_mlp else 2) * act * inter
    cast_copies = (5 if shape.gated_mlp else 4) * act * d if casts else 0
    return 4 * resid * d + cast_copies + attn + mlp + 8


def other_bytes(shape: ModelShape, act: int = 2, resid: int = 4, checkpointing: bool = False) -> int:
    """Bytes saved per token outside the blocks: token ids, final norm, RoPE tables (saved by the
    blocks' rotary products, so not under checkpointing), the head's saved hidden-state gradient."""
    rope = 8 * shape.head_dim if shape.rope and not checkpointing else 0
    return 8 + 2 * resid * shape.hidden + 4 + rope + act * shape.row_width


def _shape_and_workload(cell: Any, workload: Optional[Workload]) -> tuple[ModelShape, Workload]:
    if isinstance(cell, ModelShape):
        return cell, workload or Workload()
    shape = ModelShape.from_arch(cell.arch, cell.vocab_rows, cell.params)
    return shape, workload or Workload.of(cell.training)


def estimate(cell: Union[ModelShape, Any], gpus: int = 1, sharded: bool = False, cpu_offload: bool = False,
             workload: Optional[Workload] = None) -> Memory:
    """Per-GPU memory of training `cell` (a RunSpec, or a ModelShape with `workload`) on `gpus` GPUs,
    with FSDP when `sharded` (and its parameters, gradients and optimizer state on the host when
    `cpu_offload`)."""
    shape, wl = _shape_and_workload(cell, workload)
    gpus = max(1, int(gpus))
    offload = sharded and cpu_offload
    P, L, d, Vp = shape.params, shape.layers, shape.hidden, shape.padded_rows
    rows, accum = wl.geometry(gpus)
    N = rows * wl.context
    act = 2 if wl.bf16 else 4
    pbytes = 2 if (sharded and wl.bf16) else 4        # dtype the blocks compute with (FSDP gathers bf16)
    resid = pbytes                                    # the residual stream follows the embedding's dtype
    casts = wl.bf16 and not sharded                   # autocast copies fp32 weights to bf16

    div = gpus if sharded else 1
    weights = 0 if offload else 4 * P // div
    gradients = 0 if offload else 4 * P // div
    optimizer = 0 if offload else 8 * P // div + 4 * shape.param_tensors
    ddp = 4 * P if (not sharded and gpus > 1) else 0

    per_layer = layer_bytes(shape, wl.compiled, act, resid, casts)
    other = other_bytes(shape, act, resid, wl.checkpointing)
    if wl.checkpointing:
        activations = N * (L * resid * d + other)
        recompute = N * per_layer
    else:
        activations = N * (L * per_layer + other)
        recompute = 0

    if sharded:
        gathered = pbytes * (shape.root_params + 2 * shape.block_params)
        copies_fwd = gathered
        fsdp_bwd = 2 * 4 * shape.block_params + 4 * shape.root_params
    else:
        gathered = 0
        copies_fwd = 2 * L * shape.block_linear_params if casts else 0
        fsdp_bwd = 0
    ckpt_copies = (2 * shape.block_linear_params if casts else 0) if wl.checkpointing else 0

    # fused head + loss, at its largest (the last chunk of the forward pass)
    width = shape.row_width
    hidden_copy = act * N * width if resid != act else 0
    head_copy = act * Vp * width if (Vp != shape.vocab_rows or pbytes != act) else 0
    grad_w = 4 * Vp * width
    chunk = min(chunk_tokens(shape.vocab_rows), N)
    logits = act * chunk * Vp
    product = act * Vp * width + (4 * Vp * width if act != 4 else 0)
    # the chunks' hidden-state gradients: a list, then its concatenation (saved, in `activations`)
    grads_h = act * N * width
    head = hidden_copy + head_copy + grad_w + max(logits + product, grads_h)

    held = gradients if accum > 1 else 0
    forward = held + activations + copies_fwd + head
    backward = gradients + gathered + fsdp_bwd + (activations + recompute + ckpt_copies if wl.checkpointing else 0)
    persistent = weights + optimizer + ddp
    total = persistent + max(forward, backward)
    return Memory(weights, gradients, optimizer, activations, copies_fwd, head, ddp + fsdp_bwd, total, gpus,
                  sharded, offload, rows, accum, "forward" if forward >= backward else "backward")


def _mode(cell: Any, mode: Optional[str]) -> str:
    if mode is not None:
        return mode
    training = getattr(cell, "training", None)
    return getattr(training, "sharding", "auto") if training is not None else "auto"


def _offload(cell: Any, cpu_offload: Optional[bool]) -> bool:
    if cpu_offload is not None:
        return cpu_offload
    training = getattr(cell, "training", None)
    return bool(getattr(training, "cpu_offload", False)) if training is not None else False


def plan_at(cell: Any, gpus: int, gpu_bytes: float, usable: float = USABLE, mode: Optional[str] = None,
            cpu_offload: Optional[bool] = None, workload: Optional[Workload] = None) -> Memory:
    """The memory of `cell` on `gpus` GPUs as training decides there: `training.sharding` fsdp shards,
    none does not, auto shards when one unsharded replica does not fit the GPU."""
    mode = _mode(cell, mode)
    if mode == "none":
        sharded = False
    elif mode == "fsdp":
        sharded = True
    else:
        sharded = not estimate(cell, gpus, False, workload=workload).fits(gpu_bytes, usable)
    return estimate(cell, gpus, sharded, _offload(cell, cpu_offload) and sharded, workload)


def needs_sharding(cell: Any, gpu_bytes: float, gpus: Optional[int] = None, usable: float = USABLE,
                   workload: Optional[Workload] = None) -> bool:
    """Whether `cell` trains sharded on GPUs of `gpu_bytes`: training.sharding fsdp, or auto and one
    unsharded replica on `gpus` GPUs (default: $WORLD_SIZE, else 1) does not fit."""
    mode = _mode(cell, None)
    if mode != "auto":
        return mode == "fsdp"
    if gpus is None:
        gpus = int(os.environ.get("WORLD_SIZE") or 1)
    return not estimate(cell, gpus, False, workload=workload).fits(gpu_bytes, usable)


def gpus_needed(cell: Any, gpu_bytes: float, usable: float = USABLE, mode: Optional[str] = None,
                cpu_offload: Optional[bool] = None, workload: Optional[Workload] = None
                ) -> tuple[Optional[int], bool]:
    """(the smallest GPU count on which `cell` fits, whether it is sharded there); (None, False) when
    no count fits (sharding none and a replica too big; or activations alone too big)."""
    m = smallest_fit(cell, gpu_bytes, usable, mode, cpu_offload, workload)
    return (None, False) if m is None else (m.gpus, m.sharded)


def smallest_fit(cell: Any, gpu_bytes: float, usable: float = USABLE, mode: Optional[str] = None,
                 cpu_offload: Optional[bool] = None, workload: Optional[Workload] = None,
                 start: int = 1, step: int = 1) -> Optional[Memory]:
    """The memory at the smallest GPU count n = start, start + step, ... on which `cell` fits (as
    `plan_at` decides sharding), or None. The micro-batch a rank runs shrinks as n grows (the global
    batch is dealt to the ranks), so fitting is not monotone in n below one sequence per rank; past
    it only FSDP's 1/n terms change and a bisection finishes the search."""
    shape, wl = _shape_and_workload(cell, workload)
    kw = dict(gpu_bytes=gpu_bytes, usable=usable, mode=mode, cpu_offload=cpu_offload, workload=wl)
    seqs = max(1, round(wl.batch_tokens / wl.context)) if wl.batch_tokens else 1
    n = max(1, start)
    step = max(1, step)
    while n <= seqs + step:
        m = plan_at(cell, n, **kw)
        if m.fits(gpu_bytes, usable):
            return m
        n += step
    # one sequence per rank from here on: memory only falls with n (FSDP) or stays (DDP)
    hi_k = (MAX_GPUS - n) // step
    if hi_k < 0 or not plan_at(cell, n + hi_k * step, **kw).fits(gpu_bytes, usable):
        return None
    lo_k = 0
    while lo_k < hi_k:
        mid = (lo_k + hi_k) // 2
        if plan_at(cell, n + mid * step, **kw).fits(gpu_bytes, usable):
            hi_k = mid
        else:
            lo_k = mid + 1
    return plan_at(cell, n + lo_k * step, **kw)


@dataclass(frozen=True)
class Allocation:
    """What a cell needs and gets on a study's GPUs."""
    needed: Optional[int]          # smallest GPU count that fits (None: none does)
    sharded: bool                  # FSDP at the allocated count
    gpus: int                      # allocated: max(base, needed) rounded up to whole nodes
    nodes: int
    memory: Optional[Memory]       # at the needed count (None when nothing fits)
    memory_allocated: Optional[Memory] = field(default=None)   # at the allocated count

    @property
    def fits(self) -> bool:
        return self.needed is not None


def allocate(cell: Any, gpu_bytes: float, base: int = 1, per_node: int = 1, usable: float = USABLE) -> Allocation:
    """GPUs for `cell`: the smallest count that fits, then max(base, that) rounded up to whole nodes
    of `per_node` (bumped a node at a time should the rounded count not fit: a rank's micro-batch
    depends on the count). A cell that fits nowhere gets `base` GPUs."""
    per_node = max(1, per_node)
    need = smallest_fit(cell, gpu_bytes, usable)
    if need is None:
        m = plan_at(cell, base, gpu_bytes, usable)
        return Allocation(None, m.sharded, base, math.ceil(base / per_node), None, m)
    gpus = math.ceil(max(base, need.gpus) / per_node) * per_node
    got = smallest_fit(cell, gpu_bytes, usable, start=gpus, step=per_node) or plan_at(cell, gpus, gpu_bytes, usable)
    return Allocation(need.gpus, got.sharded, got.gpus, math.ceil(got.gpus / per_node), need, got)
