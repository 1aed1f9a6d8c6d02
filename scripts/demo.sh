#!/usr/bin/env bash
# Set up fedlora and run its main job on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
fedlora demo "$@"
