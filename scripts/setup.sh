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
echo "[setup] done: $(python -c 'import fedlora, sys; print(sys.version.split()[0])')"
