"""`launch.py demo`: every stage builds, a second run reuses everything in seconds, a stage killed halfway
leaves nothing half-written and is rebuilt; the report answers interleaved vs textless with numbers.

The fast test runs the real stages on a tiny configuration (a few spoken stories, three tiny TextLMs, six
cells through the in-process debug executor). The slow test runs the real demo (examples/micro.yaml, local
executor) into a temporary folder and checks its wall time."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from demo import stages as demo_mod
from demo.stages import DemoSpec, run_demo

ROOT = Path(__file__).resolve().parents[1]

TINY_SIZES = {
    "t8": {"hidden_size": 8, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
           "num_key_value_heads": 1},
    "t12": {"hidden_size": 12, "intermediate_size": 48, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 1},
    "t16": {"hidden_size": 16, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 1},
}


def tiny_spec() -> DemoSpec:
    return DemoSpec(text_stories=200, speech_stories=24, text_episodes=300, speech_episodes=60, eval_pairs=6,
                    val_fraction=0.15,   # enough held-out speech for a few 256-token windows
                    vocab_size=300, sizes=TINY_SIZES,
                    pretrain_tokens=4096, pretrain_training={"context": 128, "micro_batch": 4, "batch_tokens": 512,
                                                             "lr": 3e-3, "min_lr": 3e-4, "warmup": 0.1,
                                                             "precision": "fp32", "log_every": 4},
                    n_bootstrap=8, poll_s=0.2, progress_every_s=5)


def tiny_study(tmp_path: Path) -> Path:
    """A study file like examples/micro.yaml, six cells of tiny models through the debug executor."""
    data = yaml.safe_load((ROOT / "examples" / "micro.yaml").read_text())
    data["root"] = str(tmp_path / "runs")
    data["name"] = "demo-t"
    data["families"] = {"micro": {"members": [f"demo-data/textlm/{n}" for n in TINY_SIZES], "init": "textlm",
                                  "setup": "interleaved", "tokenizer": "demo-data/tokenizer"}}
    data["grid"] = {"flops": [2.0e+8], "textless_twin": True}
    data["data"]["units"] = 16
    data["data"]["corpora"] = [
        {"path": "demo-data/speech/units.jsonl", "format": "units", "alignments": "demo-data/speech/align"},
        {"path": "demo-data/speech/units_val.jsonl", "format": "units", "alignments": "demo-data/speech/align",
         "split": "val"},
        {"path": "demo-data/text/stories.jsonl", "format": "text"}]
    data["training"].update(context=256, micro_batch=2, batch_tokens=512, log_every=4)  # episodes fit 256
    data["eval"] = {"val_tokens": 1024, "benchmarks": [
        {"name": "swuggy", "manifest": "demo-data/eval/swuggy.jsonl"},
        {"name": "ssc_ss", "manifest": "demo-data/eval/ssc_ss.jsonl"},
        {"name": "tsc_ss", "manifest": "demo-data/eval/tsc_ss.jsonl"},
        {"name": "tsc_st", "manifest": "demo-data/eval/tsc_st.jsonl", "setups": ["interleaved"]},
        {"name": "tsc_tt", "manifest": "demo-data/eval/tsc_tt.jsonl", "setups": ["interleaved"]}]}
    data["executor"]["kind"] = "debug"
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_demo_builds_then_reuses_every_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything MLflow writes beside the working directory lands in tmp
    study = tiny_study(tmp_path)
    lines: list[str] = []
    first = run_demo(study, log=lines.append, spec=tiny_spec())
    text = "\n".join(lines)
    assert [s.name for s in first.stages] == list(demo_mod.STAGES)
    assert not any(s.reused for s in first.stages), text
    for i, name in enumerate(demo_mod.STAGES, 1):                 # each stage printed its name and time
        assert any(l.startswith(f"[{i}/7]") and ("done" in l or "reused" in l) for l in lines), text
    data = tmp_path / "demo-data"
    for n in TINY_SIZES:                                          # ordinary HF model folders
        folder = data / "textlm" / n
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    from transformers import AutoModelForCausalLM, AutoTokenizer
    assert AutoModelForCausalLM.from_pretrained(str(data / "textlm" / "t8")).config.hidden_size == 8
    assert AutoTokenizer.from_pretrained(str(data / "textlm" / "t8")).eos_token == "<|endoftext|>"
    fits = json.loads(first.fits_json.read_text())
    assert fits["n_done"] == 6
    comp = fits["setup_comparison"]
    assert comp["pairs"] and comp["summary"][0].startswith("At equal compute")
    md = first.report_md.read_text()
    assert "## Interleaved against textless at equal compute" in md
    # issue 19: the cross-modal table (S, S->T, T->S, T) beside the TextLM's own text score; textless: S only
    assert "## Cross-modal story cloze (SIMS Table 2 at this scale)" in md and "Orig. T (TextLM)" in md
    cm = fits["cross_modal"]
    for row in cm["rows"]:
        want = {"tsc_ss", "ssc_ss"} | ({"tsc_st", "tsc_tt"} if row["setup"] == "interleaved" else set())
        assert set(row["scores"]) == want, row
        assert all(v["n"] == 6 and v["p2.5"] <= v["accuracy"] <= v["p97.5"] for v in row["scores"].values())
        assert ("orig" in row) == (row["setup"] == "interleaved")
    assert set(cm["textlms"]) == set(TINY_SIZES)
    own = json.loads((data / "textlm" / "t8" / demo_mod.TEXTLM_EVAL).read_text())
    assert set(own["eval"]) == set(demo_mod.TEXTLM_BENCHMARKS) and own["eval_n"]["tsc_tt"] == 6
    assert "text pretraining is not part of" in md.lower()
    assert any("every item fits the context" in l for l in lines), text
    # the report says how many epochs of each stream every cell saw (issue 22)
    rep = fits["data_repetition"]
    assert len(rep["cells"]) == 6 and all(c["epochs"] and min(c["epochs"].values()) > 0 for c in rep["cells"])
    assert "## Data repetition: epochs per cell" in md
    # issue 20: the interleaved cells again on shared WSD trunks, against the cosine cells
    wsd = fits["wsd_comparison"]
    assert len(wsd["comparison"]["pairs"]) == 3 and wsd["compute"]["wsd"]["tokens"] <= wsd["compute"]["cosine"]["tokens"]
    assert "## WSD branches against cosine cells" in md and (first.report_md.parent / "wsd-vs-cosine.png").exists()
    assert any(p.name.startswith("trunk-") for p in (tmp_path / "runs" / "demo-t-wsd").iterdir())
    assert first.mlflow_command and "launch.py ui" in first.mlflow_command
    assert any(l.startswith("MLflow UI on this study:") for l in lines)
    assert any(l.startswith("report:") for l in lines)

    t0 = time.time()
    again: list[str] = []
    second = run_demo(study, log=again.append, spec=tiny_spec())
    assert all(s.reused for s in second.stages), "\n".join(again)
    assert time.time() - t0 < 20
    assert second.report_md.read_text() == md


def test_demo_stage_killed_halfway_leaves_nothing_and_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = tiny_study(tmp_path)
    spec = tiny_spec()
    from demo import micro_family

    real_export = micro_family.export_member
    calls = {"n": 0}

    def dying_export(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if killed while the family is being exported
        return real_export(*args, **kwargs)

    monkeypatch.setattr(demo_mod, "export_member", dying_export)   # stages imports it by name
    with pytest.raises(KeyboardInterrupt):
        run_demo(study, log=lambda _: None, spec=spec)
    data = tmp_path / "demo-data"
    assert not (data / "textlm").exists()                         # no half-written family
    assert not (data / ".demo" / "textlm.json").exists()
    assert (data / ".demo" / "evalsets.json").exists()            # the stages before it finished

    monkeypatch.setattr(demo_mod, "export_member", real_export)
    lines: list[str] = []
    res = run_demo(study, log=lines.append, spec=spec)
    reused = {s.name: s.reused for s in res.stages}
    assert reused["text"] and reused["speech"] and reused["evalsets"] and not reused["textlm"]
    assert not list(data.glob("*.tmp*")) and not list(data.glob("*.old*"))
    assert sorted(p.name for p in (data / "textlm").iterdir()) == sorted(TINY_SIZES)


def test_demo_refuses_a_study_without_demo_members(tmp_path):
    path = tmp_path / "x.yaml"
    data = yaml.safe_load((ROOT / "examples" / "micro.yaml").read_text())
    data["families"]["micro"]["members"] = ["qwen2.5/0.5B"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(demo_mod.DemoError, match="x-data/textlm"):
        run_demo(path, log=lambda _: None)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SLM_RUN_DEMO_TEST") != "1",
                    reason="the full demo is the README's first command (5-6 min on 2 cores, over the suite's time "
                           "budget); SLM_RUN_DEMO_TEST=1 runs it here")
def test_real_demo_end_to_end(tmp_path, monkeypatch):
    """The README's demo (examples/micro.yaml) from nothing, then again: the first run within the demo's
    share of the 10-minute budget (set-up takes the rest), the second in seconds."""
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "micro.yaml"
    data = yaml.safe_load((ROOT / "examples" / "micro.yaml").read_text())
    data["root"] = str(tmp_path / "runs")
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    lines: list[str] = []
    first = run_demo(study, log=lambda l: (lines.append(l), print(l, flush=True)))
    assert first.seconds < 600, "\n".join(lines)
    fits = json.loads(first.fits_json.read_text())
    assert fits["n_done"] == len(list((tmp_path / "runs" / "micro").glob("*/result.json")))
    verdict = fits["setup_comparison"]["summary"][0]
    assert "interleaved" in verdict and "nats" in verdict
    t0 = time.time()
    second = run_demo(study, log=lambda _: None)
    assert all(s.reused for s in second.stages) and time.time() - t0 < 30
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)
