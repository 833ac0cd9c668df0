"""Evaluation: held-out loss per stream (through the training forward), and pairwise likelihood benchmarks (sWUGGY, sBLIMP, sSC, tSC
style) read from explicit pair manifests.

Manifest (JSONL), one pair per line: `{"id": str, "prompt": ITEM (optional), "positive": ITEM,
"negative": ITEM}` where ITEM is `{"units": [int, ...]}` (speech) or `{"text": str}`. The score of an
item is the mean log-likelihood of its tokens given the prompt (length-normalised); a pair counts 1 when
the positive scores higher, 0.5 on a tie. Speech starts with the `<speech>` marker, as every training
sequence does (`prompt_marker: false` drops it for the first segment); a marker is emitted at every
modality switch. Textless models have no markers.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .pairs import read_pairs
from .vocab import SpeechVocab

__all__ = ["read_pairs", "pair_sequences", "pair_accuracy", "val_loss"]


def _segment_ids(vocab: SpeechVocab, modality: str, content: Any, marker: bool) -> list[int]:
    ids = []
    if marker:
        m = vocab.speech_id if modality == "speech" else vocab.text_id
        if m is not None:
            ids.append(m)
    if modality == "speech":
        ids.extend(vocab.units(content))
    else:
        ids.extend(vocab.encode_text(content))
    return ids


def pair_sequences(vocab: SpeechVocab, pair: dict, prompt_marker: bool) -> list[tuple[list[int], int]]:
    """(token ids, index of the first scored token) for the positive and the negative."""
    out = []
    for side in ("positive", "negative"):
        ids, prev = [], None
        if "prompt" in pair:
            mod, content = pair["prompt"]
            ids = _segment_ids(vocab, mod, content, prompt_marker or mod == "text")
            prev = mod
        mod, content = pair[side]
        marker = (prev is None and (prompt_marker or mod == "text")) or (prev is not None and prev != mod)
        cont = _segment_ids(vocab, mod, content, marker)
        # the marker is given, not scored: score only the continuation's own tokens
        start = len(ids) + (1 if marker and (vocab.speech_id is not None) else 0)
        ids = ids + cont
        if start == 0:
            # nothing precedes the first token: prepend eos as a neutral context so it can be scored
            ids, start = [vocab.eos_id] + ids, 1
        out.append((ids, start))
    return out


@torch.no_grad()
def mean_logprobs(model, seqs: list[tuple[list[int], int]], device, batch: int = 16,
                  logit_elems: int = 2 ** 28) -> list[float]:
    """Mean log-probability of tokens[start:] of each sequence (in input order). Sequences are batched
    by length (little padding; padded positions are masked and never scored), `batch` rows at a time, or
    up to 4x more while the fp32 logits stay under `logit_elems` elements (micro models: fewer calls)."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None) or 1
    width = max((len(s) for s, _ in seqs), default=1)
    batch = max(batch, min(4 * batch, logit_elems // max(1, width * vocab)))
    order = sorted(range(len(seqs)), key=lambda k: len(seqs[k][0]))
    scores = _mean_logprobs([seqs[k] for k in order], device, model, batch)
    out = [0.0] * len(seqs)
    for k, v in zip(order, scores):
        out[k] = v
    return out


def _mean_logprobs(seqs, device, model, batch: int) -> list[float]:
    out = []
    for i in range(0, len(seqs), batch):
        chunk = seqs[i:i + batch]
        width = max(len(s) for s, _ in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, (s, _) in enumerate(chunk):
            ids[r, :len(s)] = torch.tensor(s)
            mask[r, :len(s)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        tok = torch.gather(logp, 2, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1).cpu()
        for r, (s, start) in enumerate(chunk):
            out.append(float(tok[r, start - 1:len(s) - 1].mean()))
    return out


def pair_accuracy(model, vocab: SpeechVocab, pairs: list[dict], prompt_marker: bool, device) -> float:
    seqs = [s for p in pairs for s in pair_sequences(vocab, p, prompt_marker)]
    scores = mean_logprobs(model, seqs, device)
    total = 0.0
    for k in range(0, len(scores), 2):
        pos, neg = scores[k], scores[k + 1]
        total += 1.0 if pos > neg else (0.5 if pos == neg else 0.0)
    return total / len(pairs)


@torch.no_grad()
def val_loss(loss_model, windows: np.ndarray, device, micro_batch: int, pad_id: int, rank: int = 0,
             world: int = 1) -> float:
    """Mean next-token cross-entropy over held-out windows (context + 1 tokens each).

    `loss_model` is the training forward (`scaling.lm_step.LossModel`: ids and labels in, summed CE
    out), so held-out loss sees what training sees: the same attention (inside each packed document
    when training masks documents), the same positions, the fused head (no fp32 logits over the
    vocabulary). The windows are dealt round-robin to the `world` ranks; every rank runs the same
    number of full micro-batches (rows it lacks are `pad_id` without labels), so a sharded model's
    collectives stay in step and compiled shapes never change; the sums are all-reduced."""
    if len(windows) == 0:
        return math.nan
    mine = windows[rank::world]
    T = windows.shape[1] - 1
    batches = -(-(-(-len(windows) // world)) // micro_batch)
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # summed CE, labels
    for b in range(batches):
        rows = mine[b * micro_batch:(b + 1) * micro_batch]
        x = np.full((micro_batch, T), pad_id, dtype=np.int64)
        y = np.full((micro_batch, T), -100, dtype=np.int64)
        x[:len(rows)], y[:len(rows)] = rows[:, :-1], rows[:, 1:]
        sums[0] += loss_model(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)).double()
        sums[1] += len(rows) * T
    if world > 1:
        torch.distributed.all_reduce(sums)
    return float(sums[0] / sums[1])
