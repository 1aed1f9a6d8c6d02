#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine and run it.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m slow` for the benchmarks).
set -euo pipefail
cd "$(dirname "$0")/.."
# mosquitto for the integration tests (real broker), chromium for the status-page browser test,
# shellcheck for the installer lint test.
if ! command -v mosquitto >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1 \
    || ! command -v shellcheck >/dev/null 2>&1; then
    echo "[test] installing mosquitto, chromium and shellcheck (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq mosquitto mosquitto-clients chromium shellcheck >/dev/null
fi
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
# pytest exits 5 when it collected no test: that is a failure here, never a silent pass.
python -m pytest -q --durations=15 "$@"
