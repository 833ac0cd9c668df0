"""Corpus readers: good files round-trip, every bad row is a one-line InputError naming file:line and field."""
import json

import pytest

from scaling.corpus import (Alignment, UnitRow, alignment_key, read_alignments, read_text, read_token_rows, read_units,
                            split_repr, unit_times)
from scaling.errors import InputError


def write_jsonl(path, rows):
    """Rows are dicts (dumped) or raw strings (written as is)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def one_line_error(excinfo, where, field=None):
    msg = str(excinfo.value)
    assert "\n" not in msg
    assert where in msg, msg
    if field is not None:
        assert f"field '{field}" in msg, msg
    return msg


GOOD_UNIT = {"file_name": "a/b/x.flac", "units": [0, 499, 7], "duration": [1, 2, 3]}


# ------------------------------------------------------------------ unit rows

def test_units_round_trip(tmp_path):
    rows = [GOOD_UNIT, {"file_name": "y.wav", "units": [5], "duration": [9], "aligned_text": [], "extra": 1}]
    path = tmp_path / "features.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n\n   \n" + json.dumps(rows[1]) + "\n")
    got = list(read_units(path, 500))
    assert got == [UnitRow("a/b/x.flac", [0, 499, 7], [1, 2, 3]), UnitRow("y.wav", [5], [9])]
    assert unit_times(got[0].duration) == [0.0, 0.04, 0.12]


BAD_UNIT_ROWS = [
    # (row, field named or None, words the message must hold)
    ('{"file_name": "x", "units": [1], ', None, "invalid JSON"),
    ("[1, 2, 3]", None, "not a JSON object"),
    ({"units": [1], "duration": [1]}, "file_name", "non-empty string"),
    ({"file_name": "", "units": [1], "duration": [1]}, "file_name", "non-empty string"),
    ({"file_name": "x", "duration": [1]}, "units", "field missing"),
    ({"file_name": "x", "units": [], "duration": []}, "units", "non-empty list"),
    ({"file_name": "x", "units": "1 2", "duration": [1]}, "units", "'1 2'"),
    ({"file_name": "x", "units": [1, 500], "duration": [1, 1]}, "units[1]", "[0, 500)"),
    ({"file_name": "x", "units": [-1], "duration": [1]}, "units[0]", "got -1"),
    ({"file_name": "x", "units": [1, True], "duration": [1, 1]}, "units[1]", "got True"),
    ({"file_name": "x", "units": [1.0], "duration": [1]}, "units[0]", "got 1.0"),
    ({"file_name": "x", "units": [1, 2], "duration": [1]}, "duration", "expected 2 frame counts"),
    ({"file_name": "x", "units": [1, 2], "duration": [1, 0]}, "duration[1]", "positive"),
    ({"file_name": "x", "units": [1], "duration": [-3]}, "duration[0]", "positive"),
    ({"file_name": "x", "units": [1], "duration": None}, "duration", "got None"),
]


@pytest.mark.parametrize("bad,field,words", BAD_UNIT_ROWS)
def test_bad_unit_rows(tmp_path, bad, field, words):
    path = write_jsonl(tmp_path / "f.jsonl", [GOOD_UNIT, "", bad])  # bad row sits on line 3
    rows = read_units(path, 500)
    assert next(rows) == UnitRow("a/b/x.flac", [0, 499, 7], [1, 2, 3])
    with pytest.raises(InputError) as exc:
        next(rows)
    msg = one_line_error(exc, f"{path}:3: ", field)
    assert words in msg


def test_long_values_are_shortened(tmp_path):
    path = write_jsonl(tmp_path / "f.jsonl", [{"file_name": "x", "units": list(range(1000)), "duration": [1]}])
    with pytest.raises(InputError) as exc:
        list(read_units(path, 5000))
    assert len(str(exc.value)) < 200


def test_missing_file_and_bad_utf8(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_units(tmp_path / "nope.jsonl", 500)  # raised at once, before iteration
    path = tmp_path / "f.jsonl"
    path.write_bytes(json.dumps(GOOD_UNIT).encode() + b"\n\xff\xfe\n")
    with pytest.raises(InputError) as exc:
        list(read_units(path, 500))
    assert "invalid UTF-8" in one_line_error(exc, f"{path}:2:")


# ------------------------------------------------------------------ alignments

ALIGN_X = {"file_name": "x.flac", "aligned_text": [[" the", 0.0, 0.4], [" cat", 0.4, 0.8]], "text": " the cat"}
ALIGN_Y = {"file_name": "sub/y.wav", "aligned_text": [[" hi", 0, 1]], "text": " hi", "lang": "en"}


def test_alignments_directory_and_jsonl_agree(tmp_path):
    d = tmp_path / "align"
    d.mkdir()
    (d / "x.json").write_text(json.dumps(ALIGN_X, indent=2))
    (d / "y.json").write_text(json.dumps(ALIGN_Y))
    (d / "notes.txt").write_text("ignored")
    from_dir = read_alignments(d)
    from_jsonl = read_alignments(write_jsonl(tmp_path / "a.jsonl", [ALIGN_X, ALIGN_Y]))
    assert from_dir == from_jsonl
    assert from_dir == {
        "x": Alignment("x.flac", [(" the", 0.0, 0.4), (" cat", 0.4, 0.8)], " the cat"),
        "y": Alignment("sub/y.wav", [(" hi", 0.0, 1.0)], " hi"),
    }
    # a unit row's file_name matches its side-car by stem
    assert from_dir[alignment_key(GOOD_UNIT["file_name"])] == from_dir["x"]


def test_alignment_text_defaults_to_joined_words(tmp_path):
    row = {"file_name": "z", "aligned_text": [[" a", 0, 0.1], [" b", 0.1, 0.2]]}
    assert read_alignments(write_jsonl(tmp_path / "a.jsonl", [row]))["z"].text == " a b"


def _word_row(words, **extra):
    return {"file_name": "x.flac", "aligned_text": words, "text": "", **extra}


BAD_ALIGNMENTS = [
    (_word_row([[" a", -0.1, 0.2]]), "aligned_text[0]", "start time >= 0"),
    (_word_row([[" a", 0.5, 0.2]]), "aligned_text[0]", "end time >= its start"),
    (_word_row([[" a", 0.5, 0.6], [" b", 0.4, 0.7]]), "aligned_text[1]", "previous word"),
    (_word_row([[" a", 0.0]]), "aligned_text[0]", "triple"),
    (_word_row([[7, 0.0, 1.0]]), "aligned_text[0]", "string"),
    (_word_row([[" a", "0", 1.0]]), "aligned_text[0]", "finite start"),
    (_word_row([[" a", 0.0, float("inf")]]), "aligned_text[0]", "finite end"),
    (_word_row([[" a", True, 1.0]]), "aligned_text[0]", "got True"),
    (_word_row({"w": 1}), "aligned_text", "list of [word"),
    ({"file_name": "x", "text": ""}, "aligned_text", "field missing"),
    (_word_row([], text=3), "text", "a string"),
    ({"aligned_text": [], "text": ""}, "file_name", "non-empty string"),
]


@pytest.mark.parametrize("bad,field,words", BAD_ALIGNMENTS)
def test_bad_alignment_rows_jsonl(tmp_path, bad, field, words):
    path = write_jsonl(tmp_path / "a.jsonl", [ALIGN_Y, bad])
    with pytest.raises(InputError) as exc:
        read_alignments(path)
    assert words in one_line_error(exc, f"{path}:2: ", field)


@pytest.mark.parametrize("bad,field,words", BAD_ALIGNMENTS[:3])
def test_bad_alignment_file_in_directory_names_line_1(tmp_path, bad, field, words):
    (tmp_path / "x.json").write_text(json.dumps(bad, indent=2))
    with pytest.raises(InputError) as exc:
        read_alignments(tmp_path)
    assert words in one_line_error(exc, f"{tmp_path / 'x.json'}:1: ", field)


def test_alignment_directory_errors(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(InputError) as exc:
        read_alignments(tmp_path)
    assert "invalid JSON" in one_line_error(exc, f"{tmp_path / 'x.json'}:1: ")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no <stem>.json"):
        read_alignments(empty)
    with pytest.raises(InputError, match="no such file or directory"):
        read_alignments(tmp_path / "missing")


def test_duplicate_stems_name_both(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [ALIGN_X, ALIGN_Y, {**ALIGN_X, "file_name": "other/dir/x.wav"}])
    with pytest.raises(InputError) as exc:
        read_alignments(path)
    msg = one_line_error(exc, f"{path}:3: ", "file_name")
    assert f"{path}:1" in msg and "'x'" in msg


# ------------------------------------------------------------------ token rows

def test_token_rows_round_trip(tmp_path):
    rows = [{"file_name": "a", "audio_repr": "<text> the cat<speech><Un3><Un499><text> sat"},
            {"file_name": "b", "audio_repr": "<Un0><Un1>", "n": 2},
            {"file_name": "c", "audio_repr": "plain text only"}]
    got = list(read_token_rows(write_jsonl(tmp_path / "t.jsonl", rows), n_units=500))
    assert got == [(r["file_name"], r["audio_repr"]) for r in rows]
    assert [split_repr(r) for _, r in got] == [
        [("text", " the cat"), ("speech", [3, 499]), ("text", " sat")],
        [("speech", [0, 1])],
        [("text", "plain text only")],
    ]


@pytest.mark.parametrize("bad,field,words", [
    ({"file_name": "a"}, "audio_repr", "field missing"),
    ({"file_name": "a", "audio_repr": ""}, "audio_repr", "non-empty string"),
    ({"file_name": "a", "audio_repr": ["<Un1>"]}, "audio_repr", "non-empty string"),
    ({"audio_repr": "<Un1>"}, "file_name", "field missing"),
    ({"file_name": "a", "audio_repr": "<speech><Un1><Un500>"}, "audio_repr", "'<Un500>'"),
])
def test_bad_token_rows(tmp_path, bad, field, words):
    path = write_jsonl(tmp_path / "t.jsonl", [{"file_name": "ok", "audio_repr": "<Un1>"}, bad])
    with pytest.raises(InputError) as exc:
        list(read_token_rows(path, n_units=500))
    assert words in one_line_error(exc, f"{path}:2: ", field)


def test_split_repr_details():
    # markers only separate; units are speech and everything else is text
    assert split_repr("<speech><Un1> <Un2><text><text> a<speech>") == [
        ("speech", [1]), ("text", " "), ("speech", [2]), ("text", " a")]
    # not unit tokens of the vocabulary: leading zeros, unclosed, negative
    assert split_repr("<Un007><Un3<Un-1>") == [("text", "<Un007><Un3<Un-1>")]
    assert split_repr("") == []


# ------------------------------------------------------------------ text

def test_text_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "One story.", "id": 1}, "", {"text": "Two.\nLines."}])
    assert list(read_text(path)) == ["One story.", "Two.\nLines."]
    bad = write_jsonl(tmp_path / "b.jsonl", [{"text": "ok"}, {"text": ""}])
    with pytest.raises(InputError) as exc:
        list(read_text(bad))
    assert "non-empty string" in one_line_error(exc, f"{bad}:2: ", "text")
    bad2 = write_jsonl(tmp_path / "c.jsonl", [{"body": "x"}])
    with pytest.raises(InputError) as exc:
        list(read_text(bad2))
    one_line_error(exc, f"{bad2}:1: ", "text")


def test_text_txt_paragraphs_and_lines(tmp_path):
    para = tmp_path / "p.txt"
    para.write_text("\n\nFirst doc line one.\nline two.\n\n  \n\nSecond doc.\n\n")
    assert list(read_text(para)) == ["First doc line one.\nline two.", "Second doc."]
    lines = tmp_path / "l.txt"
    lines.write_text("\ndoc one\ndoc two\ndoc three\n\n")
    assert list(read_text(lines)) == ["doc one", "doc two", "doc three"]
    with pytest.raises(InputError, match="expected a .jsonl or .txt"):
        read_text(write_jsonl(tmp_path / "x.csv", ["a,b"]))
