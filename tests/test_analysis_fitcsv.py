"""The CSV entry point behind ``launch.py fit POINTS.csv``."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
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
    assert out["not_identified"] == []  # 30 points over two decades of N and D pin the law down


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


def isoflop_csv(path, seed=0, groups=None):
    """IsoFLOP runs of a known law (a = 0.521) with off-centre grids and 0.5 % noise; one budget with
    its minimum outside the grid."""
    rng = np.random.default_rng(seed)
    rows = ["params,tokens,loss,flops" + (",group" if groups else "")]
    a_true = 0.37 / 0.71
    G = (0.34 * 400 / (0.37 * 2000)) ** (1 / 0.71)
    for group in groups or [None]:
        for i, C in enumerate(np.geomspace(1e18, 1e21, 5)):
            n_star = G * (C / 6) ** a_true
            shift = 3.0 if i == 4 else rng.uniform(-0.8, 0.8)  # the largest budget misses its minimum
            for n in n_star * np.exp(shift + np.linspace(-1.5, 1.5, 6)):
                d = C / (6 * n)
                rows.append(f"{n:.8g},{d:.8g},{law(n, d) * np.exp(rng.normal(0, 0.005)):.10f},{C:.8g}" + (f",{group}" if group else ""))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_fit_approach2_cli_matches_brute_force_weighted_regression(tmp_path):
    p = isoflop_csv(tmp_path / "iso.csv")
    launch = Path(__file__).resolve().parents[1] / "launch.py"
    res = subprocess.run([sys.executable, str(launch), "fit", str(p), "--approach", "2", "--bootstrap", "30"],
                         capture_output=True, text=True, check=True)
    out = json.loads(res.stdout)
    assert {"a", "k", "b", "intervals", "budgets_used", "budgets_refused"} <= set(out)
    assert len(out["budgets_used"]) == 4 and len(out["budgets_refused"]) == 1
    assert out["budgets_refused"][0]["flops"] == pytest.approx(1e21) and "NoInteriorMinimum" in out[
        "budgets_refused"][0]["error"]
    frame = pd.read_csv(p)
    used = out["budgets_used"]
    for b in used:  # each vertex: the parabola by the normal equations
        sub = frame[np.isclose(frame["flops"], b["flops"], rtol=1e-6)]
        x = np.log(sub["params"].to_numpy())
        V = np.column_stack([x**2, x, np.ones_like(x)])
        c2, c1, _ = np.linalg.solve(V.T @ V, V.T @ sub["loss"].to_numpy())
        assert np.log(b["n_opt"]) == pytest.approx(-c1 / (2 * c2), abs=1e-9)
    lc = np.log([b["flops"] for b in used])
    y = np.log([b["n_opt"] for b in used])
    w = 1 / np.array([b["log_n_opt_se"] for b in used]) ** 2
    X = np.column_stack([np.ones_like(lc), lc])
    logk, a = np.linalg.solve(X.T @ (w[:, None] * X), X.T @ (w * y))
    assert out["a"] == pytest.approx(a, abs=1e-9) and np.log(out["k"]) == pytest.approx(logk, abs=1e-9)
    assert out["b"] == pytest.approx(1 - a, abs=1e-12)
    iv = out["intervals"]["a"]
    assert iv["p2.5"] < out["a"] < iv["p97.5"] and iv["p2.5"] < 0.521 < iv["p97.5"]
    assert set(out["bootstrap_intervals"]["a"]) == {"p2.5", "p10", "p90", "p97.5"}


def test_fit_approach2_per_group_and_its_errors(tmp_path):
    p = isoflop_csv(tmp_path / "iso.csv", groups=("interleaved", "textless"))
    out = fit_points_csv(p, approach=2, n_bootstrap=0, group_col="group")
    assert set(out["groups"]) == {"interleaved", "textless"}
    assert all(len(g["budgets_used"]) == 4 for g in out["groups"].values())
    write_points(tmp_path / "noflops.csv", extra_cols=False)
    with pytest.raises(InputError, match="missing column.*flops"):
        fit_points_csv(tmp_path / "noflops.csv", approach=2)
    with pytest.raises(InputError, match="approach must be 2"):
        fit_points_csv(p, approach=1)
