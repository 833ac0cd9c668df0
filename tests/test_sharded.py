"""Sharded training (FSDP2) on CPU with 2 processes over gloo, against a single-process run of the same
global batch: losses, held-out losses and final weights match; a run signalled on one rank at a random
step checkpoints on every rank and resumes (on 2 ranks, or on 1) to the same result.

Tolerance: fp32 on CPU; the sharded run sums gradients in another order (reduce-scatter over ranks),
so it matches the single-process run to float rounding, not bitwise. We allow 1e-4 absolute on every
logged loss (measured: about 1e-6)."""
import json
import random
import signal
import time
from pathlib import Path

import pytest
import yaml

import dist_launch
from fixtures_data import make_corpus, tiny_study

TOL = 1e-4


def test_step_geometry_keeps_the_global_batch_exact():
    """Brute force over batch sizes, micro-batches and world sizes: the ranks' rows hold every sequence
    of the step, no micro-batch exceeds `micro_batch`, and no rank runs a needless micro-batch."""
    from scaling.schedule import step_geometry

    for T in (32, 2048):
        for seqs in range(1, 40):
            for mb in (1, 3, 8):
                for world in (1, 2, 3, 8):
                    g, rows, accum = step_geometry(seqs * T, T, mb, world)
                    assert g == seqs
                    dealt = [len(range(r, seqs, world)) for r in range(world)]   # round-robin
                    assert max(dealt) <= rows * accum and rows <= mb
                    assert (accum - 1) * mb < max(dealt) or accum == 1
                    assert rows * accum - max(dealt) < accum                   # padding below one row per micro-batch
    assert step_geometry(131072, 2048, 8, 8) == (64, 8, 1)                     # SIMS: 8 GPUs x 8 x 2048
    assert step_geometry(131072, 2048, 8, 1) == (64, 8, 8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def make_cell(tmp: Path, corpus: dict, name: str, model_type: str = "llama", tracking: bool = False, **training):
    from sweeps.grid import expand
    from sweeps.rundirs import ensure_run_dir
    from sweeps.study import load_study

    d = tmp / name
    d.mkdir(parents=True)
    training = {"doc_mask": True, **training}                           # attention inside documents
    data = tiny_study(d, corpus, model_type, tokens=8000, **training)   # 32 steps of 8 sequences
    data["eval"]["val_tokens"] = 1000
    data["eval"]["every_tokens"] = 4000                                 # a held-out evaluation mid-run too
    if tracking:
        data["tracking"] = {"enabled": True, "uri": f"sqlite:///{d / 'mlflow.db'}", "experiment": name}
    path = d / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    study = load_study(path)
    (cell,) = expand(study)
    return ensure_run_dir(study, cell)


def run(run_dir: Path, world: int) -> list[int]:
    return dist_launch.wait(dist_launch.start(run_dir, world, run_dir / "rank-logs"))


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]


def losses(run_dir: Path) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in metrics(run_dir) if "loss" in m}


def logs(run_dir: Path) -> str:
    return "".join(p.read_text() for p in sorted((run_dir / "rank-logs").glob("*.log")))


def assert_matches(run_dir: Path, ref_dir: Path) -> None:
    a, b = losses(run_dir), losses(ref_dir)
    assert sorted(a) == sorted(b) == list(range(1, 33))
    worst = max(abs(a[s] - b[s]) for s in a)
    print(f"largest |loss difference| against the single-process run: {worst:.3g}")
    assert worst < TOL
    mid = [{k: v for k, v in m.items() if k.startswith("val_loss/")} for d in (run_dir, ref_dir)
           for m in metrics(d) if m["step"] == 16]
    assert len(mid) == 2 and mid[0] and set(mid[0]) == set(mid[1])
    assert all(abs(mid[0][k] - mid[1][k]) < TOL for k in mid[0])
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (run_dir, ref_dir))
    assert ra["tokens"] == rb["tokens"] == 8000 and ra["steps"] == rb["steps"]
    for s in rb["val_loss"]:
        assert abs(ra["val_loss"][s] - rb["val_loss"][s]) < TOL
    from safetensors.torch import load_file

    wa, wb = (load_file(str(d / "model" / "model.safetensors")) for d in (run_dir, ref_dir))
    assert set(wa) == set(wb)
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < TOL


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus):
    """The single-process, unsharded, eager run (tied embeddings: llama in tiny_study)."""
    ref = make_cell(tmp_path_factory.mktemp("ref"), corpus, "ref", sharding="none")
    assert run(ref, 1) == [0], logs(ref)
    assert json.loads((ref / "result.json").read_text())["sharded"] is False
    return ref


def test_two_ranks_sharded_match_single_process(tmp_path, corpus, reference):
    cell = make_cell(tmp_path, corpus, "fsdp", sharding="fsdp", tracking=True)
    assert run(cell, 2) == [0, 0], logs(cell)
    result = json.loads((cell / "result.json").read_text())
    assert result["world_size"] == 2 and result["sharded"] is True
    assert "2 proc" in logs(cell) and "fsdp" in logs(cell)
    assert_matches(cell, reference)
    # MLflow from rank 0 only: one run, each step logged once
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'fsdp' / 'mlflow.db'}")
    (r,) = client.search_runs([client.get_experiment_by_name("fsdp").experiment_id])
    hist = client.get_metric_history(r.info.run_id, "loss")
    assert sorted(m.step for m in hist) == [256 * i for i in range(1, 32)] + [8000]   # step axis: tokens


def _signal_at_random_step(procs, run_dir: Path, rank: int, signum: int) -> int:
    step = random.Random().randint(3, 20)
    print(f"signal {signum} to rank {rank} at step {step}")
    deadline = time.time() + 300
    while time.time() < deadline:
        if (run_dir / "metrics.jsonl").is_file() and len(losses(run_dir)) >= step:
            procs[rank].send_signal(signum)
            return step
        assert all(p.poll() is None for p in procs), logs(run_dir)
        time.sleep(0.02)
    raise AssertionError("the run never reached the step")


def _interrupted_checkpoint(run_dir: Path, step: int) -> Path:
    """The newest checkpoint is complete, from both ranks."""
    from scaling import checkpoint

    ck = checkpoint.latest(run_dir)
    assert ck is not None and int(ck.name.split("_")[1]) >= step
    names = {p.name for p in ck.iterdir()}
    # model/optimizer shards from both ranks, RNG per rank, the rest once (rank 0)
    assert {".metadata", "__0_0.distcp", "__1_0.distcp", "rng_rank0.pt", "rng_rank1.pt", "meta.pt"} <= names
    assert not list((run_dir / "checkpoints").glob("*.tmp"))
    assert json.loads((run_dir / "state.json").read_text())["state"] == "PENDING"
    return ck


def test_preempted_rank_resumes_on_two_ranks_and_matches(tmp_path, corpus, reference):
    cell = make_cell(tmp_path, corpus, "pre2", sharding="fsdp")
    procs = dist_launch.start(cell, 2, cell / "rank-logs")
    step = _signal_at_random_step(procs, cell, rank=1, signum=signal.SIGUSR2)   # one rank only
    assert dist_launch.wait(procs) == [3, 3], logs(cell)                       # both checkpoint and stop
    _interrupted_checkpoint(cell, step)
    assert run(cell, 2) == [0, 0], logs(cell)
    assert "resumed from step_" in logs(cell)
    assert_matches(cell, reference)


@pytest.mark.parametrize("mode", ["fsdp", "none"])   # FSDP2 shards, or DDP replicas (written once by DCP)
def test_checkpoint_of_two_ranks_resumes_with_one(tmp_path, corpus, reference, mode):
    cell = make_cell(tmp_path, corpus, "pre1", sharding=mode)
    procs = dist_launch.start(cell, 2, cell / "rank-logs")
    step = _signal_at_random_step(procs, cell, rank=0, signum=signal.SIGTERM)
    assert dist_launch.wait(procs) == [3, 3], logs(cell)
    _interrupted_checkpoint(cell, step)
    assert run(cell, 1) == [0], logs(cell)
    assert "written by 2 proc, now 1" in logs(cell)
    result = json.loads((cell / "result.json").read_text())
    assert result["world_size"] == 1
    assert_matches(cell, reference)


def test_compiled_doc_masked_fused_path_under_sharding(tmp_path, corpus, reference):
    """The GPU-speed path (compiled blocks, attention inside documents, fused head + loss) under FSDP2
    on 2 ranks, against the eager, unsharded single-process run (same maths, fp32)."""
    sharded = make_cell(tmp_path, corpus, "c2", sharding="fsdp", compile=True)
    assert run(sharded, 2) == [0, 0], logs(sharded)
    result = json.loads((sharded / "result.json").read_text())
    assert result["compiled"] and result["doc_mask"] and result["fused_head"] and result["sharded"]
    assert_matches(sharded, reference)
