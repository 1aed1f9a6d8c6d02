"""MQTT clients for tests: `connect` (a connection with an inbox) and `wait_subscribed`, knowing when a
subscription is active without a SUBACK callback or a sleep.

A broker handles one connection's packets in order (MQTT 3.1.1 §4.6; mosquitto is single-threaded), so
when a connection subscribes to a private probe topic after its other subscriptions and then publishes
to it, the probe's return proves that every earlier SUBSCRIBE of that connection was applied.
"""

from __future__ import annotations

import queue
import uuid
from collections.abc import Iterable
from typing import Any

from fl_transport.mqtt import MqttConnection, MqttSettings
from tests.kit.waits import wait_until

HOST = "127.0.0.1"
PROBE_PREFIX = "test-probe"


def wait_subscribed(conn: MqttConnection, inbox: queue.Queue[Any], *, timeout_s: float = 10.0) -> None:
    """Block until the subscriptions `conn` made so far are active at the broker.

    conn: connected, and delivering (topic, payload) tuples to `inbox`. The probe (one message on a
    topic only `conn` subscribes to) is taken out of `inbox`; every other message stays in it, in order.
    AssertionError after `timeout_s`.
    """
    probe = f"{PROBE_PREFIX}/{uuid.uuid4().hex}"
    conn.subscribe(probe)
    conn.publish(probe, b"probe")
    wait_until(lambda: _take(inbox, probe), timeout_s=timeout_s, what=f"probe {probe} back from the broker")


def _take(inbox: queue.Queue[Any], topic: str) -> bool:
    """Remove the first message on `topic` from `inbox` (leaving the others in order); True if found."""
    with inbox.mutex:
        for item in inbox.queue:
            if item[0] == topic:
                inbox.queue.remove(item)
                return True
    return False


def connect(
    port: int, client_id: str, filters: Iterable[str] = (), **settings: Any
) -> tuple[MqttConnection, queue.Queue[tuple[str, bytes]]]:
    """A connected MqttConnection to 127.0.0.1:`port` (clean session; `settings`: other MqttSettings
    fields) whose messages go to the returned inbox as (topic, payload); subscribed to `filters`, every
    subscription active before it returns (`wait_subscribed`)."""
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
    options: dict[str, Any] = {"clean_session": True, **settings}
    conn = MqttConnection(
        MqttSettings(HOST, port, client_id, **options), lambda topic, payload: inbox.put((topic, payload))
    )
    for topic_filter in filters:
        conn.subscribe(topic_filter)
    conn.start()
    conn.wait_connected(10)
    wait_subscribed(conn, inbox)
    return conn, inbox
