"""The demo's local broker: amqtt carries large retained messages and prints no tracebacks under churn;
mosquitto is preferred when installed."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fedlora.embedded_broker import EmbeddedBroker, start_local_broker
from fl_transport.mqtt import MqttConnection, MqttSettings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_large_retained_message_reaches_late_subscriber() -> None:
    broker = EmbeddedBroker()
    broker.start()
    try:
        pub = MqttConnection(
            MqttSettings("127.0.0.1", broker.port, "pub", mqtt_version="3.1.1"), lambda t, p: None
        )
        pub.start()
        pub.wait_connected(10)
        payload = bytes(range(256)) * 20_000  # 5 MB: a global model of ~1.3M float32 values
        pub.publish("fl/v1/demo/model/0", payload, retain=True)
        assert pub.flush(30), "the broker never acknowledged the retained model"
        inbox: queue.Queue = queue.Queue()
        late = MqttConnection(
            MqttSettings("127.0.0.1", broker.port, "late", mqtt_version="3.1.1"),
            lambda t, p: inbox.put((t, p)),
        )
        late.subscribe("fl/v1/demo/model/+")
        late.start()
        assert inbox.get(timeout=10) == ("fl/v1/demo/model/0", payload)
        pub.stop()
        late.stop()
    finally:
        broker.stop()


def test_amqtt_under_subscription_churn_prints_no_traceback() -> None:
    """Issue 12 finding 10: amqtt raised "dictionary changed size during iteration" and printed it."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.integration.broker_hammer", "6", "10"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.strip().endswith("done"), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "RuntimeError" not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize("prefer", ["auto", "amqtt"])
def test_local_broker_carries_messages(prefer: str, tmp_path: Path) -> None:
    broker = start_local_broker(tmp_path / "broker", prefer=prefer)
    try:
        expected = "mosquitto" if prefer == "auto" and shutil.which("mosquitto") else "amqtt"
        assert broker.kind == expected
        inbox: queue.Queue = queue.Queue()
        sub = MqttConnection(
            MqttSettings("127.0.0.1", broker.port, "sub", mqtt_version=broker.mqtt_version),
            lambda t, p: inbox.put((t, p)),
        )
        sub.subscribe("fl/v1/demo/#")
        sub.start()
        sub.wait_connected(10)
        pub = MqttConnection(
            MqttSettings("127.0.0.1", broker.port, "pub", mqtt_version=broker.mqtt_version), lambda t, p: None
        )
        pub.start()
        pub.wait_connected(10)
        pub.publish("fl/v1/demo/status/x", b"hello", retain=True)
        assert inbox.get(timeout=10) == ("fl/v1/demo/status/x", b"hello")
        pub.stop()
        sub.stop()
    finally:
        broker.stop()
