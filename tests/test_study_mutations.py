"""Fifty study files broken at random (keys dropped, renamed or added, values of the wrong type or out of
range, sections replaced by scalars) through `plan`: each either plans (the mutation left it valid) or
gets one line naming what is wrong and exit code 2; never a traceback."""
import contextlib
import copy
import io
import random

import pytest
import yaml

import launch
from fixtures_data import tiny_copy

BAD_VALUES = ["x", -1, 0, [], {}, None, 1e30, True, "2e18", -0.5, [1, "a"], {"k": 1}]


def _paths(node, prefix=()):
    """Every (path, value) of a nested dict/list."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _parent(data, path):
    node = data
    for k in path[:-1]:
        node = node[k]
    return node


def mutate(data: dict, rng: random.Random) -> tuple[dict, str]:
    data = copy.deepcopy(data)
    paths = [p for p, _ in _paths(data) if p and p[0] != "root"]
    path = rng.choice(paths)
    parent, key = _parent(data, path), path[-1]
    op = rng.choice(["drop", "value", "unknown", "rename", "scalar"])
    if op == "drop" and isinstance(parent, dict):
        del parent[key]
    elif op == "unknown":
        target = parent if isinstance(parent, dict) else data
        target[f"unexpected_{rng.randint(0, 99)}"] = 1
    elif op == "rename" and isinstance(parent, dict):
        parent[str(key) + "s"] = parent.pop(key)
    elif op == "scalar" and isinstance(parent[key], (dict, list)):
        parent[key] = rng.choice(["oops", 3])
    else:
        op = "value"
        parent[key] = copy.deepcopy(rng.choice(BAD_VALUES))
    return data, f"{op} {'.'.join(map(str, path))}"


@pytest.mark.parametrize("seed", range(50))
def test_mutated_study_is_one_line_or_valid(tmp_path, seed):
    path = tiny_copy(tmp_path)
    original = yaml.safe_load(path.read_text())
    data, what = mutate(original, random.Random(seed))
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = launch.main(["plan", str(path)])
        except SystemExit as e:   # argparse-level exits only
            code = e.code
    lines = err.getvalue().strip().splitlines()
    assert code in (0, 2), (what, code, err.getvalue())
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("error: "), (what, err.getvalue())
    assert not (tmp_path / "runs").exists(), what          # plan writes nothing, valid or not
