"""A WSD study on the real test Slurm (issue 20): the trunk goes out as one segment job per branch step,
chained by afterany dependencies, each branch after the segment that writes its branch point, so a
branch trains while its trunk goes on (sacct's timestamps); a resubmit then submits nothing."""
import datetime as dt
import json
import time

from fixtures_data import tiny_copy as study_copy
from test_dispatch_slurm import launch, slurm  # noqa: F401 (slurm: fixture)
from slurm_cluster import sacct_jobs, squeue_ids, wait_for_empty_queue


def _when(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp)


def test_branches_start_before_their_trunk_ends_and_resubmit_is_noop(tmp_path, slurm):  # noqa: F811
    def edit(d):
        d["name"] = "wsdslurm"
        d["families"]["ladder"]["members"] = {"d16": d["families"]["ladder"]["members"]["d16"]}
        d["grid"] = {"tokens": [40960, 81920, 163840]}       # 40, 80, 160 steps: branch points 32, 64, 128
        d["training"].update(schedule="wsd", log_every=8)
        d["tracking"] = {"enabled": False}
    study = study_copy(tmp_path, edit)
    t0 = time.time() - 1
    res = launch("submit", str(study), "--executor", "slurm")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "submit (new to steps 32, 64, 128)" in res.stdout and "submitted 3 of 3 cells" in res.stdout, res.stdout
    study_dir = tmp_path / "runs" / "wsdslurm"
    trunk = next(study_dir.glob("trunk-*"))
    segments = json.loads((trunk / "state.json").read_text())["segment_jobs"]
    assert sorted(map(int, segments)) == [32, 64, 128]
    branch_jobs = {p.name: json.loads((p / "state.json").read_text())["job_id"]
                   for p in study_dir.iterdir() if p.name.startswith("ladder-")}
    deadline = time.time() + 600
    while time.time() < deadline:
        done = [p for p in study_dir.glob("ladder-*/result.json")]
        if len(done) == 3 and not squeue_ids():
            break
        time.sleep(1)
    assert len(list(study_dir.glob("ladder-*/result.json"))) == 3, squeue_ids()
    wait_for_empty_queue(60)
    deadline = time.time() + 60       # accounting records may lag the queue
    while time.time() < deadline:
        rows = {r["job_id"]: r for r in sacct_jobs(t0)}
        if all(j in rows and rows[j]["end"] not in ("", "Unknown") for j in [*segments.values(), *branch_jobs.values()]):
            break
        time.sleep(1)
    trunk_end = max(_when(rows[j]["end"]) for j in segments.values())
    starts = {k: _when(rows[j]["start"]) for k, j in branch_jobs.items()}
    first = min(starts, key=starts.get)
    print({"trunk_segments": {b: (rows[j]["start"], rows[j]["end"]) for b, j in segments.items()},
           "branches": {k: (rows[j]["start"], rows[j]["end"]) for k, j in branch_jobs.items()}})
    assert starts[first] < trunk_end, (starts, trunk_end)
    seg32 = rows[segments["32"]]
    assert _when(rows[branch_jobs[first]]["start"]) >= _when(seg32["end"])   # after its point was written
    assert all(rows[j]["state"] == "COMPLETED" for j in [*segments.values(), *branch_jobs.values()])

    t1 = time.time() + 1
    time.sleep(2)
    again = launch("submit", str(study), "--executor", "slurm")
    assert again.returncode == 0 and "submitted 0 of 3 cells" in again.stdout, again.stdout
    assert "skip (every branch point written)" in again.stdout, again.stdout
    time.sleep(2)
    assert sacct_jobs(t1) == [] and squeue_ids() == []
    status = launch("status", str(study))
    assert "DONE 3" in status.stdout and "128/128" in status.stdout, status.stdout


def test_cancel_takes_the_trunk_segments_with_the_branches(tmp_path, slurm):  # noqa: F811
    def edit(d):
        d["name"] = "wsdcancel"
        d["families"]["ladder"]["members"] = {"d16": d["families"]["ladder"]["members"]["d16"]}
        d["grid"] = {"tokens": [409600, 819200]}
        d["training"].update(schedule="wsd", log_every=8)
        d["tracking"] = {"enabled": False}
    study = study_copy(tmp_path, edit)
    res = launch("submit", str(study), "--executor", "slurm")
    assert res.returncode == 0 and "submitted 2 of 2 cells" in res.stdout, res.stdout + res.stderr
    assert len(squeue_ids()) >= 4          # two segments, two branches held by their dependencies
    out = launch("cancel", str(study))
    assert out.returncode == 0 and "cancelled 3 cell(s)" in out.stdout, out.stdout + out.stderr
    wait_for_empty_queue(60)
    assert "trunk-ladder-d16-" in out.stdout
