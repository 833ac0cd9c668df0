"""The data-constrained law (Muennighoff et al. 2023): recovery from data drawn from a known law, the
allocation under a data constraint against brute force, and the `fit --data-constrained` command.

The law is written out here a second time, from the paper, so the tests do not check the module
against itself."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.data_constrained import BaseLaw, constrained_allocation, fit_data_constrained
from analysis.document import to_markdown
from analysis.repetition_report import draw_repetition, repetition_blocks, repetition_summary
from analysis.study_fits import jsonable

TRUE = {"E": 1.87, "A": 521.0, "B": 1488.0, "alpha": 0.35, "beta": 0.353}   # the paper's fitted base law
R_D, R_N = 15.4, 5.3                                                           # and its R_D*, R_N*


def law(N, D, U, E, A, B, alpha, beta, rd, rn):
    """Muennighoff et al. (2023), eqs. 5-6, with U_N the Chinchilla-optimal size for U_D tokens."""
    N, D, U = (np.asarray(x, dtype=float) for x in (N, D, U))
    u_d = np.minimum(U, D)
    d_eff = u_d + u_d * rd * (1 - np.exp(-(D / u_d - 1) / rd))
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    # N_opt = G (C/6)^(beta/(alpha+beta)) and D_opt = (C/6)^(alpha/(alpha+beta)) / G, solved for D_opt = u_d
    c6 = (u_d * G) ** ((alpha + beta) / alpha)
    u_n = np.minimum(G * c6 ** (beta / (alpha + beta)), N)
    n_eff = u_n + u_n * rn * (1 - np.exp(-(N / u_n - 1) / rn))
    return E + A / n_eff**alpha + B / d_eff**beta


def grid():
    """Single-epoch cells at 20-160 tokens per parameter (no excess parameters), and repeated cells at
    2-64 epochs of two unique-token budgets, from models below to far above N_opt(U)."""
    rows = [(n, r * n, r * n) for n in np.logspace(6.5, 9, 6) for r in (20, 40, 80, 160)]
    rows += [(n, e * u, u) for u in (1e8, 1e9) for n in (1e7, 5e7, 2e8, 1e9) for e in (2, 4, 8, 16, 32, 64)]
    return tuple(np.array(x) for x in zip(*rows))


def noisy(seed, sigma=0.005):
    N, D, U = grid()
    rng = np.random.default_rng(seed)
    return N, D, U, law(N, D, U, **TRUE, rd=R_D, rn=R_N) * np.exp(rng.normal(0, sigma, N.size))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_R_stars_within_intervals(seed):
    N, D, U, L = noisy(seed)
    fit = fit_data_constrained(N, D, U, L, n_bootstrap=100, seed=seed)
    iv = fit.intervals
    print(f"seed {seed}: R_D* {fit.R_D_star:.3g} [{iv['R_D_star']['p2.5']:.3g}, {iv['R_D_star']['p97.5']:.3g}] "
          f"R_N* {fit.R_N_star:.3g} [{iv['R_N_star']['p2.5']:.3g}, {iv['R_N_star']['p97.5']:.3g}]")
    assert iv["R_D_star"]["p2.5"] <= R_D <= iv["R_D_star"]["p97.5"]
    assert iv["R_N_star"]["p2.5"] <= R_N <= iv["R_N_star"]["p97.5"]
    assert fit.identified == {"R_D_star": True, "R_N_star": True} and not fit.notes
    assert fit.base_source == "fitted on 24 single-epoch cells" and fit.n_repeated == 48


def test_given_base_and_exact_data():
    N, D, U = grid()
    L = law(N, D, U, **TRUE, rd=R_D, rn=R_N)
    fit = fit_data_constrained(N, D, U, L, base=BaseLaw(**TRUE), n_bootstrap=0)
    assert fit.base_source == "given"
    assert fit.R_D_star == pytest.approx(R_D, rel=1e-4) and fit.R_N_star == pytest.approx(R_N, rel=1e-4)
    assert fit.objective < 1e-12


def test_flat_objective_is_said_plainly():
    # at most 1.5 epochs and noise: R_D* (15) leaves no trace the fit could find
    N, D, U = grid()
    keep = D / U <= 2
    N, D, U = N[keep], np.where(D[keep] > U[keep], 1.5 * U[keep], D[keep]), U[keep]
    rng = np.random.default_rng(0)
    L = law(N, D, U, **TRUE, rd=R_D, rn=R_N) * np.exp(rng.normal(0, 0.01, N.size))
    fit = fit_data_constrained(N, D, U, L, base=BaseLaw(**TRUE), n_bootstrap=60)
    assert fit.identified["R_D_star"] is False
    assert any(n.startswith("R_D_star is not identified by these data") and "interval" in n for n in fit.notes)
    # no cell repeats at all: said as such
    single = D <= U
    fit = fit_data_constrained(N[single], D[single], U[single], L[single], base=BaseLaw(**TRUE), n_bootstrap=5)
    assert fit.identified["R_D_star"] is False and "no cell has repeated tokens" in fit.notes[0]


@pytest.mark.parametrize("C,U", [(1e21, 1e9), (1e21, 3e10), (1e22, 1e11), (1e20, 1e12), (3e23, 2e11)])
def test_constrained_allocation_matches_brute_force(C, U):
    got = constrained_allocation(C, U, BaseLaw(**TRUE), R_D, R_N)
    # brute force: two million model sizes over ten decades along C = 6ND
    n = np.logspace(3, 13, 2_000_001)
    loss = law(n, C / (6 * n), U, **TRUE, rd=R_D, rn=R_N)
    i = int(np.argmin(loss))
    n_bf, d_bf = n[i], C / (6 * n[i])
    print(f"C={C:g} U={U:g}: N {got['n']:.4g} vs {n_bf:.4g}, D {got['d']:.4g} vs {d_bf:.4g}, "
          f"epochs {got['epochs']:.3g}, unconstrained N {got['unconstrained']['n']:.4g}")
    assert got["n"] == pytest.approx(n_bf, rel=0.01) and got["d"] == pytest.approx(d_bf, rel=0.01)
    assert got["loss"] <= loss[i] + 1e-12
    # the unconstrained allocation is Chinchilla's closed form, and never better under the constraint
    a, G = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"]), (TRUE["alpha"] * TRUE["A"] / (TRUE["beta"] * TRUE["B"])) ** (
        1 / (TRUE["alpha"] + TRUE["beta"]))
    assert got["unconstrained"]["n"] == pytest.approx(G * (C / 6) ** a, rel=1e-9)
    assert got["unconstrained"]["loss"] >= got["loss"] - 1e-12


def test_ample_data_gives_the_chinchilla_allocation():
    got = constrained_allocation(1e21, 1e15, BaseLaw(**TRUE), R_D, R_N)
    assert got["n"] == pytest.approx(got["unconstrained"]["n"], rel=1e-4)
    assert got["loss"] == pytest.approx(got["unconstrained"]["loss_fresh"], rel=1e-9)


def test_fit_command(tmp_path, cli):
    N, D, U, L = noisy(0)
    csv = tmp_path / "points.csv"
    csv.write_text("params,tokens,unique_tokens,loss\n" + "".join(f"{a:.17g},{b:.17g},{c:.17g},{d:.17g}\n"
                                                                  for a, b, c, d in zip(N, D, U, L)))
    base = ",".join(str(TRUE[k]) for k in ("E", "A", "B", "alpha", "beta"))
    res = cli("fit", str(csv), "--data-constrained", "--base", base, "--bootstrap", "40")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert {"R_D_star", "R_N_star", "objective", "intervals"} <= set(out)
    assert out["base"]["source"] == "given" and math.isfinite(out["objective"])
    assert out["intervals"]["R_D_star"]["p2.5"] <= R_D <= out["intervals"]["R_D_star"]["p97.5"]
    for args, needle in [(["--data-constrained", "--base", "1,2"], "--base: expected five positive numbers"),
                         (["--base", base], "--base needs --data-constrained")]:
        res = cli("fit", str(csv), *args)
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and needle in res.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("params,tokens,loss\n1e8,1e9,3.0\n")
    res = cli("fit", str(bad), "--data-constrained")
    assert res.returncode == 2 and "missing column(s) unique_tokens" in res.stderr


def _frame(repeat: bool):
    """A harvested frame of one speech-only group drawn from the known law (result.json's columns)."""
    N, D, U, L = noisy(3)
    if not repeat:
        keep = D <= U
        N, D, U, L = N[keep], D[keep], U[keep], L[keep]
    return pd.DataFrame({"state": "DONE", "key": [f"c{i}" for i in range(N.size)], "family": "f", "setup": "textless",
                         "variant": None, "member": [f"m{int(n)}" for n in N], "params_total": N, "tokens": D,
                         "flops": 6 * N * D, "val_loss_speech": L, "epochs_speech": D / U,
                         "unique_tokens_speech": U})


def test_report_section_epochs_and_law(tmp_path):
    summary = jsonable(repetition_summary(_frame(True), n_bootstrap=40))
    md = to_markdown(repetition_blocks(summary))
    assert "## Data repetition: epochs per cell" in md and "speech 64" in md   # every cell's epochs
    g = summary["groups"]["f/textless"]
    assert g["n_repeated"] == 48 and g["n_cells"] == 72
    fit, alloc = g["fit"], g["allocation"]
    assert fit["intervals"]["R_D_star"]["p2.5"] <= R_D <= fit["intervals"]["R_D_star"]["p97.5"]
    frame = _frame(True)
    assert alloc["flops"] == pytest.approx(frame["flops"].max())                    # the largest budget
    assert alloc["unique_tokens"] == pytest.approx(frame["unique_tokens_speech"].median())
    assert f"R_D* = {fit['R_D_star']:.3g}" in md and "best allocation under the constraint" in md
    png = draw_repetition(summary, tmp_path)
    assert png.name == "repetition.png" and png.stat().st_size > 10_000 and "![Effective tokens](repetition.png)" in md
    # effective tokens: one pass is fresh, 64 passes are worth about U (1 + R_D*)
    cells = {c["key"]: c for c in summary["cells"]}
    first = next(c for c in cells.values() if c["epochs"]["speech"] == 20 / 20)
    assert first["effective_tokens"] == pytest.approx(first["tokens"])
    many = next(c for c in cells.values() if c["epochs"]["speech"] == 64 and c["unique_tokens"] == 1e8)
    assert many["effective_tokens"] == pytest.approx(1e8 * (1 + fit["R_D_star"] * (1 - math.exp(-63 / fit["R_D_star"]))))


def test_report_section_without_repetition():
    summary = repetition_summary(_frame(False), n_bootstrap=0)
    md = to_markdown(repetition_blocks(summary))
    assert "No cell read any stream more than once" in md and not summary["repeats"]
    assert draw_repetition(summary, ".") is None and "repetition.png" not in md
    assert repetition_summary(_frame(False).drop(columns=["epochs_speech"])) is None   # older runs: no section
