"""A synthetic study on disk, made from known laws, for the report tests (and checks of it).

Two main groups with different laws: qwen2.5/interleaved (a = 0.56: more compute to model size)
and qwen2.5/textless (near Cuervo & Marxer's law, a = 0.47). Five IsoFLOP budgets, five model sizes
each, centred on each law's true N_opt; a third, tiny group (llama3.2/interleaved, 4 runs at
one budget) makes the fits refuse. One RUNNING and one FAILED cell must be ignored.
``noise`` > 0 multiplies every final loss by exp(noise * standard normal) (seeded), for samples
that show bootstrap bands and residual scatter.
Run directories follow the contract (spec.json, state.json, metrics.jsonl, result.json).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from analysis.allocation import optimal_allocation


@dataclass(frozen=True)
class Law:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    ssc: tuple  # (k, gamma) of the best-per-budget sSC
    tsc: tuple

    def loss(self, N, D):
        return self.E + self.A / np.asarray(N, float) ** self.alpha + self.B / np.asarray(D, float) ** self.beta

    def allocation(self, C):
        return optimal_allocation(C, self.E, self.A, self.B, self.alpha, self.beta)

    @property
    def a(self):
        return self.beta / (self.alpha + self.beta)


INTERLEAVED = Law(E=1.6, A=60.0, B=600.0, alpha=0.30, beta=0.38, ssc=(0.19, 0.026), tsc=(0.37, 0.018))
TEXTLESS = Law(E=1.8, A=16.0, B=45.0, alpha=0.26, beta=0.23, ssc=(0.26, 0.017), tsc=(0.24, 0.025))
BUDGETS = (1e18, 3e18, 1e19, 3e19, 1e20)
LADDER = 5e6 * 2.0 ** np.arange(14)  # member sizes (params_total), 5e6 .. 4.1e10
STUDY = "sims-mini"
GROUPS = (("qwen2.5", "interleaved", "textlm", INTERLEAVED), ("qwen2.5", "textless", "textlm", TEXTLESS))

# the models a user could pick from when asking for a recommendation
MEMBERS = [{"family": fam, "member": f"{fam}-m{i:02d}", "params_total": float(n),
            "params_nonembedding": float(0.8 * n)}
           for fam, scale in (("qwen2.5", 1.0), ("llama3.2", 1.3)) for i, n in enumerate(LADDER * scale)]


def members_around(law: Law, C: float, k: int = 5) -> list[int]:
    """Indices of k ladder sizes centred on the law's true N_opt at C."""
    centre = int(np.argmin(np.abs(np.log(LADDER) - np.log(law.allocation(C).n_opt))))
    lo = min(max(centre - k // 2, 0), LADDER.size - k)
    return list(range(lo, lo + k))


def score(law: Law, which: str, N, D):
    """A downstream accuracy: the law's k C^gamma for a compute-optimal run, lower for worse runs."""
    k, gamma = getattr(law, which)
    C = 6 * N * D
    return float(min(0.99, k * C**gamma * np.exp(-3.0 * (law.loss(N, D) - law.allocation(C).loss_opt))))


def write_cell(study_dir: Path, family: str, setup: str, init: str, law: Law, member: int, C: float,
               state: str = "DONE", jitter: float = 1.0) -> Path:
    N = float(LADDER[member])
    D = float(round(C / (6 * N)))
    key = f"{family}-{setup}-m{member:02d}-{int(D)}"
    d = study_dir / key
    d.mkdir(parents=True)
    params = {"total": N, "embedding": 0.2 * N, "nonembedding": 0.8 * N, "output_head": 0.1 * N,
              "new_rows": 502, "new_row_params": 502 * 64, "vocab_rows": 152_000}
    spec = {"key": key, "study": study_dir.name, "family": family, "member": f"{family}-m{member:02d}",
            "setup": setup, "init": init, "variant": None, "params": params, "tokens": int(D),
            "flops": 6 * N * D, "flops_convention": "6ND_total", "cost_flops": 6.3 * N * D,
            "training": {"lr": 5e-4, "batch_tokens": 65536}}
    (d / "spec.json").write_text(json.dumps(spec))
    (d / "state.json").write_text(json.dumps({"state": state, "attempts": 1, "job_ids": ["7_0"]}))
    streams = ("text", "interleaved", "speech") if setup == "interleaved" else ("speech",)
    lines = []
    for s in range(1, 9):
        t = D * s / 8
        line = {"step": s * 10, "tokens": t, "flops": 6 * N * t, "loss": float(law.loss(N, t)) + 0.05,
                "lr": 5e-4, "tokens_per_second": 1e5, "time": 1.7e9 + s}
        if s % 4 == 0:
            line.update({f"val_loss/{m}": float(law.loss(N, t)) + (0.4 if m != "speech" else 0.0) for m in streams})
        lines.append(json.dumps(line))
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if state != "DONE":
        return d
    loss = float(law.loss(N, D)) * jitter
    result = {"key": key, "study": study_dir.name, "family": family, "member": f"{family}-m{member:02d}",
              "init": init, "setup": setup, "variant": None, "params": params, "tokens": int(D),
              "tokens_budget": int(D), "flops": 6 * N * D, "flops_convention": "6ND_total",
              "cost_flops": 6.3 * N * D, "steps": 80, "loss": loss + 0.05,
              "val_loss": {m: loss + (0.4 if m != "speech" else 0.0) for m in streams},
              "eval": {"ssc": score(law, "ssc", N, D), "tsc": score(law, "tsc", N, D)},
              "wall_seconds": 3600.0, "tokens_per_second": D / 3600.0, "mlflow_run_id": None}
    (d / "result.json").write_text(json.dumps(result))
    return d


def build_study(root: Path, with_refusing_group: bool = True, with_unfinished: bool = True,
                noise: float = 0.0, seed: int = 0) -> Path:
    """Write the synthetic study under root/STUDY; returns the study directory."""
    study_dir = Path(root) / STUDY
    study_dir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for family, setup, init, law in GROUPS:
        for C in BUDGETS:
            for m in members_around(law, C):
                jitter = float(np.exp(noise * rng.standard_normal()))
                write_cell(study_dir, family, setup, init, law, m, C, jitter=jitter)
    if with_refusing_group:
        for m in members_around(INTERLEAVED, 1e19, 4):
            write_cell(study_dir, "llama3.2", "interleaved", "textlm", INTERLEAVED, m, 1e19)
    if with_unfinished:
        write_cell(study_dir, "qwen2.5", "interleaved", "textlm", INTERLEAVED, 3, 3e20, state="RUNNING")
        write_cell(study_dir, "qwen2.5", "interleaved", "textlm", INTERLEAVED, 4, 3e20, state="FAILED")
    return study_dir


# ----------------------------------------------------------------------------- checks of the fixture


def test_fixture_brackets_each_true_optimum():
    for _, _, _, law in GROUPS:
        for C in BUDGETS:
            sizes = LADDER[members_around(law, C)]
            assert sizes.min() < law.allocation(C).n_opt < sizes.max()


def test_fixture_follows_the_run_dir_contract(tmp_path):
    study_dir = build_study(tmp_path)
    cells = sorted(p for p in study_dir.iterdir() if (p / "spec.json").exists())
    assert len(cells) == 2 * 5 * 5 + 4 + 2
    res = json.loads(next(p for p in cells if "textless" in p.name).joinpath("result.json").read_text())
    assert set(res["val_loss"]) == {"speech"}
    assert 0 < res["eval"]["ssc"] < 1 and res["flops"] == pytest.approx(6 * res["params"]["total"] * res["tokens"])
