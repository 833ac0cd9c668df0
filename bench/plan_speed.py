"""Planning speed: a 10,000-cell study (a 100-rung from-scratch ladder x 100 token budgets) from parsed
YAML to cells, parameter counts, keys, FLOPs and GPU-hours. Target: at most 1 s."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeps.plan import make_plan  # noqa: E402
from sweeps.study import parse_study  # noqa: E402

TARGET_SECONDS = 1.0


def study_dict(rungs: int = 100, budgets: int = 100) -> dict:
    members = {f"r{i:03d}": {"hidden_size": 64 * (1 + i % 25), "num_hidden_layers": 2 + i // 25}
               for i in range(rungs)}
    return {
        "name": "plan-speed",
        "root": "/nonexistent-plan-speed-root",
        "families": {"ladder": {"base": {"model_type": "llama", "vocab_size": 32000, "hidden_size": 64,
                                         "intermediate_size": 256, "num_hidden_layers": 2,
                                         "num_attention_heads": 4, "num_key_value_heads": 2},
                                "members": members, "init": "random"}},
        "grid": {"tokens": [1e8 * (1 + i) for i in range(budgets)]},
    }


def main() -> None:
    data = study_dict()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        plan = make_plan(parse_study(data, "bench"))
        times.append(time.perf_counter() - t0)
    assert len(plan.cells) == 10_000, len(plan.cells)
    print(json.dumps({"bench": "plan_speed", "cells": len(plan.cells), "seconds": round(min(times), 4),
                      "median_seconds": round(sorted(times)[len(times) // 2], 4),
                      "target_seconds": TARGET_SECONDS}))


if __name__ == "__main__":
    main()
