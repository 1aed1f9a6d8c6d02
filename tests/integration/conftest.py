"""Session fixtures shared by integration modules: brokers (the real mosquitto, started by
tests/integration/mosquitto_fixture.py) and the wheelhouse. Shared factories: tests/kit."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.mosquitto_fixture import HOST, MosquittoHandle, free_port, start_mosquitto

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoHandle]:
    """A plain mosquitto (anonymous, no TLS, no persistence) on an ephemeral 127.0.0.1 port, its config
    and log in `tmp_path`; stopped at teardown. `mosquitto.port` is where to connect."""
    port = free_port()
    handle = start_mosquitto(f"listener {port} {HOST}\nallow_anonymous true\n", port, workdir=tmp_path)
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fedlora (this working tree) and its [device] dependencies as wheels, built as docs/install.md says
    (`pip wheel -w wheels/ '.[device]'`) against the configured registry; once per session."""
    out = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--disable-pip-version-check",
            "-w",
            str(out),
            f"{ROOT}[device]",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return out
