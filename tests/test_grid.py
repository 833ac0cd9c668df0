"""Grid expansion, cell keys, budgets and cost against hand-computed values."""
import json
import re
from pathlib import Path

import pytest
import yaml

from sweeps.grid import expand, expand_counted
from sweeps.plan import format_plan, make_plan
from sweeps.study import load_study, parse_study

ROOT = Path(__file__).resolve().parents[1]
SIMS = ROOT / "examples" / "sims.yaml"
TINY = ROOT / "examples" / "tiny.yaml"
Q05_TOTAL = 494_032_768 + 502 * 896          # Qwen2.5-0.5B (tied) + 502 new rows
KEY_RE = re.compile(r"^[A-Za-z0-9._]+(-[A-Za-z0-9._]+)*-\d+(\.\d+)?[kMBT]?-[0-9a-f]{8}$")


def study_from(data: dict, tmp_path: Path, name: str = "s.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_study(path)


def sims_data() -> dict:
    return yaml.safe_load(SIMS.read_text())


def test_sims_isoflop_tokens_are_c_over_6n():
    cells = expand(load_study(SIMS))
    q05 = [c for c in cells if c.family == "qwen2.5" and c.member == "0.5B"]
    assert {round(c.flops / 1e18, 1) for c in q05} == {2.0, 5.0, 20.0, 60.0}
    for c in q05:
        assert c.params.total == Q05_TOTAL
        budget = round(c.flops, -16)
        assert c.tokens == round(budget / (6 * Q05_TOTAL))
    # the paper's final model: Qwen2.5-7B at 6.9e20 is about 15B tokens
    (q7,) = [c for c in cells if c.member == "7B" and c.flops > 6e20]
    assert q7.tokens == pytest.approx(15.09e9, rel=1e-3)
    for c in cells:
        assert KEY_RE.match(c.key), c.key
        assert 0.5 <= c.tokens / c.params.total <= 50


def test_kaplan_convention_uses_nonembedding(tmp_path):
    data = sims_data()
    data["grid"]["flops_convention"] = "6ND_nonembedding"
    data["grid"].pop("max_tokens_per_param")
    cells = expand(study_from(data, tmp_path))
    c = next(c for c in cells if c.member == "0.5B")
    nonemb = 494_032_768 - 151_936 * 896
    assert c.params.nonembedding == nonemb
    assert c.tokens == round(2e18 / (6 * nonemb))


def test_tokens_per_param_and_explicit_tokens(tmp_path):
    data = sims_data()
    data["grid"] = {"tokens_per_param": [20]}
    cells = expand(study_from(data, tmp_path))
    c = next(c for c in cells if c.member == "0.5B")
    assert c.tokens == round(20 * Q05_TOTAL)
    data["grid"] = {"tokens": [1e9, "2e9"], "max_tokens_per_param": 1.0}
    cells = expand(study_from(data, tmp_path))
    assert sorted({c.tokens for c in cells}) == [1_000_000_000, 2_000_000_000]
    assert all(c.tokens / c.params.total <= 1.0 for c in cells)
    assert not any(c.member == "0.5B" and c.tokens == 2_000_000_000 for c in cells)


def test_keys_stable_and_sensitive(tmp_path):
    data = sims_data()
    keys = [c.key for c in expand(study_from(data, tmp_path))]
    assert keys == [c.key for c in expand(load_study(SIMS))]
    assert len(set(keys)) == len(keys)
    # study name, executor, tracking and root do not change results, so not keys
    data2 = dict(data, name="other", root="/elsewhere", executor={"kind": "local", "gpu_type": "h100"},
                 tracking={"uri": "http://127.0.0.1:5000"})
    assert [c.key for c in expand(study_from(data2, tmp_path, "b.yaml"))] == keys
    # a training setting does
    data3 = json.loads(json.dumps(data))
    data3["training"]["lr"] = 1e-4
    keys3 = [c.key for c in expand(study_from(data3, tmp_path, "c.yaml"))]
    assert not set(keys3) & set(keys)


def test_textless_twin_and_variants():
    study = load_study(TINY)
    cells = expand(study)
    twins = [c for c in cells if c.setup == "textless"]
    assert len(twins) == len(cells) // 2
    units = study.data.units
    for c in twins:
        assert c.init == "random" and c.vocab_rows == units + 2 and c.params.new_rows == units + 2
        d, layers, inter = c.arch["hidden_size"], c.arch["num_hidden_layers"], c.arch["intermediate_size"]
        kv = c.arch["num_key_value_heads"] * d // c.arch["num_attention_heads"]
        body = layers * (2 * d * d + 2 * d * kv + 3 * d * inter + 2 * d) + d   # llama, no biases
        assert c.params.total == body + (units + 2) * d                         # tied embedding


def test_variants_cross_the_grid(tmp_path):
    data = sims_data()
    data["families"] = {"qwen2.5": {"members": ["0.5B", "1.5B"]}}
    data["data"]["corpora"] = [{"path": "stories.jsonl", "format": "units", "synthetic": True}]
    data["grid"]["variants"] = {"no-synth": {"data.use_synthetic": False},
                                "random-init": {"init": "random"},
                                "no-interleave": {"data.interleave.method": "none", "training.lr": 1e-3}}
    cells = expand(study_from(data, tmp_path))
    base = [c for c in cells if c.variant is None]
    assert len(cells) == 4 * len(base)
    by = {v: [c for c in cells if c.variant == v] for v in ("no-synth", "random-init", "no-interleave")}
    assert all(not c.data.use_synthetic for c in by["no-synth"])
    assert all(c.init == "random" for c in by["random-init"])
    assert all(c.data.interleave.method == "none" and c.training.lr == 1e-3 for c in by["no-interleave"])
    assert all(c.data.use_synthetic and c.init == "textlm" for c in base)
    assert len({c.key for c in cells}) == len(cells)


def test_twins_hash_only_what_they_read_and_a_variant_that_changes_nothing_is_named(tmp_path):
    """Issue 16 item 5: an interleaving ablation gives new interleaved cells but the same textless twins
    (planned once), and `no-synth` with no synthetic corpus changes nothing; `plan` says both."""
    data = yaml.safe_load(TINY.read_text())
    (tmp_path / "tiny-data").symlink_to(TINY.parent / "tiny-data")
    data["grid"]["variants"] = {"span4": {"data.interleave.span": 4, "data.mix.text": 0.3,
                                          "data.mix.interleaved": 0.45},
                                "no-synth": {"data.use_synthetic": False}}
    study = study_from(data, tmp_path)
    base = [c for c in expand(load_study(TINY))]
    cells, per_variant = expand_counted(study)
    assert len(cells) == len({c.key for c in cells}) == len(base) + len(base) // 2
    twins = [c.key for c in cells if c.setup == "textless"]
    assert len(twins) == len(base) // 2 and all(c.variant is None for c in cells if c.setup == "textless")
    assert {c.key for c in cells if c.variant is None} == {c.key for c in base}
    assert per_variant["span4"].repeated == len(base) // 2 and not per_variant["span4"].changes_nothing
    assert per_variant["no-synth"].changes_nothing and per_variant[None].repeated == 0
    text = format_plan(make_plan(study))
    assert "variant no-synth: changes nothing a cell reads" in text
    assert "variant span4: 6 of its 12 cells equal earlier cells" in text
    assert f"\n{len(cells)} cells," in text


def _write_qwen_folder(folder: Path):
    folder.mkdir(parents=True)
    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
           "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
           "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
           "torch_dtype": "bfloat16", "transformers_version": "4.43.1"}
    (folder / "config.json").write_text(json.dumps(cfg))


def test_local_member_folder_same_keys_anywhere(tmp_path):
    keys = []
    for place in ("a", "b/c"):
        d = tmp_path / place
        _write_qwen_folder(d / "models" / "my-qwen")
        data = {"name": "loc", "families": {"mine": {"members": ["models/my-qwen"]}}, "grid": {"tokens": [1e9]}}
        (d / "s.yaml").write_text(yaml.safe_dump(data))
        (cell,) = expand(load_study(d / "s.yaml"))
        assert cell.member == "my-qwen" and cell.params.total == Q05_TOTAL
        keys.append(cell.key)
    assert keys[0] == keys[1] and keys[0].startswith("mine-my-qwen-1B-")


def test_local_member_weights_absolute_whatever_the_cwd(tmp_path, monkeypatch):
    """A job starts in the code snapshot folder, not where `submit` ran: a member folder named relative
    to the study must reach the run spec as an absolute path (the key stays as the study names it)."""
    d = tmp_path / "proj"
    _write_qwen_folder(d / "models" / "my-qwen")
    data = {"name": "loc", "families": {"mine": {"members": ["models/my-qwen"]}}, "grid": {"tokens": [1e9]}}
    (d / "s.yaml").write_text(yaml.safe_dump(data))
    key_from_inside = None
    for cwd, study in ((d, "s.yaml"), (tmp_path, "proj/s.yaml")):
        monkeypatch.chdir(cwd)
        (cell,) = expand(load_study(Path(study)))
        assert Path(cell.weights).is_absolute() and Path(cell.weights) == (d / "models" / "my-qwen").resolve()
        key_from_inside = key_from_inside or cell.key
        assert cell.key == key_from_inside


def test_hf_cache_member(tmp_path, cli):
    cache = tmp_path / "hub"
    snap = cache / "models--someorg--tiny-qwen" / "snapshots" / "abc123"
    _write_qwen_folder(snap)
    (cache / "models--someorg--tiny-qwen" / "refs").mkdir()
    (cache / "models--someorg--tiny-qwen" / "refs" / "main").write_text("abc123")
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"name": "hf", "families": {"org": {"members": ["someorg/tiny-qwen"]}},
                                     "grid": {"tokens": [1e9]}}))
    res = cli("plan", str(study), "--json", cwd=tmp_path, env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr
    (row,) = json.loads(res.stdout)
    assert row["member"] == "tiny-qwen" and row["params_total"] == Q05_TOTAL


def test_cost_assumed_then_measured(tmp_path):
    data = sims_data()
    data["root"] = str(tmp_path / "runs")
    study = study_from(data, tmp_path)
    plan = make_plan(study)
    assert plan.basis.measured_cells == 0
    c = plan.cells[0]
    d, layers = 896, 24
    cost = (6 * Q05_TOTAL + 6 * layers * 2048 * d) * c.tokens       # 6ND + attention, by hand
    assert plan.gpu_hours[c.key] == pytest.approx(cost / (312e12 * 0.35) / 3600, rel=1e-12)
    # one finished cell: its real wall time, and the MFU it reached for the others
    run = tmp_path / "runs" / "sims" / c.key
    run.mkdir(parents=True)
    tps = 4.0e4
    (run / "result.json").write_text(json.dumps({"wall_seconds": 7200.0, "tokens_per_second": tps}))
    plan2 = make_plan(study)
    assert plan2.basis.measured_cells == 1
    assert plan2.gpu_hours[c.key] == pytest.approx(7200.0 * 8 / 3600)
    mfu = cost / c.tokens * tps / 8 / 312e12
    other = plan2.cells[1]
    assert plan2.basis.mfu == pytest.approx(mfu)
    assert plan2.gpu_hours[other.key] == pytest.approx(other.cost_flops / (312e12 * mfu) / 3600)
    assert "measured" in plan2.basis.describe()


def test_plan_is_pure(tmp_path):
    data = sims_data()
    data["root"] = str(tmp_path / "runs")
    make_plan(parse_study(data, "x"))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("rule", ["grid", "tokens", "flops"])
def test_twin_budget_rule_in_a_tokens_per_param_grid(tmp_path, rule):
    """Issue 16 item 6: grid.twin_budget decides what a twin shares with its sibling: the grid's tokens
    per parameter on its own N (grid), the sibling's tokens, or the sibling's FLOPs."""
    data = yaml.safe_load(TINY.read_text())
    (tmp_path / "tiny-data").symlink_to(TINY.parent / "tiny-data")
    data["grid"] = {"tokens_per_param": [20, 80], "textless_twin": True, "twin_budget": rule}
    cells = expand(study_from(data, tmp_path))
    by = {}
    for c in cells:
        by.setdefault((c.member, c.setup), []).append(c)
    for (member, setup), twins in by.items():
        if setup != "textless":
            continue
        sibs = sorted(by[(member, "interleaved")], key=lambda c: c.tokens)
        twins = sorted(twins, key=lambda c: c.tokens)
        assert len(twins) == len(sibs) == 2
        for twin, sib in zip(twins, sibs):
            if rule == "grid":
                assert twin.tokens == round(sib.tokens / sib.params.total * twin.params.total)
                assert twin.tokens_per_param == pytest.approx(sib.tokens_per_param, rel=1e-3)
            elif rule == "tokens":
                assert twin.tokens == sib.tokens
            else:
                assert twin.flops == pytest.approx(sib.flops, rel=1e-4)
                assert twin.tokens > sib.tokens   # fewer parameters, more tokens for the same compute


def test_twin_budget_needs_twins(tmp_path):
    data = sims_data()
    data["grid"]["twin_budget"] = "flops"
    with pytest.raises(Exception, match=r"grid.twin_budget: applies to textless twins"):
        study_from(data, tmp_path)


def test_benchmark_setups_leave_text_items_out_of_textless_cells(tmp_path):
    """A benchmark limited to some setups (issue 19: text-item story cloze) is scored by those cells
    only; keys do not move for studies that never name the field."""
    data = yaml.safe_load(TINY.read_text())
    base = {c.key for c in expand(study_from(data, tmp_path, "a.yaml"))}
    data.setdefault("eval", {})["benchmarks"] = [
        {"name": "s", "manifest": "s.jsonl"}, {"name": "t", "manifest": "t.jsonl", "setups": ["interleaved"]}]
    cells = expand(study_from(data, tmp_path, "b.yaml"))
    for c in cells:
        names = [b.name for b in c.eval.benchmarks]
        assert names == (["s", "t"] if c.setup == "interleaved" else ["s"]), (c.setup, names)
    data["eval"]["benchmarks"] = [{"name": "s", "manifest": "s.jsonl"}]
    plain = {c.key for c in expand(study_from(data, tmp_path, "c.yaml"))}
    data["eval"]["benchmarks"] = [{"name": "s", "manifest": "s.jsonl", "setups": None}]
    assert {c.key for c in expand(study_from(data, tmp_path, "d.yaml"))} == plain != base
    data["eval"]["benchmarks"] = [{"name": "s", "manifest": "s.jsonl", "setups": ["speech"]}]
    with pytest.raises(Exception, match=r"eval.benchmarks\[0\].setups\[0\]"):
        study_from(data, tmp_path, "e.yaml")
