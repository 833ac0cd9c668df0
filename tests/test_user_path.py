"""Issue 16, the user's path: bad data found before compute is spent (preflight), reports of this study
only, `recommend` per setup, one key per distinct cell, and the small things a user trips on."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml
from fixtures_data import tiny_copy

import launch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
ROOT = Path(__file__).resolve().parents[1]


def _jsonl(rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def _unit_row(**over):
    row = {"file_name": "audio/utt0000.flac", "units": [1, 2, 3], "duration": [1, 2, 1]}
    row.update(over)
    return {k: v for k, v in row.items() if v is not None}


def _pair(**over):
    pair = {"id": "w0", "positive": {"units": [1, 2]}, "negative": {"units": [3, 4]}}
    pair.update(over)
    return {k: v for k, v in pair.items() if v is not None}


def _write(rel: str, text: str | bytes):
    def edit(folder: Path, study: dict) -> str:
        path = folder / rel
        if path.is_dir():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return rel
    return edit


def _remove(rel: str):
    def edit(folder: Path, study: dict) -> str:
        path = folder / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        return rel
    return edit


def _align(**over):
    doc = {"file_name": "audio/utt0000.flac", "aligned_text": [["little", 0.0, 0.36], [" tree", 0.36, 0.6]]}
    doc.update(over)
    return json.dumps({k: v for k, v in doc.items() if v is not None})


def _tokens_corpus(row):
    def edit(folder: Path, study: dict) -> str:
        (folder / "tiny-data" / "tokens.jsonl").write_text(_jsonl([row]))
        study["data"]["corpora"].append({"path": "tiny-data/tokens.jsonl", "format": "tokens"})
        return "tiny-data/tokens.jsonl"
    return edit


def _empty_align_dir(folder: Path, study: dict) -> str:
    shutil.rmtree(folder / "tiny-data" / "align")
    (folder / "tiny-data" / "align").mkdir()
    return "tiny-data/align"


def _stray_align(folder: Path, study: dict) -> str:
    shutil.rmtree(folder / "tiny-data" / "align")
    (folder / "tiny-data" / "align").mkdir()
    (folder / "tiny-data" / "align" / "other.json").write_text(_align(file_name="x/other.flac"))
    return "tiny-data/align"


def _empty_tokenizer(folder: Path, study: dict) -> str:
    for f in (folder / "tiny-data" / "tokenizer").iterdir():
        f.unlink()
    return "tiny-data/tokenizer"


def _retarget(section: str, rel: str):
    """Point the study at a file that is not there (a typo in the study file)."""
    def edit(folder: Path, study: dict) -> str:
        if section == "units":
            study["data"]["corpora"][0]["path"] = rel
        elif section == "align":
            study["data"]["corpora"][0]["alignments"] = rel
        elif section == "text":
            study["data"]["corpora"][1]["path"] = rel
        elif section == "manifest":
            study["eval"]["benchmarks"][0]["manifest"] = rel
        else:
            study["families"]["ladder"]["tokenizer"] = rel
        return rel
    return edit


U, T, A, M = "tiny-data/units.jsonl", "tiny-data/text.jsonl", "tiny-data/align/utt0000.json", "tiny-data/swuggy.jsonl"
# (name, edit): each leaves exactly one input broken; the edit returns the path the error must name
BROKEN = [
    ("units-missing", _remove(U)),
    ("units-typo", _retarget("units", "tiny-data/unit.jsonl")),
    ("units-empty", _write(U, "")),
    ("units-blank-lines", _write(U, "\n\n  \n")),
    ("units-not-json", _write(U, "{file_name: x}\n")),
    ("units-array-row", _write(U, "[1, 2, 3]\n")),
    ("units-no-file-name", _write(U, _jsonl([_unit_row(file_name=None)]))),
    ("units-empty-file-name", _write(U, _jsonl([_unit_row(file_name="")]))),
    ("units-no-units", _write(U, _jsonl([_unit_row(units=None)]))),
    ("units-empty-units", _write(U, _jsonl([_unit_row(units=[], duration=[])]))),
    ("units-units-string", _write(U, _jsonl([_unit_row(units="1 2 3")]))),
    ("units-id-too-large", _write(U, _jsonl([_unit_row(units=[1, 50, 3])]))),
    ("units-id-negative", _write(U, _jsonl([_unit_row(units=[1, -1, 3])]))),
    ("units-id-float", _write(U, _jsonl([_unit_row(units=[1, 2.5, 3])]))),
    ("units-id-bool", _write(U, _jsonl([_unit_row(units=[1, True, 3])]))),
    ("units-no-duration", _write(U, _jsonl([_unit_row(duration=None)]))),
    ("units-duration-length", _write(U, _jsonl([_unit_row(duration=[1, 2])]))),
    ("units-duration-zero", _write(U, _jsonl([_unit_row(duration=[1, 0, 1])]))),
    ("units-bad-utf8", _write(U, b'{"file_name": "\xff\xfe"}\n')),
    ("units-bad-row-later", _write(U, _jsonl([_unit_row()] * 5 + [_unit_row(units=[99])]))),
    ("text-missing", _remove(T)),
    ("text-empty", _write(T, "")),
    ("text-no-text-field", _write(T, _jsonl([{"body": "a cat"}]))),
    ("text-not-string", _write(T, _jsonl([{"text": 42}]))),
    ("text-wrong-suffix", _retarget("text", "tiny-data/text.csv")),
    ("align-folder-missing", _remove("tiny-data/align")),
    ("align-folder-empty", _empty_align_dir),
    ("align-not-json", _write(A, "not json")),
    ("align-no-aligned-text", _write(A, _align(aligned_text=None))),
    ("align-word-not-triple", _write(A, _align(aligned_text=[["little", 0.0]]))),
    ("align-end-before-start", _write(A, _align(aligned_text=[["little", 0.5, 0.2]]))),
    ("align-matches-no-row", _stray_align),
    ("manifest-missing", _remove(M)),
    ("manifest-typo", _retarget("manifest", "tiny-data/swugy.jsonl")),
    ("manifest-empty", _write(M, "")),
    ("manifest-no-negative", _write(M, _jsonl([_pair(negative=None)]))),
    ("manifest-unit-out-of-range", _write(M, _jsonl([_pair(positive={"units": [1, 500]})]))),
    ("manifest-duplicate-id", _write(M, _jsonl([_pair(), _pair()]))),
    ("manifest-bad-item", _write(M, _jsonl([_pair(positive={"audio": [1, 2]})]))),
    ("manifest-not-json", _write(M, "{'id': 'w0'}\n")),
    ("manifest-text-for-textless-twin", _write(M, _jsonl([_pair(positive={"text": "the cat"},
                                                                negative={"text": "cat the"})]))),
    ("tokenizer-missing", _remove("tiny-data/tokenizer")),
    ("tokenizer-no-files", _empty_tokenizer),
    ("tokenizer-bad-json", _write("tiny-data/tokenizer/tokenizer.json", "{")),
    ("tokens-unit-out-of-range", _tokens_corpus({"file_name": "a", "audio_repr": "<speech><Un1><Un50>"})),
    ("tokens-no-audio-repr", _tokens_corpus({"file_name": "a", "repr": "<Un1>"})),
]


@pytest.fixture(scope="module")
def good_tiny(tmp_path_factory) -> Path:
    return tiny_copy(tmp_path_factory.mktemp("good"))


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_forty_broken_data_files_are_one_line_each_before_anything_is_written(good_tiny, tmp_path, capsys):
    assert len(BROKEN) >= 40
    for name, edit in BROKEN:
        folder = tmp_path / name
        shutil.copytree(good_tiny.parent / "tiny-data", folder / "tiny-data")
        study = yaml.safe_load(good_tiny.read_text())
        study["root"] = str(folder / "runs")
        named = edit(folder, study)
        path = folder / "study.yaml"
        path.write_text(yaml.safe_dump(study, sort_keys=False))
        before = _files(folder)
        for command in (["submit", str(path), "--dry-run"], ["plan", str(path)]):
            code = launch.main(command)
            out, err = capsys.readouterr()
            assert code == 2, (name, command[0], out[-500:], err[-500:])
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
            assert named.split("/")[-1] in lines[0], (name, err)
            assert "Traceback" not in err and "np.int64" not in err, (name, err)
        assert _files(folder) == before, name  # nothing written: no run dir, no cache, no mlflow.db


def test_good_tiny_study_passes_the_preflight(good_tiny, capsys):
    assert launch.main(["submit", str(good_tiny), "--dry-run"]) == 0
    assert "would submit 12 of 12 cells" in capsys.readouterr().out


def test_train_with_a_missing_corpus_writes_nothing(tmp_path, capsys):
    study = tiny_copy(tmp_path)
    (tmp_path / "tiny-data" / "units.jsonl").unlink()
    before = _files(tmp_path)
    code = launch.main(["train", str(study), "--cell", _first_key(study)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "units.jsonl" in err, err
    assert _files(tmp_path) == before


def _first_key(study: Path) -> str:
    from sweeps.grid import expand
    from sweeps.study import load_study

    return expand(load_study(study))[0].key


# ---------------------------------------------------------------- a trained tiny study (items 1, 2, 6)

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """examples/tiny.yaml trained through `submit --executor local` (about two minutes on two cores)."""
    from sweeps.status import collect
    from sweeps.study import load_study

    folder = tmp_path_factory.mktemp("trained")
    study_path = tiny_copy(folder, lambda d: d.update(tracking={"enabled": False}))
    assert launch.main(["submit", str(study_path), "--executor", "local"]) == 0
    study = load_study(study_path)
    deadline = time.time() + 900
    while time.time() < deadline:
        states = {r.state for r in collect(study)}
        if states <= {"DONE", "FAILED"}:
            break
        time.sleep(3)
    assert states == {"DONE"}, states
    return study_path


def _plan_rows(study_path: Path) -> list[dict]:
    from sweeps.plan import cell_rows, make_plan
    from sweeps.study import load_study

    return cell_rows(make_plan(load_study(study_path)))


def test_recommend_names_each_groups_own_member_counts(trained, capsys):
    """Item 1: every member `recommend` names has the parameter count `plan --json` gives it in the
    group's own setup (the textless twin's 127k is not the interleaved d64's 145k)."""
    sizes = {(r["family"], r["member"], r["setup"]): r["params_total"] for r in _plan_rows(trained)}
    assert sizes[("ladder", "d64", "interleaved")] != sizes[("ladder", "d64", "textless")]
    for budget in ("1e8", "1e11", "1e14"):
        assert launch.main(["recommend", str(trained), "--budget", budget, "--bootstrap", "0", "--json"]) == 0
        rec = json.loads(capsys.readouterr().out)
        assert set(rec["groups"]) == {"ladder / interleaved", "ladder / textless"}
        for g in rec["groups"].values():
            (pick,) = g["members"].values()
            assert pick["params"] == sizes[("ladder", pick["member"], g["group"]["setup"])], (budget, g["group"])
    assert launch.main(["recommend", str(trained), "--budget", "1e14", "--bootstrap", "0"]) == 0
    text = capsys.readouterr().out
    assert f"d64 ({sizes[('ladder', 'd64', 'interleaved')] / 1e5:.3g}e+05 params" in text


def test_report_recommend_and_status_keep_to_this_study_file(trained, tmp_path, capsys):
    """Item 2: a cell of an edited copy of the study (another lr) trained into the same root is named
    as not in this study and left out of report, recommend and status; --all-cells takes it in."""
    data = yaml.safe_load(trained.read_text())
    data["training"]["lr"] = 2e-3
    edited = trained.parent / "tiny-lr.yaml"
    edited.write_text(yaml.safe_dump(data, sort_keys=False))
    stray = _plan_rows(edited)[0]["key"]
    assert stray not in {r["key"] for r in _plan_rows(trained)}
    assert launch.main(["train", str(edited), "--cell", stray]) == 0
    capsys.readouterr()
    out_dir = tmp_path / "report"
    assert launch.main(["report", str(trained), "--bootstrap", "0", "--no-mlflow", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "report of 12 runs" in out and f"not in this study: 1 run dir(s)" in out and stray in out
    assert "12 finished of 12 in the study" in (out_dir / "report.md").read_text()
    fits = json.loads((out_dir / "fits.json").read_text())
    assert stray not in json.dumps(fits)
    assert launch.main(["recommend", str(trained), "--budget", "1e11", "--bootstrap", "0", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["not_in_study"] == [stray]
    assert sum(g["n_runs"] for g in rec["groups"].values()) == 12
    assert launch.main(["status", str(trained)]) == 0
    out = capsys.readouterr().out
    assert stray not in out.split("not in this study")[0] and "DONE 12" in out and stray in out
    assert launch.main(["status", str(trained), "--all-cells"]) == 0
    out = capsys.readouterr().out
    assert "DONE 13" in out and "not in this study" not in out
    all_dir = tmp_path / "all"
    assert launch.main(["report", str(trained), "--bootstrap", "0", "--no-mlflow", "--out", str(all_dir),
                        "--all-cells"]) == 0
    assert "report of 13 runs" in capsys.readouterr().out


def test_status_shows_each_runs_own_speed(trained, capsys):
    """Item 6: tok/s of a DONE cell is its result.json's, not its last (partial) step's."""
    from sweeps.status import collect
    from sweeps.study import load_study

    for row in collect(load_study(trained)):
        result = json.loads((trained.parent / "runs" / "tiny" / row.key / "result.json").read_text())
        assert row.tokens_per_second == pytest.approx(result["tokens_per_second"])
