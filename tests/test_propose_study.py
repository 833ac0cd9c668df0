"""`launch.py propose` on the tiny study: finished cells written through common.rundir (losses from a
known law), `propose --write`, then `submit` trains exactly the proposed cells; refusals are one line."""
import yaml

import launch
from common.rundir import RunDir
from sweeps.extra import EXTRA_NAME
from sweeps.grid import expand
from sweeps.study import load_study
from tests.fixtures_data import tiny_copy

LAW = (2.0, 30.0, 40.0, 0.35, 0.30)  # E, A, B, alpha, beta with N = params_total


def _finish(study, cells):
    """Write each cell's run dir as a finished run whose speech loss follows LAW exactly."""
    E, A, B, alpha, beta = LAW
    for c in cells:
        rd = RunDir(study.study_dir / c.key).create(c.to_json())
        rd.update("RUNNING")
        with rd.lease() as lease:
            lease.write_result({"key": c.key, "study": study.name, "tokens": c.tokens, "flops": c.flops,
                                "params": {"total": c.params.total, "nonembedding": c.params.nonembedding},
                                "val_loss": {"speech": E + A / c.params.total**alpha + B / c.tokens**beta}})
        rd.update("DONE")


def _study(tmp_path):
    path = tiny_copy(tmp_path, edit=lambda d: d.update(tracking={"enabled": False}))
    return path, load_study(path)


def test_propose_write_then_submit_trains_exactly_the_proposed_cells(tmp_path, capsys):
    path, study = _study(tmp_path)
    grid = expand(study)
    _finish(study, grid)
    assert launch.main(["propose", str(path), "--gpu-hours", "3e-4", "--candidates", "6", "--bootstrap", "40",
                        "--write"]) == 0
    out = capsys.readouterr().out
    proposed = yaml.safe_load((study.study_dir / EXTRA_NAME).read_text())["cells"]
    assert 1 <= len(proposed) and "added to" in out and (study.study_dir / "propose.png").stat().st_size > 0
    cells = expand(study)
    grid_keys = {c.key for c in grid}
    new_keys = {c.key for c in cells} - grid_keys
    assert len(new_keys) == len(proposed)
    for key in new_keys:
        assert key in out  # the table names every proposed cell
    # the loss target too (nothing written without --write)
    assert launch.main(["propose", str(path), "--gpu-hours", "1e-2", "--candidates", "6", "--bootstrap", "40",
                        "--target", "loss", "--at-flops", "1e11", "--max-cells", "2",
                        "--figure", str(tmp_path / "loss.png")]) == 0
    out = capsys.readouterr().out
    assert "compute-optimal loss at 1e+11 FLOPs" in out and (tmp_path / "loss.png").exists()
    assert "\n2 cells, " in out
    assert yaml.safe_load((study.study_dir / EXTRA_NAME).read_text())["cells"] == proposed
    assert launch.main(["submit", str(path), "--executor", "debug"]) == 0
    out = capsys.readouterr().out
    submitted = {line.split(":")[0] for line in out.splitlines() if ": submit (" in line}
    assert submitted == new_keys
    for key in new_keys:
        assert RunDir(study.study_dir / key).state()["state"] == "DONE"


def test_propose_refuses_with_what_to_run_first_and_writes_nothing(tmp_path, capsys):
    path, study = _study(tmp_path)
    grid = expand(study)
    _finish(study, [c for c in grid if c.setup == "interleaved"][:3])
    assert launch.main(["propose", str(path), "--gpu-hours", "1", "--write"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run first" in err and "ladder-" in err
    assert not (study.study_dir / EXTRA_NAME).exists()


def test_a_bad_proposed_file_is_one_line_naming_it(tmp_path, capsys):
    path, study = _study(tmp_path)
    study.study_dir.mkdir(parents=True)
    (study.study_dir / EXTRA_NAME).write_text(yaml.safe_dump({"cells": [
        {"family": "ladder", "member": "d99", "setup": "interleaved", "tokens": 1000}]}))
    assert launch.main(["plan", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and EXTRA_NAME in err and "d99" in err
    (study.study_dir / EXTRA_NAME).write_text(yaml.safe_dump({"cells": [
        {"family": "ladder", "member": "d32", "setup": "interleaved", "tokens": 1000, "colour": "red"}]}))
    assert launch.main(["plan", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "colour" in err and "unknown key" in err
