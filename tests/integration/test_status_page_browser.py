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
            "reported": 4,
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


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_demo_prints_its_status_page_and_the_page_shows_the_rounds(tmp_path: Path) -> None:
    """`fedlora demo` runs the cloud's status page, prints its URL, and the page renders the loss curve."""
    import os
    import re
    import sys

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root), FEDLORA_CACHE_DIR=str(tmp_path / "cache"))
    command = [sys.executable, "-m", "fedlora.cli", "demo", "--model", "tiny-llama", "--devices", "4"]
    command += ["--rounds", "5", "--dropout", "0", "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url, dom, lines = None, "", []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            found = re.search(r"status page: (http://127\.0\.0\.1:\d+/)", line)
            url = found.group(1) if found else url
            if url and not dom and line.startswith("round 1: done"):
                dom = _dump_dom(url, tmp_path)  # four more rounds keep the cloud (and its page) up
        code = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(lines)
    assert code == 0, output[-3000:]
    assert url is not None, output[-3000:]
    assert dom.count('class="round-row"') >= 1, dom[:2000] + output[-3000:]
    assert 'data-round="1"' in dom and "demo" in dom and "<polyline" in dom


def _dump_dom(url: str, tmp_path: Path) -> str:
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--dump-dom",
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False).stdout
