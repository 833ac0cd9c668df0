"""The tuned LR law: power laws recovered from synthetic optima, tuned.json, and `lr: tuned` resolved per
cell in `plan` (before the cell key is hashed)."""
import json
import math

import numpy as np
import pytest

from analysis.errors import NonPositiveInput, TooFewPoints
from analysis.lr_law import build_tuned, fit_power_law, load_tuned, predict, resolve, write_tuned
from fixtures_data import tiny_copy

A, B = 0.9, -0.35          # lr_opt(N) = A N^B
NS = [1e4, 3e4, 1e5, 3e5, 1e6]


def test_noise_free_optima_recovered_exactly():
    fit = fit_power_law(NS, [A * n ** B for n in NS])
    assert fit["a"] == pytest.approx(A, rel=1e-9) and fit["b"] == pytest.approx(B, abs=1e-12)
    assert fit["b_se"] == pytest.approx(0, abs=1e-9) and fit["r2"] == pytest.approx(1.0)
    assert predict(fit, 2e7) == pytest.approx(A * 2e7 ** B)


def test_noisy_optima_recovered_within_their_error():
    rng = np.random.default_rng(1)
    ns = np.geomspace(1e4, 1e7, 8)
    hits = 0
    for _ in range(20):
        lr = A * ns ** B * np.exp(rng.normal(0, 0.15, len(ns)))    # optima off by ~15% each
        fit = fit_power_law(ns, lr, n_bootstrap=300, seed=0)
        assert abs(fit["b"] - B) < 0.12 and fit["b_se"] > 0
        assert fit["b_ci"][0] < fit["b"] < fit["b_ci"][1]
        hits += abs(fit["b"] - B) < 2 * fit["b_se"]
    assert hits >= 17                                                 # the standard error is honest


def test_one_member_is_a_constant_and_bad_input_refused():
    fit = fit_power_law([5e4], [2e-3])
    assert fit["b"] == 0 and fit["a"] == pytest.approx(2e-3) and fit["constant"] and "one tuned member" in fit["note"]
    two = fit_power_law([1e4, 1e5], [1e-2, 5e-3])
    assert two["b"] == pytest.approx(math.log10(0.5)) and two["b_se"] is None
    with pytest.raises(TooFewPoints):
        fit_power_law([], [])
    with pytest.raises(NonPositiveInput):
        fit_power_law([1e4, 2e4], [1e-3, -1e-3])


def _tuned_doc(members: dict, batch: bool = False) -> dict:
    """tuned.json for the tiny ladder with optima from the known law (batch_tokens ~ N^0.5 if asked)."""
    out = {}
    for name, n in members.items():
        out[f"ladder/{name}"] = {"family": "ladder", "member": name, "params_total": n, "params_nonembedding": n // 2,
                                 "lr": A * n ** B, "val_loss": 3.0, "min_lr_ratio": 0.1,
                                 **({"batch_tokens": 4 * n ** 0.5} if batch else {})}
    return build_tuned("tiny", out)


def test_tuned_json_round_trip_and_resolve(tmp_path):
    doc = _tuned_doc({"d16": 13_211, "d32": 41_760, "d64": 145_024}, batch=True)
    assert doc["law"]["lr"]["b"] == pytest.approx(B) and doc["law"]["batch_tokens"]["b"] == pytest.approx(0.5)
    path = write_tuned(tmp_path / "tuned.json", doc)
    back = load_tuned(path)
    v = resolve(back, 1e6, ("lr", "batch_tokens"), context=64)
    assert v["lr"] == float(f"{A * 1e6 ** B:.3g}") and v["min_lr"] == float(f"{v['lr'] * 0.1:.3g}")
    assert v["batch_tokens"] % 64 == 0 and abs(v["batch_tokens"] - 4000) <= 32


def _plan(cli, study):
    res = cli("plan", str(study), "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_lr_tuned_resolved_per_cell_in_plan(tmp_path, cli):
    def tuned(d):
        d["training"]["lr"] = "tuned"
    study = tiny_copy(tmp_path, tuned)
    study_dir = tmp_path / "runs" / "tiny"
    study_dir.mkdir(parents=True)
    write_tuned(study_dir / "tuned.json", _tuned_doc({"d16": 13_211, "d64": 145_024}))
    rows = _plan(cli, study)
    assert len(rows) == 12
    for r in rows:                                                   # each cell at its own N, twins included
        want = float(f"{A * r['params_total'] ** B:.3g}")
        assert r["lr"] == want and r["min_lr"] == float(f"{want * 0.1:.3g}")
    assert len({r["lr"] for r in rows}) == 6                         # 3 members x (interleaved, textless)
    table = cli("plan", str(study))
    assert table.returncode == 0 and " lr " in table.stdout.splitlines()[0]
    assert "tuned (lr) from" in table.stdout and f"lr = {A:.3g} x N^{B:.3f}" in table.stdout
    # keys hash the resolved value: the same as writing that lr (and min_lr) out for a one-member study
    d32 = next(r for r in rows if r["member"] == "d32" and r["setup"] == "interleaved")

    def explicit(d):
        d["training"]["lr"] = d32["lr"]
        d["training"]["min_lr"] = d32["min_lr"]
    other = tmp_path / "explicit"
    other.mkdir()
    same = {r["key"]: r for r in _plan(cli, tiny_copy(other, explicit))}
    assert d32["key"] in same and same[d32["key"]]["lr"] == d32["lr"]
    orig = tmp_path / "orig"
    orig.mkdir()
    original = {r["key"] for r in _plan(cli, tiny_copy(orig))}
    assert not original & {r["key"] for r in rows}                  # another lr, other keys


def test_lr_tuned_without_tuned_json_is_one_line_exit_2(tmp_path, cli):
    def tuned(d):
        d["training"]["lr"] = "tuned"
    study = tiny_copy(tmp_path, tuned)
    res = cli("plan", str(study))
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "training.lr: tuned needs" in lines[0] and "tuned.json" in lines[0]
    assert "run `launch.py tune" in lines[0]


def test_batch_tokens_tuned_needs_a_batch_law(tmp_path, cli):
    def tuned(d):
        d["training"]["batch_tokens"] = "tuned"
    study = tiny_copy(tmp_path, tuned)
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    write_tuned(tmp_path / "runs" / "tiny" / "tuned.json", _tuned_doc({"d16": 13_211, "d64": 145_024}))
    res = cli("plan", str(study))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "training.batch_tokens: tuned, but" in res.stderr and "no batch_tokens law" in res.stderr
