"""A tiny speech-text corpus and tokenizer made by the tests (no downloads).

Speech units are a fixed function of each word (3-5 units of 1-3 frames), so speech is learnable and
word times follow from the cumulative durations, as in a real aligned corpus.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ("the cat dog sat ran on a mat big small red blue bird tree saw under over quick slow happy "
         "sun moon day night little old house river").split()


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(6, 14)
        out.append(" ".join(rng.choice(WORDS) for _ in range(k)))
    return out


def word_units(word: str, n_units: int) -> tuple[list[int], list[int]]:
    r = random.Random(sum(ord(c) * (i + 1) for i, c in enumerate(word)))
    k = r.randint(3, 5)
    return [r.randrange(n_units) for _ in range(k)], [r.randint(1, 3) for _ in range(k)]


def make_tokenizer(folder: Path, texts: list[str], vocab_size: int = 280) -> Path:
    """A byte-level BPE tokenizer saved as an HF folder (eos and pad; no bos)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # a real token first, so id 0 is not a special token (as in Qwen2.5 and Llama-3)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens(["<|eos|>", "<|pad|>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|eos|>", pad_token="<|pad|>")
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    return folder


def make_corpus(root: Path, n_units: int = 50, n_utts: int = 120, n_text: int = 120, seed: int = 0) -> dict:
    """Unit rows + alignment side-cars + a text corpus + a tokenizer; returns their paths."""
    root.mkdir(parents=True, exist_ok=True)
    align_dir = root / "align"
    align_dir.mkdir(exist_ok=True)
    rows = []
    for i, sent in enumerate(sentences(n_utts, seed)):
        units, dur, words, t = [], [], [], 0.0
        for j, w in enumerate(sent.split()):
            u, d = word_units(w, n_units)
            start = t
            units += u
            dur += d
            t += sum(d) * 0.04
            words.append([(" " if j else "") + w, round(start, 4), round(t, 4)])
        name = f"utt{i:04d}"
        rows.append({"file_name": f"audio/{name}.flac", "units": units, "duration": dur})
        (align_dir / f"{name}.json").write_text(json.dumps({"file_name": f"audio/{name}.flac",
                                                            "aligned_text": words, "text": sent}))
    units_path = root / "units.jsonl"
    units_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    texts = sentences(n_text, seed + 1)
    text_path = root / "text.jsonl"
    text_path.write_text("".join(json.dumps({"text": s}) + "\n" for s in texts))
    tok = make_tokenizer(root / "tokenizer", texts + sentences(n_utts, seed))
    # a sWUGGY-like manifest: a real word's units against a shuffled non-word
    pairs = []
    rng = random.Random(seed)
    for k, w in enumerate(WORDS[:12]):
        u, _ = word_units(w, n_units)
        neg = u[:]
        while neg == u:
            rng.shuffle(neg)
            neg = [(x + rng.randint(1, 3)) % n_units for x in neg]
        pairs.append({"id": f"w{k}", "positive": {"units": u}, "negative": {"units": neg}})
    manifest = root / "swuggy.jsonl"
    manifest.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return {"units": units_path, "align": align_dir, "text": text_path, "tokenizer": tok, "manifest": manifest}


def tiny_study(root: Path, corpus: dict, model_type: str = "llama", tokens: int = 6000, **training) -> dict:
    """A one-cell study of a tiny from-scratch model on the fixture corpus."""
    base = {"model_type": model_type, "vocab_size": 288, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 128, "tie_word_embeddings": model_type == "llama"}
    return {
        "name": "t",
        "root": str(root / "runs"),
        "families": {"tiny": {"base": base, "members": {"d32": {}}, "init": "random",
                              "tokenizer": str(corpus["tokenizer"])}},
        "grid": {"tokens": [tokens]},
        "data": {"units": 50, "corpora": [
            {"path": str(corpus["units"]), "format": "units", "alignments": str(corpus["align"])},
            {"path": str(corpus["text"]), "format": "text"}],
            "mix": {"text": 0.3, "interleaved": 0.4, "speech": 0.3}},
        "training": {"context": 32, "micro_batch": 4, "batch_tokens": 256, "lr": 3e-3, "min_lr": 3e-4,
                     "warmup": 0.1, "precision": "fp32", "log_every": 1, **training},
        "eval": {"val_tokens": 2000, "benchmarks": [{"name": "swuggy", "manifest": str(corpus["manifest"])}]},
        "tracking": {"enabled": False},
    }


def tiny_copy(tmp_path: Path, edit=None) -> Path:
    """examples/tiny.yaml with its data beside it in tmp_path (relative paths resolve as in the repo),
    runs under tmp_path/runs, after `edit(data)`."""
    import shutil

    import yaml

    root = Path(__file__).resolve().parents[1]
    shutil.copytree(root / "examples" / "tiny-data", tmp_path / "tiny-data")
    data = yaml.safe_load((root / "examples" / "tiny.yaml").read_text())
    data["root"] = str(tmp_path / "runs")
    if edit:
        edit(data)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def deep_bad_units(data_dir: Path, name: str = "units-bad.jsonl", good_rows: int = 260) -> Path:
    """A copy of `data_dir`/units.jsonl whose first `good_rows` rows are good (repeated as needed) and
    whose last row is malformed: it passes the preflight (which reads the first 200 rows) and fails the
    cell when training reads the whole corpus."""
    rows = [l for l in (data_dir / "units.jsonl").read_text().splitlines() if l.strip()]
    good = (rows * (good_rows // len(rows) + 1))[:good_rows]
    bad = json.dumps({"file_name": "audio/bad.flac", "units": "not a list", "duration": [1]})
    path = data_dir / name
    path.write_text("\n".join(good + [bad]) + "\n")
    return path
