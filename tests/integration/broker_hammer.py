"""Hammer the in-process amqtt broker: retained messages while many clients connect, subscribe and leave.

Run as `python -m tests.integration.broker_hammer SECONDS THREADS`; prints "done" at the end. amqtt 0.12
unpatched prints "RuntimeError: dictionary changed size during iteration" tracebacks under this load.
"""

from __future__ import annotations

import sys
import threading
import time

from fedlora.embedded_broker import EmbeddedBroker
from fl_transport.mqtt import MqttConnection, MqttSettings


def _churn(port: int, index: int, publisher: MqttConnection, stop_at: float) -> None:
    while time.monotonic() < stop_at:
        client = MqttConnection(
            MqttSettings("127.0.0.1", port, f"c{index}", mqtt_version=EmbeddedBroker.mqtt_version),
            lambda _t, _p: None,
        )
        for j in range(5):
            client.subscribe("fl/v1/demo/status/+")
            client.subscribe(f"fl/v1/demo/x{index}/{j}/#")
        client.start()
        client.wait_connected(10)
        for j in range(10):
            publisher.publish(f"fl/v1/demo/status/n{j}", b"y" * 500, retain=True)
        time.sleep(0.2)  # pacing of the load (about 5 connections a second per thread), not a wait
        client.stop()


def main(seconds: float, threads: int) -> None:
    broker = EmbeddedBroker()
    broker.start()
    publisher = MqttConnection(
        MqttSettings("127.0.0.1", broker.port, "pub", mqtt_version=broker.mqtt_version), lambda _t, _p: None
    )
    publisher.start()
    publisher.wait_connected(10)
    for i in range(30):
        publisher.publish(f"fl/v1/demo/status/n{i}", b"x" * 1000, retain=True)
    stop_at = time.monotonic() + seconds
    workers = [
        threading.Thread(target=_churn, args=(broker.port, k, publisher, stop_at)) for k in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    publisher.stop()
    broker.stop()
    print("done", flush=True)


if __name__ == "__main__":
    main(float(sys.argv[1]), int(sys.argv[2]))
