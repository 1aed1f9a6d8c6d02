"""The cloud status page renders in a real headless Chromium (Debian `chromium`), no JS or network needed.

Needs `apt-get install -y chromium` in the test environment; skipped with that reason when it is absent.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from aggregator_gateway.cloud.status_page import StatusPage

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _snapshot() -> dict[str, Any]:
    rounds = [
        {
            "round": r,
            "state": "completed",
            "model_version": r - 1,
            "selected": 4,
            "survivors": 3,
            "dropped": 1,
            "train_loss": 4.0 - 0.3 * r,
            "eval_loss": 4.1 - 0.3 * r,
            "epsilon": 0.5 * r,
            "seconds": 1.0,
        }
        for r in (1, 2, 3)
    ]
    return {
        "node": "cloud",
        "fleet": "browserfleet",
        "state": "running",
        "current_round": 4,
        "model_version": 3,
        "rounds_planned": 5,
        "epsilon": 1.5,
        "delta": 1e-5,
        "rounds": rounds,
        "nodes": {"dev1": {"state": "idle", "reason": "", "time_ms": 1, "details": {"round": 3}}},
    }


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_round_table_is_in_the_rendered_dom(tmp_path: Path) -> None:
    page = StatusPage(_snapshot, host="127.0.0.1", port=0)
    page.start()
    try:
        command = [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            f"http://127.0.0.1:{page.port}/",
        ]
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    finally:
        page.stop()
    dom = out.stdout
    assert out.returncode == 0, out.stderr[-2000:]
    assert dom.count('class="round-row"') == 3, dom[:2000]
    for round_id in (1, 2, 3):
        assert f'data-round="{round_id}"' in dom
    assert "browserfleet" in dom and "<svg" in dom and "<polyline" in dom
