"""`plan` shows the epochs of each stream per cell (issue 22): from a declared data.unique_tokens, else
the packed-data cache once built; declaring unique tokens changes no cell key."""
import json
from pathlib import Path

import pytest
import yaml

from fixtures_data import make_corpus, tiny_study

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, data: dict, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _plan(cli, path: Path) -> list[dict]:
    res = cli("plan", str(path), "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_sims_declared_total(tmp_path, cli):
    data = yaml.safe_load((ROOT / "examples" / "sims.yaml").read_text())
    assert float(data["data"]["unique_tokens"]) == 11.08e9           # SlamKit's scaling config
    rows = _plan(cli, ROOT / "examples" / "sims.yaml")
    for r in rows:
        assert r["epochs"] == {"all": pytest.approx(r["tokens"] / 11.08e9)}
    top = max(rows, key=lambda r: r["epochs_max"])
    assert top["member"] == "1.5B" and top["tokens"] == pytest.approx(74.5e9, rel=1e-3)
    assert top["epochs_max"] == pytest.approx(6.72, abs=0.005)
    text = cli("plan", str(ROOT / "examples" / "sims.yaml")).stdout
    assert "WARNING: 1 of 16 cells repeat a stream more than 4 times" in text and "up to 6.72 epochs" in text
    # the declaration (and the warning threshold) is planning only: the same keys without it
    del data["data"]["unique_tokens"]
    bare = _plan(cli, _write(tmp_path, data))
    assert [r["key"] for r in bare] == [r["key"] for r in rows]
    assert all(r["epochs"] == {"all": None} or set(r["epochs"].values()) == {None} for r in bare)
    data["data"].update(unique_tokens={"speech": 3e9}, warn_epochs=1)
    per = _plan(cli, _write(tmp_path, data))
    assert [r["key"] for r in per] == [r["key"] for r in rows]
    share = data["data"]["mix"]["speech"]
    for r in per:
        assert r["epochs"]["speech"] == pytest.approx(r["tokens"] * share / 3e9)
        assert r["epochs"]["text"] is None and r["unique_tokens_source"]["text"] == "unknown"
    assert "WARNING" in cli("plan", str(_write(tmp_path, data))).stdout


@pytest.mark.parametrize("value,message", [
    (-5, "data.unique_tokens: expected a token count > 0, got -5"),
    ({"speech": 0}, "data.unique_tokens.speech: expected a token count > 0"),
    ({"audio": 5}, "data.unique_tokens.audio: unknown stream; expected one of text, interleaved, speech"),
    ("lots", "data.unique_tokens: expected a number or a mapping"),
    ({}, "data.unique_tokens: expected a number or a mapping of streams"),
])
def test_bad_unique_tokens_is_one_line(tmp_path, cli, value, message):
    data = yaml.safe_load((ROOT / "examples" / "sims.yaml").read_text())
    data["data"]["unique_tokens"] = value
    res = cli("plan", str(_write(tmp_path, data)))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert message in res.stderr and not (tmp_path / "runs").exists()


def test_epochs_from_the_cache_match_the_run(tmp_path, cli):
    corpus = make_corpus(tmp_path / "corpus")
    study = _write(tmp_path, tiny_study(tmp_path, corpus, "llama", tokens=6000))
    (before,) = _plan(cli, study)
    assert set(before["epochs"].values()) == {None}                  # nothing built yet
    res = cli("train", str(study), "--cell", "tiny")
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads((tmp_path / "runs" / "t" / before["key"] / "result.json").read_text())
    (after,) = _plan(cli, study)
    assert after["key"] == before["key"]
    assert set(after["unique_tokens_source"].values()) == {"cache"}
    assert after["unique_tokens"] == result["unique_tokens"]         # the same windows the run read
    mix = {"text": 0.3, "interleaved": 0.4, "speech": 0.3}
    for s, e in after["epochs"].items():
        assert e == pytest.approx(6000 * mix[s] / result["unique_tokens"][s])
    # the run's own count: windows read from each stream / its windows; 24 steps of 8 windows of 32 tokens
    # were read (the last step's surplus labels are masked, but its windows were drawn)
    assert sum(result["epochs"][s] * result["unique_tokens"][s] for s in mix) == pytest.approx(24 * 8 * 32)
