"""WSD trunks and branches (issue 20): the schedule against hand values, a branch equal bitwise to a
single WSD run to its budget, a preempted trunk and a preempted branch resuming exactly, the plan's
saving against the step arithmetic done here by hand, and a branch held while its trunk cannot run."""
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from fixtures_data import tiny_study
from test_train import corpus  # noqa: F401 (fixture)

from scaling.schedule import lr_at

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = [2560, 5120, 10240]        # 10, 20, 40 steps of 256 tokens: branch steps 8, 16, 32
WALL = {"wall_seconds", "tokens_per_second", "mlflow_run_id"}


def test_wsd_lr_against_hand_values():
    # 10 steps, 2 of warmup, decay over round(0.2 x 10) = 2 steps: 8 and 9 (the last at min_lr)
    lrs = [lr_at(s, 10, 2, 1.0, 0.1, "wsd", 0.2, "linear") for s in range(10)]
    assert lrs == pytest.approx([0.5, 1.0, 1, 1, 1, 1, 1, 1, 0.55, 0.1])
    sq = [lr_at(s, 10, 0, 1.0, 0.0, "wsd", 0.4, "sqrt") for s in range(6, 10)]   # decay 4 steps from 6
    assert sq == pytest.approx([1 - math.sqrt(0.25), 1 - math.sqrt(0.5), 1 - math.sqrt(0.75), 0.0])
    cos = [lr_at(s, 4, 0, 1.0, 0.0, "wsd", 0.5, "cosine") for s in range(4)]
    assert cos == pytest.approx([1, 1, 0.5, 0.0])
    # before its decay a WSD run is the constant run, whatever its length
    for total in (10, 20, 40):
        start = total - round(0.2 * total)
        assert all(lr_at(s, total, 3, 2e-3, 2e-4, "wsd") == lr_at(s, 10**6, 3, 2e-3, 2e-4, "constant")
                   for s in range(start))


def _study(tmp: Path, corpus, share: bool = True, name: str = "t", **training) -> Path:
    training = {"checkpoint_every_tokens": 10**6, "log_every": 3, **training}
    d = tiny_study(tmp, corpus, "llama", tokens=BUDGETS[0], schedule="wsd", share_trunk=share, **training)
    d["grid"] = {"tokens": BUDGETS}
    d["name"] = name
    d["eval"]["every_tokens"] = 2048
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def launch(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], capture_output=True, text=True,
                          timeout=timeout)


def _cells(study_dir: Path) -> dict[str, Path]:
    return {p.name: p for p in study_dir.iterdir() if (p / "result.json").exists()}


def _lines(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(l).items() if k not in ("time", "tokens_per_second")}
            for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]


def _same(a: Path, b: Path) -> None:
    ra, rb = (json.loads((p / "result.json").read_text()) for p in (a, b))
    diff = {k for k in set(ra) | set(rb) if k not in WALL | {"branched_from"} and ra.get(k) != rb.get(k)}
    assert not diff, {k: (ra.get(k), rb.get(k)) for k in diff}
    assert _lines(a) == _lines(b)


@pytest.fixture(scope="module")
def single(tmp_path_factory, corpus):  # noqa: F811
    """Each budget as a single WSD run from scratch (share_trunk: false): the reference."""
    tmp = tmp_path_factory.mktemp("single")
    res = launch("submit", str(_study(tmp, corpus, share=False)), "--executor", "debug")
    assert res.returncode == 0, res.stdout + res.stderr
    cells = _cells(tmp / "runs" / "t")
    assert len(cells) == 3 and not any((p / "spec.json").read_text().count('"role": "trunk"') for p in cells.values())
    return cells


def test_branches_equal_single_wsd_runs_bitwise(tmp_path, corpus, single):  # noqa: F811
    study = _study(tmp_path, corpus)
    res = launch("submit", str(study), "--executor", "debug")
    assert res.returncode == 0, res.stdout + res.stderr
    study_dir = tmp_path / "runs" / "t"
    trunks = [p for p in study_dir.iterdir() if p.name.startswith("trunk-")]
    assert len(trunks) == 1 and sorted(p.name for p in (trunks[0] / "branch_points").iterdir()) == \
        ["step_000000008", "step_000000016", "step_000000032"]
    cells = _cells(study_dir)
    assert sorted(cells) == sorted(single)                    # the same keys: the trunk is not in the key
    for key, run in cells.items():
        r = json.loads((run / "result.json").read_text())
        assert r["branched_from"]["trunk"] == trunks[0].name
        assert r["branched_from"]["step"] == {2560: 8, 5120: 16, 10240: 32}[r["tokens"]]
        _same(run, single[key])
    # the trunk trained 32 steps; alone the three budgets train 70: the branches trained 2 + 4 + 8
    assert json.loads((trunks[0] / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 32
    again = launch("submit", str(study), "--executor", "debug")
    assert "submitted 0 of 3 cells" in again.stdout and "skip (every branch point written)" in again.stdout
    status = launch("status", str(study))
    assert "DONE 3" in status.stdout and "32/32" in status.stdout and "not in this study" not in status.stdout


def _signal_at(proc: subprocess.Popen, run: Path, step: int) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        m = run / "metrics.jsonl"
        lines = [json.loads(l) for l in m.read_text().splitlines() if l.strip()] if m.exists() else []
        if lines and lines[-1].get("step", 0) >= step:
            proc.send_signal(signal.SIGUSR2)
            return
        time.sleep(0.005)
    raise AssertionError(f"{run.name} never reached step {step}")


def test_preempted_trunk_and_branch_resume_exactly(tmp_path, corpus, single):  # noqa: F811
    study = _study(tmp_path, corpus, log_every=1)
    (tmp_path / "ref").mkdir()
    ref_study = _study(tmp_path / "ref", corpus, share=False, log_every=1)
    top = "tiny-d32-10.2k"   # the largest budget (a key prefix: log_every is in the key)
    # the reference trained the way the preempted run is (`train`, this process's torch threads)
    assert launch("train", str(ref_study), "--cell", top).returncode == 0
    ref = _cells(tmp_path / "ref" / "runs" / "t")
    study_dir = tmp_path / "runs" / "t"

    def train() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "train", str(study), "--cell", top],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    proc = train()                                   # `train` of a branch trains its trunk first
    while not any(study_dir.glob("trunk-*/metrics.jsonl")):
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.01)
    trunk = next(study_dir.glob("trunk-*"))
    _signal_at(proc, trunk, 12)                      # the trunk, between its branch points 8 and 16
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 3 and "checkpointed, exiting for requeue" in out, out[-3000:]
    proc = train()
    _signal_at(proc, next(study_dir.glob(top + "-*")), 35)            # the branch, in its decay (steps 32..40)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 3 and "resumed from" in out and "branched off" in out, out[-3000:]
    proc = train()
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "resumed from" in out, out[-3000:]
    (key,) = ref
    _same(study_dir / key, ref[key])
    assert json.loads((trunk / "state.json").read_text())["state"] == "DONE"


def test_branch_of_failed_trunk_is_held_and_waits(tmp_path, corpus):  # noqa: F811
    study = _study(tmp_path, corpus)
    d = yaml.safe_load(study.read_text())
    d["executor"] = {"kind": "debug", "max_retries": 0}
    study.write_text(yaml.safe_dump(d, sort_keys=False))
    res = launch("submit", str(study), "--dry-run")
    assert "trunk-" in res.stdout and "submit (new to steps 8, 16, 32)" in res.stdout, res.stdout
    assert launch("submit", str(study)).returncode == 0
    study_dir = tmp_path / "runs" / "t"
    trunk = next(study_dir.glob("trunk-*"))   # now as if it had failed before writing any branch point
    shutil.rmtree(trunk / "branch_points")
    state = json.loads((trunk / "state.json").read_text())
    state.update(state="FAILED", failures=1, error="RuntimeError: boom")
    (trunk / "state.json").write_text(json.dumps(state))
    for p in _cells(study_dir).values():
        shutil.rmtree(p)
    res = launch("submit", str(study))
    assert "skip (failed 1x, retry limit 0)" in res.stdout, res.stdout
    assert res.stdout.count("waiting on trunk") == 3 and "submitted 0 of 3 cells" in res.stdout, res.stdout
    status = launch("status", str(study))
    assert "WAITING 3" in status.stdout and "RuntimeError: boom" in status.stdout, status.stdout


def test_plan_of_sims_with_wsd_prints_the_saving(tmp_path):
    d = yaml.safe_load((ROOT / "examples" / "sims.yaml").read_text())
    d["training"]["schedule"] = "wsd"
    d["root"] = str(tmp_path / "runs")
    study = tmp_path / "sims.yaml"
    study.write_text(yaml.safe_dump(d))
    res = launch("plan", str(study), "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    # by hand: 131072-token steps; each budget decays over round(0.2 x its steps); a trunk trains to its
    # largest branch step; alone, every budget trains all its steps
    step = 131072
    alone = shared = 0
    trunks: dict[str, int] = {}
    for r in rows:
        steps = math.ceil(r["tokens"] / step)
        b = steps - round(0.2 * steps)
        assert r["branch_step"] == b and r["trunk"].startswith(f"trunk-{r['family']}-{r['member']}-")
        alone += r["tokens"]
        shared += r["tokens"] - b * step
        trunks[r["trunk"]] = max(trunks.get(r["trunk"], 0), b)
    shared += sum(trunks.values()) * step
    assert len(trunks) == 5
    text = launch("plan", str(study)).stdout
    line = next(l for l in text.splitlines() if "with shared trunks" in l)
    assert "instead of" in line and "saving" in line
    tokens_saving = 1 - shared / alone
    assert 0.15 < tokens_saving < 0.3
    print(line, f"(tokens saving by hand {tokens_saving:.1%})")


def test_wsd_comparison_recovers_known_exponents_and_flags_a_difference():
    from analysis.document import to_markdown
    from analysis.wsd_comparison import Pair, blocks, compare, compute_json

    rng = np.random.default_rng(0)
    grid = [(n, d) for n in (1e4, 3e4, 1e5) for d in (1e5, 3e5, 1e6)]

    def law(n, d, a, b, k=40.0):
        return k * n ** -a * d ** -b

    noise = rng.normal(0, 0.002, len(grid))
    same = [Pair(f"m{n:g}", n, d, law(n, d, 0.1, 0.2) * np.exp(e), law(n, d, 0.1, 0.2) * 0.97 * np.exp(e))
            for (n, d), e in zip(grid, noise)]
    c = compare(same, n_bootstrap=500)
    assert c["law"]["a"]["cosine"] == pytest.approx(0.1, abs=0.01) and c["law"]["b"]["wsd"] == pytest.approx(0.2, abs=0.01)
    assert c["law"]["a"]["agree"] and c["law"]["b"]["agree"]
    assert c["relative_difference"]["mean"] == pytest.approx(-0.03, abs=1e-9)   # a constant 3% better
    other = [Pair(p.member, p.params, p.tokens, p.cosine, law(p.params, p.tokens, 0.1, 0.3) * np.exp(e))
             for p, e in zip(same, noise)]
    c2 = compare(other, n_bootstrap=500)
    assert not c2["law"]["b"]["agree"] and c2["law"]["a"]["agree"]
    assert compare(same[:1])["refused"]
    text = to_markdown(blocks({"comparison": c, "compute": compute_json(100, 1e9, 60, 6e8, 10.0, 7.0),
                               "decay": "linear"}))
    assert "| yes |" in text and "40.0% less compute" in text


def test_a_grown_grid_trains_the_done_trunk_on(tmp_path, corpus, single):  # noqa: F811
    """A budget added after the trunk finished (e.g. by `propose`): the trunk trains on from its last
    branch point, and the new branch still equals its single WSD run."""
    study = _study(tmp_path, corpus)
    d = yaml.safe_load(study.read_text())
    d["grid"] = {"tokens": BUDGETS[:2]}
    study.write_text(yaml.safe_dump(d, sort_keys=False))
    assert launch("submit", str(study), "--executor", "debug").returncode == 0
    d["grid"] = {"tokens": BUDGETS}
    study.write_text(yaml.safe_dump(d, sort_keys=False))
    res = launch("submit", str(study), "--executor", "debug")
    assert res.returncode == 0 and "submit (grows to step 32)" in res.stdout, res.stdout
    assert "submitted 1 of 3 cells" in res.stdout, res.stdout
    cells = _cells(tmp_path / "runs" / "t")
    assert sorted(cells) == sorted(single)
    for key in cells:
        _same(cells[key], single[key])
