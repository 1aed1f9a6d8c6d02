"""Fixtures shared by every test directory; the factories behind them live in tests/kit (see its
docstring for the map): round tasks (`tests.kit.tasks`), fleets and clocks (`tests.kit.fleet`), bundles
(`tests.kit.bundles`), waits (`tests.kit.waits`). Broker fixtures: tests/integration/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kit.bundles import export_tiny_llama
from tests.kit.fleet import ManualClock


@pytest.fixture(scope="session")
def tiny_llama_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-llama bundle (seq_len 32) exported once per test session. Shared: read it, or copy it
    (`shutil.copytree`) before changing anything in it."""
    out = tmp_path_factory.mktemp("tiny-llama") / "bundle"
    export_tiny_llama(out)
    return out


@pytest.fixture
def manual_clock() -> ManualClock:
    """A millisecond clock at 1,000 ms that moves only when the test sets `manual_clock.now_ms`."""
    return ManualClock()
