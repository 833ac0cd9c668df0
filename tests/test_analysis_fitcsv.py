"""The CSV entry point behind ``launch.py fit POINTS.csv``."""

import json

import numpy as np
import pytest

from analysis.errors import InputError
from analysis.fitcsv import fit_points_csv, read_points_csv

KEYS = {"E", "A", "B", "alpha", "beta", "a", "b", "G", "objective", "n_points", "intervals"}


def law(N, D):
    return 1.8 + 400 / N**0.34 + 2000 / D**0.37


def write_points(path, group=None, noise=0.003, seed=0, extra_cols=True):
    rng = np.random.default_rng(seed)
    N = np.repeat(np.geomspace(7e7, 7e9, 6), 5)
    D = N * np.tile(np.geomspace(5, 100, 5), 6)
    L = law(N, D) * np.exp(rng.normal(0, noise, N.size))
    lines = ["params,tokens,loss" + (",flops,group" if extra_cols else "")]
    for n, d, l in zip(N, D, L):
        row = f"{n:.6g},{d:.6g},{l:.8f}"
        if extra_cols:
            row += f",{6 * n * d:.6g},{group or 'all'}"
        lines.append(row)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_good_csv_gives_the_keys(tmp_path):
    p = write_points(tmp_path / "points.csv", extra_cols=False)
    out = fit_points_csv(p, n_bootstrap=20)
    assert KEYS <= set(out)
    json.dumps(out)
    assert out["n_points"] == 30
    assert out["alpha"] == pytest.approx(0.34, abs=0.05)
    for name in ("E", "A", "B", "alpha", "beta", "a", "b", "G"):
        assert set(out["intervals"][name]) == {"p2.5", "p10", "p90", "p97.5"}


def test_grouped_csv_fits_each_group(tmp_path):
    a = write_points(tmp_path / "a.csv", group="interleaved").read_text()
    b = write_points(tmp_path / "b.csv", group="textless", seed=1).read_text()
    one_size = "\n".join(f"1e9,{d:.6g},{law(1e9, d):.6f},{6e9 * d:.6g},text" for d in np.geomspace(1e10, 1e11, 8))
    p = tmp_path / "both.csv"
    p.write_text(a + "".join(b.splitlines(keepends=True)[1:]) + one_size + "\n")
    out = fit_points_csv(p, n_bootstrap=0)
    json.dumps(out)
    assert set(out["groups"]) == {"interleaved", "textless", "text"}
    assert KEYS <= set(out["groups"]["interleaved"])
    assert out["groups"]["interleaved"]["n_points"] == 30
    assert "OneModelSize" in out["groups"]["text"]["error"]


def test_params_col_selects_the_convention(tmp_path):
    p = tmp_path / "conv.csv"
    rows = ["params,params_nonembedding,tokens,loss"]
    for n in np.geomspace(7e7, 7e9, 6):
        for d in n * np.geomspace(5, 100, 5):
            rows.append(f"{n * 1.3:.6g},{n:.6g},{d:.6g},{law(n, d):.10f}")
    p.write_text("\n".join(rows) + "\n")
    out = fit_points_csv(p, params_col="params_nonembedding", n_bootstrap=0)
    assert out["alpha"] == pytest.approx(0.34, rel=1e-5)
    assert out["params_col"] == "params_nonembedding"


@pytest.mark.parametrize(
    "text, match",
    [
        ("params,tokens\n1e8,1e9\n", "missing column.*loss"),
        ("params,tokens,loss\n1e8,1e9,abc\n", "column loss.*'abc'"),
        ("params,tokens,loss\n1e8,-1e9,3.0\n", "column tokens"),
        ("params,tokens,loss\n1e8,1e9,\n", "column loss"),
        ("params,tokens,loss\n", "no data rows"),
        ("", "not a readable CSV"),
    ],
)
def test_bad_csv_raises_input_error_naming_the_file(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(InputError, match=match) as info:
        fit_points_csv(p)
    msg = str(info.value)
    assert str(p) in msg and "\n" not in msg
    assert isinstance(info.value, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_points_csv(tmp_path / "nope.csv")
