"""`launch.py tune`: optuna trials as cells through the executors (debug, local, the test Slurm), batches
of ask/tell, resuming an interrupted tune, pruning, MLflow parent/child runs, and the LR law it writes.

The fast tests run trials through `SyntheticJob`, which writes what a trained cell writes with a loss of
known optimum lr_opt(N) = A N^B; the slow ones train the real tiny cells."""
import functools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import optuna
import pytest
from mlflow import MlflowClient

from fixtures_data import tiny_copy

ROOT = Path(__file__).resolve().parents[1]
A, B = 0.5, -0.4        # the synthetic optimum lr_opt(N) = A N^B


class SyntheticJob:
    """Stands in for CellJob (same call shape): reads spec.json and writes metrics.jsonl (held-out losses
    every eval.every_tokens), result.json and state.json DONE, with the speech loss
    2 + 0.2 ln(lr / lr_opt(N))^2 (+ 1/k at the k-th evaluation)."""

    def __init__(self, run_dir, threads=0, slots=None, max_parallel=0, delay=0.0):
        self.run_dir, self.delay = str(run_dir), delay

    def __call__(self):
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))      # as train_cell: stop at a step boundary
        rd = Path(self.run_dir)
        spec = json.loads((rd / "spec.json").read_text())
        lr, n = spec["training"]["lr"], spec["params"]["total"]
        loss = 2.0 + 0.2 * math.log(lr / (A * n ** B)) ** 2
        state = json.loads((rd / "state.json").read_text())
        state.update(state="RUNNING", attempts=state.get("attempts", 0) + 1)
        _write(rd / "state.json", state)
        every, tokens = spec["eval"]["every_tokens"], spec["tokens"]
        with open(rd / "metrics.jsonl", "a") as f:
            for k in range(1, tokens // every if every else 0):
                time.sleep(self.delay)
                if stop:
                    state.update(state="PENDING", interrupted=True)
                    _write(rd / "state.json", state)
                    return "INTERRUPTED"
                f.write(json.dumps({"step": k, "tokens": k * every, "val_loss/speech": loss + 1.0 / k}) + "\n")
                f.flush()
        _write(rd / "result.json", {"tokens": tokens, "val_loss": {"speech": loss, "text": loss}})
        state["state"] = "DONE"
        _write(rd / "state.json", state)
        return "DONE"


def _write(path: Path, data: dict) -> None:
    """Atomically, as scaling.rundir does (the driver polls these files)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


cloudpickle.register_pickle_by_value(sys.modules[__name__])   # local jobs unpickle it without tests/ on sys.path


def _study(tmp_path, **tune):
    def edit(d):
        d["tracking"] = {"enabled": False}
        d["tune"] = {"trials_per_batch": 4, "tokens": 4096, **tune}
    from sweeps.study import load_study
    return load_study(tiny_copy(tmp_path, edit))


def _trials(study_dir: Path, name: str = "tiny/ladder/d32"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir}/optuna.db").get_trials()


def test_synthetic_optima_give_the_law(tmp_path):
    """Three members tuned (debug executor, lr only): tuned.json's law is close to the known one, and
    `lr: tuned` in plan gives each cell the law's value."""
    from sweeps.plan import make_plan
    from sweeps.study import load_study
    from sweeps.tune import tune

    study = _study(tmp_path, space={"lr": {"low": 1e-4, "high": 1.0, "log": True}, "warmup": None,
                                    "batch_tokens": None}, trials_per_batch=6)
    result = tune(study, ["d16", "d32", "d64"], trials=24, kind="debug", job_class=SyntheticJob, log=lambda _: None)
    doc = json.loads((tmp_path / "runs" / "tiny" / "tuned.json").read_text())
    assert sorted(doc["members"]) == ["ladder/d16", "ladder/d32", "ladder/d64"] and "batch_tokens" not in doc["law"]
    for m in doc["members"].values():                                 # each best lr near its own optimum
        assert abs(math.log(m["lr"] / (A * m["params_total"] ** B))) < 0.35, m
    assert doc["law"]["lr"]["b"] == pytest.approx(B, abs=0.15)
    assert [len(r.trials) for r in result.members] == [24, 24, 24]
    assert {t["state"] for r in result.members for t in r.trials} == {"COMPLETE"}
    # every trial a cell of its own, keyed normally, under tune/<family>-<member>/trial-NNNN
    dirs = sorted((tmp_path / "runs" / "tiny" / "tune" / "ladder-d32").glob("trial-*"))
    assert [d.name for d in dirs] == [f"trial-{i:04d}" for i in range(24)]
    spec = json.loads((dirs[0] / "spec.json").read_text())
    assert spec["variant"] == "tune" and spec["key"].startswith("ladder-d32-4.1k-") and spec["tokens"] == 4096
    # the study now uses it
    src = Path(study.source)
    src.write_text(src.read_text().replace("lr: 0.003", "lr: tuned"))
    plan = make_plan(load_study(src))
    law = doc["law"]["lr"]
    for c in plan.cells:
        assert c.training.lr == float(f"{law['a'] * c.params.total ** law['b']:.3g}")


def test_resumed_search_draws_what_an_uninterrupted_one_would(tmp_path):
    """`tune --trials 4` then `--trials 8` continues the same optuna study (trials 4-7 asked by the
    second run, none repeated) and draws exactly the settings of one `tune --trials 8`."""
    from sweeps.tune import tune

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    once, twice = _study(tmp_path / "a"), _study(tmp_path / "b")
    tune(once, ["d32"], trials=8, kind="debug", job_class=SyntheticJob, log=lambda _: None)
    first = tune(twice, ["d32"], trials=4, kind="debug", job_class=SyntheticJob, log=lambda _: None)
    second = tune(twice, ["d32"], trials=8, kind="debug", job_class=SyntheticJob, log=lambda _: None)
    assert (first.members[0].asked, second.members[0].asked) == (4, 4)
    a, b = _trials(tmp_path / "a" / "runs" / "tiny"), _trials(tmp_path / "b" / "runs" / "tiny")
    assert [t.number for t in b] == list(range(8)) and all(t.state.name == "COMPLETE" for t in b)
    assert len({tuple(sorted(t.params.items())) for t in b}) == 8
    assert [t.params for t in a] == [t.params for t in b]
    assert third_is_noop(twice)
    from sweeps.study import StudyError
    with pytest.raises(StudyError, match="was tuned with tokens 4096, not 2048"):   # another budget: refused
        tune(twice, ["d32"], trials=8, kind="debug", tokens=2048, job_class=SyntheticJob, log=lambda _: None)


def third_is_noop(study) -> bool:
    from sweeps.tune import tune

    r = tune(study, ["d32"], trials=8, kind="debug", job_class=SyntheticJob, log=lambda _: None).members[0]
    return (r.asked, r.resumed, r.dispatched, len(r.trials)) == (0, 0, 0, 8)


def test_pruning_cancels_trials_worse_than_the_median(tmp_path):
    """Local executor, SyntheticJob with evaluations every 512 tokens: trials 0-3 (enqueued near the
    optimum) complete; in the second batch the two enqueued far-off learning rates are pruned at their
    first evaluations and their jobs cancelled, the two good ones complete."""
    from sweeps.tune import tune

    def edit(d):
        d["tracking"] = {"enabled": False}
        d["eval"]["every_tokens"] = 512
        d["executor"]["slurm"]["array_parallelism"] = 4
        d["tune"] = {"trials_per_batch": 4, "tokens": 4096, "space": {"warmup": None, "batch_tokens": None}}
    from sweeps.study import load_study
    study = load_study(tiny_copy(tmp_path, edit))
    study_dir = tmp_path / "runs" / "tiny"
    study_dir.mkdir(parents=True)
    opt = A * 41_760 ** B                                             # d32's optimum
    o = optuna.create_study(study_name="tiny/ladder/d32", storage=f"sqlite:///{study_dir}/optuna.db")
    for lr in [opt, opt * 1.1, opt / 1.1, opt * 1.2, opt * 1.05, opt * 20, opt / 1.05, opt / 25]:
        o.enqueue_trial({"lr": min(max(lr, 3e-4), 3e-2)})           # the default range: [lr/10, 10 lr]
    t0 = time.time()
    tune(study, ["d32"], trials=8, kind="local", job_class=functools.partial(SyntheticJob, delay=0.4),
         log=lambda _: None, poll_s=0.2)
    trials = _trials(study_dir)
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE"] * 5 + ["PRUNED", "COMPLETE", "PRUNED"], states
    for t in (trials[5], trials[7]):
        assert t.user_attrs["pruned_at_eval"] <= 3 and len(t.intermediate_values) < 7
        assert json.loads((Path(t.user_attrs["run_dir"]) / "state.json").read_text())["state"] != "DONE"
    assert time.time() - t0 < 120


def test_bad_member_and_space_are_one_line_errors(tmp_path, cli):
    def edit(d):
        d["tune"] = {"space": {"context": {"choices": [32]}}}
    res = cli("tune", str(tiny_copy(tmp_path / "a", edit)), "--member", "d32")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "tune.space.context: not a tunable training setting" in res.stderr
    res = cli("tune", str(tiny_copy(tmp_path / "b")), "--member", "d99", "--executor", "debug")
    assert res.returncode == 2 and "--member d99: no such member; expected one of ladder/d16" in res.stderr
    res = cli("tune", str(tiny_copy(tmp_path / "c")), "--executor", "debug")
    assert res.returncode == 2 and "name the member(s) to tune with --member" in res.stderr


# --------------------------------------------------------------------------------------------------
# Real cells of examples/tiny.yaml


def _children(uri: str, experiment: str = "tiny"):
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if r.info.run_name == "tune-d32"]
    children = [r for r in runs if r.data.tags.get("slm.tune.trial") is not None]
    return client, parents, children


def _check_tuned(study_dir: Path, uri: str) -> None:
    trials = _trials(study_dir)
    assert [t.number for t in trials] == list(range(8)) and all(t.state.name == "COMPLETE" for t in trials)
    assert len({(t.params["lr"], t.params["warmup"]) for t in trials}) == 8                 # no trial repeated
    client, parents, children = _children(uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and parents[0].data.tags["kind"] == "tune"
    assert all(c.data.tags["kind"] == "tune-trial" for c in children)     # not harvested as grid cells
    parent = parents[0].info.run_id
    assert len(children) == 8 and all(c.data.tags["mlflow.parentRunId"] == parent for c in children)
    assert sorted(int(c.data.tags["slm.tune.trial"]) for c in children) == list(range(8))
    assert all(c.info.status == "FINISHED" for c in children)
    by_trial = {int(c.data.tags["slm.tune.trial"]): c for c in children}
    for t in trials:                                                   # the run holds the trial's settings
        assert float(by_trial[t.number].data.params["training.lr"]) == pytest.approx(t.params["lr"])
    arts = {a.path for a in client.list_artifacts(parent, "optuna")}
    assert {"optuna/optimization_history.png", "optuna/slice.png", "optuna/param_importances.png"} <= arts
    doc = json.loads((study_dir / "tuned.json").read_text())
    best = min(trials, key=lambda t: t.value)
    assert doc["members"]["ladder/d32"]["lr"] == best.params["lr"] and doc["law"]["lr"]["constant"]


def _launch(*args, timeout=600):
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"})


@pytest.mark.slow
def test_tune_local_interrupted_then_resumed(tmp_path):
    """8 trials of d32 at 4,096 tokens through the local executor, batches of 4. The first `tune` is
    killed once the second batch is dispatched; the second continues the same optuna study: it asks
    nothing new, waits for (or resubmits) trials 4-7 and tells them."""
    study = tiny_copy(tmp_path)
    study_dir = tmp_path / "runs" / "tiny"
    args = ("tune", str(study), "--member", "d32", "--trials", "8", "--tokens", "4096")
    t0 = time.time()
    out = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args], stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 400
    second = study_dir / "tune" / "ladder-d32" / "trial-0007" / "state.json"
    while time.time() < deadline and proc.poll() is None:
        if second.exists() and json.loads(second.read_text()).get("job_id"):
            break
        time.sleep(0.5)
    assert proc.poll() is None, (tmp_path / "first.log").read_text()
    os.kill(proc.pid, signal.SIGKILL)                                  # the driver only: its jobs live on
    proc.wait()
    out.close()
    t_first = time.time() - t0
    trials = _trials(study_dir)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4 + ["RUNNING"] * 4

    res = _launch(*args)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resuming 4 trial(s) of an interrupted tune: 4, 5, 6, 7" in res.stdout
    assert "8 trials (8 complete); this run asked 0, resumed 4" in res.stdout, res.stdout
    _check_tuned(study_dir, f"sqlite:///{study_dir}/mlflow.db")
    again = _launch(*args)                                             # finished: nothing asked or run
    assert again.returncode == 0 and "this run asked 0, resumed 0, dispatched 0 cell(s)" in again.stdout
    print(f"local tune: first run (killed) {t_first:.0f} s, total {time.time() - t0:.0f} s")


@pytest.fixture(scope="module")
def slurm():
    from slurm_cluster import SlurmUnavailable, ensure_slurm
    try:
        return ensure_slurm()
    except SlurmUnavailable as e:
        pytest.skip(f"no Slurm test cluster here: {e.reason}")


@pytest.mark.slow
def test_tune_through_slurm(tmp_path, slurm):
    """The same 8 trials as Slurm job arrays, trials logging to an MLflow server over HTTP."""
    from mlflow_server import MlflowServer
    from slurm_cluster import sacct_jobs, wait_for_empty_queue

    study = tiny_copy(tmp_path)
    study_dir = tmp_path / "runs" / "tiny"
    with MlflowServer(tmp_path / "mlflow") as server:
        t0 = time.time() - 1
        res = _launch("tune", str(study), "--member", "d32", "--trials", "8", "--tokens", "4096",
                      "--executor", "slurm", "--tracking-uri", server.uri)
        assert res.returncode == 0, res.stdout + res.stderr
        _check_tuned(study_dir, server.uri)
        jobs = sacct_jobs(t0)
        assert len(jobs) == 8 and len({j["array_job_id"] for j in jobs}) == 2      # two batches, two arrays
        print(f"slurm tune: {time.time() - t0:.0f} s")
    wait_for_empty_queue(60)
