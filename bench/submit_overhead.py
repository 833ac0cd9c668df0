"""Submit overhead: wall time to prepare (plan, run dirs, code snapshot) and submit a 1,000-cell study
to the test Slurm cluster (scripts/slurm/start.sh), each cell a no-op job; the queued jobs are cancelled
afterwards. Target: at most 10 s."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from slurm_cluster import ensure_slurm  # noqa: E402
from sweeps.cell_job import NoopCellJob  # noqa: E402
from sweeps.dispatch import submit  # noqa: E402
from sweeps.study import parse_study  # noqa: E402

TARGET_SECONDS = 10.0


def main() -> None:
    ensure_slurm()
    with tempfile.TemporaryDirectory() as tmp:
        members = {f"r{i}": {"hidden_size": 16 * (i + 1)} for i in range(10)}
        data = {"name": "submit-bench", "root": tmp,
                "families": {"ladder": {"base": {"model_type": "llama", "vocab_size": 256, "hidden_size": 16,
                                                 "intermediate_size": 64, "num_hidden_layers": 2,
                                                 "num_attention_heads": 2, "num_key_value_heads": 1},
                                        "members": members, "init": "random"}},
                "grid": {"tokens": [1000 * (i + 1) for i in range(100)]},
                "tracking": {"enabled": False},
                "executor": {"kind": "slurm", "gpu_type": "cpu", "peak_tflops": 0.1,
                             "slurm": {"cpus_per_task": 1, "mem_gb": 0.1, "time_min": 5}}}
        study = parse_study(data, "bench")
        t0 = time.perf_counter()
        report = submit(study, job_class=NoopCellJob)
        seconds = time.perf_counter() - t0
        ids = sorted({j.split("_")[0] for j in report.job_ids.values()})
        subprocess.run(["scancel", *ids], check=False)
    print(json.dumps({"bench": "submit_overhead", "cells": len(report.submitted), "arrays": report.arrays,
                      "seconds": round(seconds, 2), "target_seconds": TARGET_SECONDS}))


if __name__ == "__main__":
    main()
