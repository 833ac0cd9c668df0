#!/usr/bin/env bash
# Create .venv (if missing) and install slm-scaling with its test extra.
# torch is installed first and pinned (TORCH_SPEC) so pip never pulls a multi-GB CUDA build on a
# CPU machine; on a GPU cluster set TORCH_SPEC to the build you want (e.g. "torch==2.9.1").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.slm-scaling-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q "$TORCH_SPEC"
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$stamp"
fi
