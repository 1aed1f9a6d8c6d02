"""Lint and type gates: ruff on the whole tree, mypy on the protocol and transport packages (STYLE.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_is_clean() -> None:
    proc = _run("ruff", "check", ".")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_mypy_is_clean_on_protocol_and_transport() -> None:
    proc = _run("mypy", "fl_protocol", "fl_transport")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
