"""Session fixtures shared by integration modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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
