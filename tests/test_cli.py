"""The command line as a user types it."""
import json
import subprocess
import sys
from pathlib import Path

import launch

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = {"key", "family", "member", "init", "params_total", "params_embedding", "params_nonembedding",
            "tokens", "flops", "gpu_hours"}


def test_plan_sims_table(cli):
    res = cli("plan", "examples/sims.yaml")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "qwen2.5-7B-15.1B-" in out and "llama3.2-3B-" in out
    assert "16 cells" in out and "a100 GPU-hours" in out and "assumed MFU 35%" in out
    assert "494M" in out  # Qwen2.5-0.5B + 502 rows rounds to 494M


def test_plan_json(cli):
    res = cli("plan", "examples/sims.yaml", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert len(rows) == 16 and all(REQUIRED <= set(r) for r in rows)
    assert all(r["params_total"] == r["params_embedding"] + r["params_output_head"] + r["params_nonembedding"]
               for r in rows)


def test_plan_tiny(cli):
    res = cli("plan", "examples/tiny.yaml", "--json")
    rows = json.loads(res.stdout)
    assert {r["setup"] for r in rows} == {"interleaved", "textless"}


def test_help_on_every_subcommand(cli):
    parser = launch.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert sub.choices
    for name in sub.choices:
        res = cli(name, "--help")
        assert res.returncode == 0 and "usage:" in res.stdout, name
    assert cli("--help").returncode == 0


def test_console_script():
    script = Path(sys.executable).parent / "slm-scaling"
    assert script.exists(), "pip install -e . installs the slm-scaling console script"
    res = subprocess.run([str(script), "plan", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "usage: slm-scaling plan" in res.stdout


def test_bad_flag_exit_2(cli):
    res = cli("plan", "examples/sims.yaml", "--no-such-flag")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: slm-scaling: unrecognized arguments: --no-such-flag (see slm-scaling --help)"]
