"""One training cell on CPU: tiny Qwen2- and Llama-style models built from configs, a tokenizer and a
corpus the tests make."""
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fixtures_data import make_corpus, tiny_study

ROOT = Path(__file__).resolve().parents[1]
RESULT_KEYS = {"key", "study", "family", "member", "init", "setup", "variant", "params", "tokens", "flops",
               "loss", "val_loss", "eval", "wall_seconds", "tokens_per_second", "mlflow_run_id",
               "tokens_by_modality", "steps"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def write_study(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_dir_of(tmp_path: Path) -> Path:
    (d,) = [p for p in (tmp_path / "runs" / "t").iterdir() if (p / "spec.json").exists()]
    return d


@pytest.mark.parametrize("model_type", ["qwen2", "llama"])
def test_cell_trains_to_exact_budget(tmp_path, corpus, cli, model_type):
    study = write_study(tmp_path, tiny_study(tmp_path, corpus, model_type, tokens=8000))
    res = cli("train", str(study), "--cell", "tiny")
    assert res.returncode == 0, res.stderr[-2000:]
    run = run_dir_of(tmp_path)
    result = json.loads((run / "result.json").read_text())
    assert RESULT_KEYS <= set(result)
    assert result["tokens"] == 8000 == result["tokens_budget"]             # 8000 is not a multiple of 256
    assert sum(result["tokens_by_modality"].values()) == 8000
    assert result["tokens_by_modality"]["text"] > 0 and result["tokens_by_modality"]["speech"] > 0
    metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert losses[-1] < losses[0] - 0.5                                     # loss falls
    rows = result["params"]["vocab_rows"]
    assert all(v < math.log(rows) for v in result["val_loss"].values())     # better than uniform
    assert set(result["val_loss"]) == {"text", "interleaved", "speech"}
    assert 0.0 <= result["eval"]["swuggy"] <= 1.0
    assert json.loads((run / "state.json").read_text())["state"] == "DONE"
    assert "tok/s" in res.stdout and "ETA" in res.stdout                   # progress lines
    # the parameter counts the plan gave are the built model's
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(run / "model")
    assert sum(p.numel() for p in model.parameters()) == result["params"]["total"]


def test_special_ids_from_tokenizer_id0_real(tmp_path, corpus):
    from scaling.vocab import build_vocab

    v = build_vocab("interleaved", 400, 50, str(corpus["tokenizer"]))
    tok = v.tokenizer
    assert tok.convert_ids_to_tokens(0) not in tok.all_special_tokens      # id 0 is a real byte token
    assert 0 not in (v.eos_id, v.pad_id, v.speech_id, v.text_id)
    assert v.eos_id == tok.convert_tokens_to_ids("<|eos|>")
    assert v.unit_base == len(tok) - 52 and v.speech_id == v.unit_base + 50 and v.text_id == v.unit_base + 51
    assert v.bos_id is None                                                  # this tokenizer has none
    ids = v.encode_text("!") + v.units([0, 49])
    assert v.modality_of(ids).tolist() == [0, 1, 1]


def _train(study: Path, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "train", str(study), "--cell", "tiny"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})


def test_preempt_three_times_bitwise(tmp_path, corpus):
    tokens = 12000
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    ref_study = write_study(ref_dir, tiny_study(ref_dir, corpus, "llama", tokens=tokens,
                                                checkpoint_every_tokens=100000))
    assert _train(ref_study).wait(timeout=300) == 0
    ref = json.loads((run_dir_of(ref_dir) / "result.json").read_text())

    run = tmp_path / "pre"
    run.mkdir()
    tracked = tiny_study(run, corpus, "llama", tokens=tokens, checkpoint_every_tokens=100000)
    tracked["tracking"] = {"enabled": True}        # the embedded SQLite store in the study dir
    study = write_study(run, tracked)
    rng = random.Random(7)
    interrupts = 0
    total_steps = math.ceil(tokens / 256)
    while interrupts < 3:
        proc = _train(study)
        done = {json.loads(l)["step"] for l in _metrics(run)}
        target = max(done or {0}) + rng.randint(2, 8)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            steps = [json.loads(l)["step"] for l in _metrics(run)]
            if steps and max(steps) >= target:
                proc.send_signal(signal.SIGUSR2)
                break
            time.sleep(0.005)
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 3, out[-2000:]
        assert "checkpointed, exiting for requeue" in out
        interrupts += 1
    proc = _train(study)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-2000:]
    assert out.count("resumed from") == 1
    d = run_dir_of(run)
    res = json.loads((d / "result.json").read_text())
    state = json.loads((d / "state.json").read_text())
    assert state["attempts"] == 4 and state["state"] == "DONE"
    assert res["loss"] == ref["loss"] and res["val_loss"] == ref["val_loss"] and res["eval"] == ref["eval"]
    # metrics intact: one line per step, identical to the uninterrupted run's losses
    lines = [json.loads(l) for l in _metrics(run)]
    ref_lines = [json.loads(l) for l in _metrics(ref_dir)]
    assert [l["step"] for l in lines if "loss" in l] == list(range(1, total_steps + 1))
    assert [l["loss"] for l in lines if "loss" in l] == [l["loss"] for l in ref_lines if "loss" in l]
    # MLflow holds one run for the cell, the one result.json names, finished
    from mlflow import MlflowClient
    client = MlflowClient(f"sqlite:///{d.parent}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == res["mlflow_run_id"] and runs[0].info.status == "FINISHED"
    assert max(m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")) == tokens


def _metrics(base: Path) -> list[str]:
    runs = base / "runs" / "t"
    if not runs.exists():
        return []
    for d in runs.iterdir():
        p = d / "metrics.jsonl"
        if p.exists():
            return [l for l in p.read_text().splitlines() if l.strip()]
    return []


def test_textlm_init_and_textless_twin(tmp_path, corpus, cli):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=288, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True)
    folder = tmp_path / "textlm"
    LlamaForCausalLM(cfg).save_pretrained(folder)
    data = tiny_study(tmp_path, corpus, "llama", tokens=3000)
    data["families"] = {"mylm": {"members": [str(folder)], "init": "textlm", "tokenizer": str(corpus["tokenizer"])}}
    data["grid"]["textless_twin"] = True
    data["grid"]["twin_init"] = "textlm"
    study = write_study(tmp_path, data)
    plan = json.loads(cli("plan", str(study), "--json").stdout)
    assert {r["setup"] for r in plan} == {"interleaved", "textless"}
    for row in plan:
        res = cli("train", str(study), "--cell", row["key"])
        assert res.returncode == 0, res.stderr[-2000:]
        result = json.loads((tmp_path / "runs" / "t" / row["key"] / "result.json").read_text())
        assert result["params"]["total"] == row["params_total"] and result["tokens"] == 3000
        if row["setup"] == "textless":
            assert result["params"]["vocab_rows"] == 52 and set(result["val_loss"]) == {"speech"}
            assert result["tokens_by_modality"]["text"] == 0
        else:
            assert result["params"]["new_rows"] == 52


def test_bad_corpus_row_is_one_line(tmp_path, corpus, cli):
    bad = tmp_path / "bad.jsonl"
    lines = corpus["units"].read_text().splitlines()[:3]
    lines.append(json.dumps({"file_name": "x.flac", "units": [1, 2, 999], "duration": [1, 1, 1]}))
    bad.write_text("\n".join(lines) + "\n")
    data = tiny_study(tmp_path, corpus, "llama", tokens=1000)
    data["data"]["corpora"][0]["path"] = str(bad)
    study = write_study(tmp_path, data)
    res = cli("train", str(study), "--cell", "tiny")
    assert res.returncode == 2, res.stdout[-1000:] + res.stderr[-2000:]
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and f"{bad}:4" in err[0] and "units" in err[0], res.stderr
