"""Malformed study files: one line on stderr naming the key path and what was expected, exit code 2,
nothing written."""
import copy

import pytest
import yaml

BASE = {
    "name": "bad",
    "families": {
        "ladder": {"base": {"model_type": "llama", "vocab_size": 256, "hidden_size": 32, "intermediate_size": 64,
                            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2},
                   "members": {"d32": {}, "d64": {"hidden_size": 64}}, "init": "random"},
        "qwen2.5": {"members": ["0.5B"]},
    },
    "grid": {"flops": [1e18]},
}


def _set(tree, dotted, value):
    parts = dotted.split("/")
    for p in parts[:-1]:
        tree = tree.setdefault(p, {})
    if value is _DEL:
        del tree[parts[-1]]
    else:
        tree[parts[-1]] = value


_DEL = object()

# (id, edits {dotted path: value} or raw text, substring the error must contain)
CASES = [
    ("unknown-top-key", {"nmae": "x"}, "nmae: unknown key"),
    ("unknown-nested-key", {"training/lrr": 1e-3}, "training.lrr: unknown key; expected one of context"),
    ("wrong-type", {"training/context": "long"}, "training.context: expected an integer, got 'long'"),
    ("bool-for-int", {"data/units": True}, "data.units: expected an integer"),
    ("negative-budget", {"grid/flops": [1e18, -2e18]}, "grid.flops[1]: expected a number > 0"),
    ("zero-tokens", {"grid/flops": _DEL, "grid/tokens": [0]}, "grid.tokens[0]: expected a number > 0"),
    ("empty-grid", {"grid/flops": []}, "grid.flops: expected at least one entry"),
    ("no-grid-mode", {"grid/flops": _DEL}, "grid: expected exactly one of tokens, tokens_per_param, flops; got none"),
    ("two-grid-modes", {"grid/tokens": [1e9]}, "got tokens, flops"),
    ("duplicate-budget", {"grid/flops": [1e18, 1e18]}, "grid.flops[1]: duplicate budget"),
    ("unknown-member", {"families/qwen2.5/members": ["0.5B", "9B"]},
     "families.qwen2.5.members[1]: unknown member '9B' of catalog family qwen2.5; expected one of 0.5B"),
    ("duplicate-member", {"families/qwen2.5/members": ["0.5B", "0.5B"]},
     "families.qwen2.5.members[1]: duplicate member '0.5B'"),
    ("duplicate-member-by-id", {"families/qwen2.5/members": ["0.5B", "Qwen/Qwen2.5-0.5B"]},
     "families.qwen2.5.members[1]: duplicate member '0.5B'"),
    ("empty-members", {"families/qwen2.5/members": []}, "families.qwen2.5.members: expected at least one entry"),
    ("bad-init", {"families/qwen2.5/init": "pretrained"}, "families.qwen2.5.init: expected one of textlm, random"),
    ("bad-setup", {"families/qwen2.5/setup": "speech"}, "families.qwen2.5.setup: expected one of interleaved"),
    ("ladder-textlm", {"families/ladder/init": "textlm"}, "families.ladder.init: a from-scratch ladder has no"),
    ("ladder-typo", {"families/ladder/members/d64": {"hiden_size": 64}},
     "families.ladder.members.d64.hiden_size: unknown config key"),
    ("ladder-bad-heads", {"families/ladder/members/d64": {"num_key_value_heads": 3}},
     "families.ladder.members.d64.num_key_value_heads: expected a positive divisor"),
    ("mix-sum", {"data/mix": {"text": 0.5, "interleaved": 0.5, "speech": 0.5}},
     "data.mix: expected stream shares that sum to 1, got 1.5"),
    ("min-above-max", {"grid/min_tokens_per_param": 50, "grid/max_tokens_per_param": 10},
     "grid.min_tokens_per_param: expected at most max_tokens_per_param"),
    ("all-filtered", {"grid/max_tokens_per_param": 1e-9}, "grid: no cells"),
    ("missing-name", {"name": _DEL}, "name: missing; expected a string"),
    ("bad-name", {"name": "a/b"}, "name: expected letters, digits"),
    ("variant-bad-path", {"grid/variants": {"v1": {"training.lrr": 1.0}}},
     "grid.variants.v1.training.lrr: unknown override path"),
    ("variant-bad-value", {"grid/variants": {"v1": {"training.lr": -1}}}, "grid.variants.v1.training.lr: expected a number > 0"),
    ("gpu-type", {"executor/gpu_type": "tpu9"}, "executor.gpu_type: expected one of a100"),
    ("mfu-range", {"executor/assumed_mfu": 1.5}, "executor.assumed_mfu: expected a number <= 1"),
    ("min-lr-above-lr", {"training/min_lr": 1.0}, "training.min_lr: expected at most lr"),
    ("missing-local-member", {"families/local": {"members": ["./no/such/model"]}},
     "families.local.members[0]: unknown member './no/such/model'"),
    ("hf-id-offline", {"families/other": {"members": ["someorg/some-model"]}},
     "families.other.members[0]: 'someorg/some-model' is not a catalog member"),
    ("tokenizer-resize-unknown-len", {"families/pythia": {"members": ["70M"]}, "data/vocab_resize": "tokenizer"},
     "data.vocab_resize: 'tokenizer' needs the tokenizer length"),
    ("yaml-syntax", "name: x\nfamilies: [a, b\n", "not valid YAML at line"),
    ("top-level-list", "- a\n- b\n", "expected a mapping of study sections at the top level"),
]


@pytest.mark.parametrize("case,edits,expected", CASES, ids=[c[0] for c in CASES])
def test_malformed_study(tmp_path, cli, case, edits, expected):
    study = tmp_path / "study.yaml"
    if isinstance(edits, str):
        study.write_text(edits)
    else:
        data = copy.deepcopy(BASE)
        for k, v in edits.items():
            _set(data, k, v)
        study.write_text(yaml.safe_dump(data))
    before = sorted(p.name for p in tmp_path.iterdir())
    res = cli("plan", str(study), cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert str(study) in lines[0] and expected in lines[0], lines[0]
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_missing_study_file(tmp_path, cli):
    res = cli("plan", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert res.returncode == 2 and "nope.yaml: cannot read the study file" in res.stderr


def test_base_study_is_valid(tmp_path, cli):
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(BASE))
    res = cli("plan", str(study), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
