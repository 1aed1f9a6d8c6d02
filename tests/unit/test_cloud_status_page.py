"""Status page rendering: escaped HTML with inline SVG, Prometheus text, JSON API over a real socket."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from aggregator_gateway.cloud.status_page import StatusPage, render_html, render_metrics


def snapshot() -> dict[str, Any]:
    """A snapshot as the coordinator builds it: two completed rounds, one failed, two nodes."""
    rounds = [
        {
            "round": 1,
            "state": "failed",
            "model_version": 0,
            "reported": 0,
            "survivors": 0,
            "dropped": 0,
            "train_loss": None,
            "eval_loss": None,
            "epsilon": 0.0,
            "seconds": 2.0,
        },
        {
            "round": 2,
            "state": "completed",
            "model_version": 0,
            "reported": 6,
            "survivors": 5,
            "dropped": 1,
            "train_loss": 3.5,
            "eval_loss": 3.6,
            "epsilon": 0.8,
            "seconds": 1.5,
            "uplink_bytes_per_device": 400,
        },
        {
            "round": 3,
            "state": "completed",
            "model_version": 1,
            "reported": 6,
            "survivors": 6,
            "dropped": 0,
            "train_loss": 3.1,
            "eval_loss": 3.2,
            "epsilon": 1.1,
            "seconds": 1.4,
            "uplink_bytes_per_device": 400,
        },
    ]
    return {
        "node": "cloud",
        "fleet": "f1",
        "state": "running",
        "current_round": 4,
        "model_version": 2,
        "rounds_planned": 5,
        "epsilon": 1.1,
        "delta": 1e-5,
        "rounds": rounds,
        "nodes": {
            "dev<1>": {
                "state": "idle",
                "reason": "<script>x</script>",
                "time_ms": 1,
                "details": {"round": 3, "train_loss": 3.0},
            }
        },
    }


def test_html_has_rows_charts_and_escapes() -> None:
    page = render_html(snapshot())
    assert page.count('class="round-row"') == 3
    assert page.count("<svg") == 2 and "<polyline" in page
    assert "<script>" not in page and "&lt;script&gt;" in page and "dev&lt;1&gt;" in page
    assert "src=" not in page and "<script" not in page and "<link" not in page  # nothing loaded, no JS


def test_metrics_text() -> None:
    text = render_metrics(snapshot())
    assert "fedlora_round 4.0" in text
    assert "fedlora_epsilon 1.1" in text
    assert "fedlora_survivors 6.0" in text
    assert "fedlora_rounds_failed 1.0" in text
    assert "# TYPE fedlora_epsilon gauge" in text
    no_dp = render_metrics({**snapshot(), "epsilon": None})
    assert "fedlora_epsilon +Inf" in no_dp


def test_server_serves_html_metrics_and_json() -> None:
    page = StatusPage(snapshot, host="127.0.0.1", port=0)
    page.start()
    try:
        base = f"http://127.0.0.1:{page.port}"
        with urllib.request.urlopen(f"{base}/api/rounds", timeout=5) as response:
            assert [r["round"] for r in json.load(response)["rounds"]] == [1, 2, 3]
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            assert b"fedlora_round" in response.read()
        with urllib.request.urlopen(f"{base}/", timeout=5) as response:
            assert b'id="rounds"' in response.read()
    finally:
        page.stop()
