"""The fast training step (issue 7) on CPU: the fused head + cross-entropy and the document masks compute
exactly what the plain model does, checked against brute force; the compiled path runs in a real cell.
The speed figures need a GPU: bench/gpu_throughput.py."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from fixtures_data import make_corpus, tiny_study

from scaling.linear_ce import chunk_tokens, linear_cross_entropy
from scaling.lm_step import LossModel, compile_blocks, doc_layout, standard_forward

EOS = 5


def _lm(vocab=300, tied=True, seed=0):
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=tied)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)


def _batch(vocab=300, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(EOS + 1, vocab, (3, 48), generator=g)
    x[0, 10] = x[0, 30] = EOS        # three documents
    x[1, 0] = EOS                    # a document that starts at position 1
    x[2, 47] = EOS                   # one document, eos last
    y = torch.randint(0, vocab, (3, 48), generator=g)
    y[1, 5:9] = -100                 # masked labels (the budget's last step)
    return x, y


@pytest.mark.parametrize("vocab,chunk", [(300, 32), (300, 1000), (384, 7)])
def test_linear_cross_entropy_equals_full_logits(vocab, chunk):
    torch.manual_seed(0)
    h = torch.randn(100, 64, dtype=torch.float64, requires_grad=True)
    w = torch.randn(vocab, 64, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, vocab, (100,))
    labels[[3, 50]] = -100
    ref = F.cross_entropy(h @ w.t(), labels, ignore_index=-100, reduction="sum")
    gh, gw = torch.autograd.grad(ref, (h, w))
    out = linear_cross_entropy(h, w, labels, chunk=chunk)
    oh, ow = torch.autograd.grad(out * 3.0, (h, w))                          # upstream gradient is applied
    assert torch.allclose(out, ref, rtol=1e-10)
    assert torch.allclose(oh, 3 * gh, rtol=1e-9, atol=1e-10)
    assert torch.allclose(ow, 3 * gw, rtol=1e-9, atol=1e-10)
    with torch.no_grad():                                                   # evaluation path, no gradients kept
        assert torch.allclose(linear_cross_entropy(h, w, labels, chunk=chunk), ref, rtol=1e-10)


def test_chunk_size_keeps_logits_bounded():
    assert chunk_tokens(152_438) == 4096           # Qwen2.5 + 502 rows: 2.5 GB of bf16 logits and gradient
    assert chunk_tokens(1_000) == 16384 and chunk_tokens(10 ** 7) == 1024


@pytest.mark.parametrize("tied", [True, False])
def test_fused_head_matches_model_logits(tied):
    lm = _lm(tied=tied)
    x, y = _batch()
    full = LossModel(lm, EOS, fused_head=False)(x, y)
    g_full = torch.autograd.grad(full, list(lm.parameters()))
    model = LossModel(lm, EOS, fused_head=True)
    assert model.fused_head
    fused = model(x, y)
    g_fused = torch.autograd.grad(fused, list(lm.parameters()))
    ref = F.cross_entropy(lm(input_ids=x).logits.reshape(-1, 300), y.reshape(-1), ignore_index=-100, reduction="sum")
    assert abs(fused.item() - ref.item()) < 1e-3 and abs(full.item() - ref.item()) < 1e-3
    assert max((a - b).abs().max().item() for a, b in zip(g_full, g_fused)) < 1e-5


def test_doc_mask_equals_each_document_alone():
    lm = _lm()
    x, y = _batch()
    packed = LossModel(lm, EOS, doc_mask=True)(x, y)
    doc, pos = doc_layout(x, EOS)
    assert pos[0, :12].tolist() == list(range(11)) + [0]       # positions restart after each eos
    with standard_forward(lm):                                 # the plain model, one document at a time
        total = 0.0
        for b in range(x.shape[0]):
            for d in doc[b].unique():
                sel = (doc[b] == d).nonzero().squeeze(-1)
                logits = lm(input_ids=x[b, sel][None]).logits
                total += F.cross_entropy(logits[0], y[b, sel], ignore_index=-100, reduction="sum").item()
    assert abs(packed.item() - total) < 1e-3
    causal = LossModel(lm, EOS, doc_mask=False)(x, y)
    assert abs(causal.item() - total) > 1e-2                   # without the mask, attention crosses documents


@pytest.mark.parametrize("doc_mask", [True, False])
def test_val_loss_is_the_training_forward_checked_by_brute_force(doc_mask):
    """Held-out loss goes through the training forward: with document masks, each document alone (as
    training sees it); without, the plain model over the whole window. 5 windows in micro-batches of 2
    (the last one padded), against per-window brute force with the model's own logits."""
    from scaling.evaluate import val_loss

    lm = _lm()
    g = torch.Generator().manual_seed(3)
    windows = torch.randint(EOS + 1, 300, (5, 33), generator=g)
    windows[0, 7] = windows[0, 20] = windows[3, 0] = windows[4, 31] = EOS
    got = val_loss(LossModel(lm, EOS, doc_mask=doc_mask).eval(), windows.numpy(), torch.device("cpu"), 2, EOS)
    total = 0.0
    with torch.no_grad(), standard_forward(lm):
        for w in windows:
            x, y = w[:-1], w[1:]
            doc = doc_layout(x[None], EOS)[0][0] if doc_mask else torch.zeros_like(x)
            for d in doc.unique():
                sel = (doc == d).nonzero().squeeze(-1)
                logits = lm(input_ids=x[sel][None]).logits[0]
                total += F.cross_entropy(logits, y[sel], reduction="sum").item()
    assert got == pytest.approx(total / (5 * 32), abs=1e-5)


def test_cell_step_matches_the_hf_trainer_in_fp32(tmp_path):
    """The numerics check of bench/gpu_throughput.py, on CPU in fp32: the cell's own step functions
    (document masks, fused head + loss, fused AdamW, clipping) and the plain HF Trainer given the same
    document masks, from the same weights on the same packed tiny-data windows, give the same losses."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import gpu_throughput as bench
    from transformers import AutoModelForCausalLM, LlamaConfig

    steps, T, mb = 25, 64, 4
    wins, rows, eos = bench.tiny_data_windows(T, steps * mb, tmp_path / "cache")
    cfg = LlamaConfig(vocab_size=rows, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=T, tie_word_embeddings=True)
    torch.manual_seed(0)
    state = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).state_dict()
    hf, ours = [], []
    bench.run_trainer(cfg, state, wins, mb, 1, steps - 1, tmp_path / "hf", masks=True, eos=eos, lr=3e-3,
                      losses=hf, bf16=False)
    bench.run_ours(cfg, state, wins, mb, 1, steps - 1, eos, lr=3e-3, losses=ours, doc_mask=True, compile=False,
                   precision="fp32")
    hf, ours = [float(v) for v in hf], [float(v) for v in ours]
    assert len(hf) == len(ours) == steps and hf[-1] < hf[0] - 0.5        # it learns
    assert max(abs(a - b) for a, b in zip(hf, ours)) < 2e-5, list(zip(hf, ours))  # measured 1e-6; 0.13 without masks


def test_standard_forward_restores_attention_for_saving(tmp_path):
    lm = _lm()
    LossModel(lm, EOS, doc_mask=True)
    assert lm.config._attn_implementation == "slm_doc"
    with standard_forward(lm):
        lm.save_pretrained(tmp_path / "m")
    assert lm.config._attn_implementation == "slm_doc"
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "m")       # loads in a process that never registered it


def test_compiled_cell_trains_on_cpu(tmp_path, cli):
    """The compiled, document-masked path runs end to end on CPU and matches the eager step."""
    lm = _lm()
    x, y = _batch()
    eager = LossModel(lm, EOS, doc_mask=True)(x, y).item()
    assert compile_blocks(lm) == 2
    compiled = LossModel(lm, EOS, doc_mask=True, compiled_loss=True)(x, y)
    compiled.backward()
    assert abs(compiled.item() - eager) < 1e-3
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in lm.parameters())

    corpus = make_corpus(tmp_path / "corpus", n_utts=60, n_text=60)
    data = tiny_study(tmp_path, corpus, "llama", tokens=4096)
    data["training"].update(compile=True, doc_mask=True)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    res = cli("train", str(tmp_path / "study.yaml"), "--cell", "tiny")
    assert res.returncode == 0, res.stderr[-2000:]
    (run,) = [p for p in (tmp_path / "runs" / "t").iterdir() if (p / "result.json").exists()]
    result = json.loads((run / "result.json").read_text())
    assert result["compiled"] and result["doc_mask"] and result["fused_head"]
    assert result["tokens"] == 4096
    assert all(v == v and v < 20 for v in result["val_loss"].values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton cross-entropy kernel needs a CUDA GPU")
def test_cuda_kernel_matches_reference():
    torch.manual_seed(0)
    h = torch.randn(5000, 64, device="cuda", requires_grad=True)
    w = torch.randn(8801, 64, device="cuda", requires_grad=True)      # not a multiple of 128: padded columns
    labels = torch.randint(0, 8801, (5000,), device="cuda")
    labels[::7] = -100
    ref = F.cross_entropy(h.double() @ w.double().t(), labels, ignore_index=-100, reduction="sum")
    gh, gw = torch.autograd.grad(ref, (h, w))
    out = linear_cross_entropy(h, w, labels, dtype=torch.bfloat16, chunk=2048)
    oh, ow = torch.autograd.grad(out, (h, w))
    assert abs(out.item() - ref.item()) / ref.item() < 1e-2               # bf16 head, fp32 softmax
    assert (oh - gh).norm() / gh.norm() < 2e-2 and (ow - gw).norm() / gw.norm() < 2e-2
