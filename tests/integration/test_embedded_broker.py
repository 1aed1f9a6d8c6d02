"""The demo's in-process amqtt broker carries large retained messages to late subscribers."""

from __future__ import annotations

import queue
import time

import pytest

from fedlora.embedded_broker import EmbeddedBroker
from fl_transport.mqtt import MqttConnection, MqttSettings

pytestmark = pytest.mark.integration


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
        time.sleep(0.5)
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
