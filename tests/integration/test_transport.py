"""MQTT transport against a real mosquitto on 127.0.0.1: delivery, reconnect, outbox, last will."""

from __future__ import annotations

import queue
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fl_transport.mqtt import MqttConnection, MqttSettings, TransportError
from fl_transport.outbox import Outbox
from tests.integration.mosquitto_fixture import HOST, MosquittoHandle, free_port, start_mosquitto
from tests.kit.mqtt import wait_subscribed
from tests.kit.waits import wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _conf(port: int) -> str:
    return f"listener {port} {HOST}\nallow_anonymous true\n"


def _client(port: int, name: str, inbox: queue.Queue, **kwargs: object) -> MqttConnection:
    settings = MqttSettings(HOST, port, name, reconnect_min_s=0.2, reconnect_max_s=1.0)
    conn = MqttConnection(settings, lambda topic, payload: inbox.put((topic, payload)), **kwargs)  # type: ignore[arg-type]
    conn.start()
    return conn


def _receive(inbox: queue.Queue, timeout_s: float = 10.0) -> tuple[str, bytes]:
    return inbox.get(timeout=timeout_s)


def test_publish_is_delivered(mosquitto: MosquittoHandle) -> None:
    inbox: queue.Queue = queue.Queue()
    sub = _client(mosquitto.port, "sub", inbox)
    sub.subscribe("fl/v1/test/#")
    sub.wait_connected(10)
    wait_subscribed(sub, inbox)
    pub = _client(mosquitto.port, "pub", queue.Queue())
    pub.wait_connected(10)
    pub.publish("fl/v1/test/a", b"hello")
    assert _receive(inbox) == ("fl/v1/test/a", b"hello")
    sub.stop()
    pub.stop()


def test_reconnects_after_broker_restart_and_delivers_queued(tmp_path: Path) -> None:
    port = free_port()
    # Persistence as in production (docs/design.md §9): the subscriber's persistent session survives the
    # restart, so the message is queued for it whichever client reconnects first.
    conf = _conf(port) + f"persistence true\npersistence_location {tmp_path}/\n"
    broker = start_mosquitto(conf, port, workdir=tmp_path)
    inbox: queue.Queue = queue.Queue()
    sub = _client(port, "sub", inbox)
    sub.subscribe("t/#")
    pub = _client(port, "pub", queue.Queue())
    try:
        sub.wait_connected(10)
        pub.wait_connected(10)
        wait_subscribed(sub, inbox)
        broker.stop()
        wait_until(lambda: not pub.connected, timeout_s=10, what="the publisher noticing the broker is gone")
        pub.publish("t/x", b"sent while the broker was down")  # QoS 1: queued by paho
        broker.start()
        sub.wait_connected(15)
        pub.wait_connected(15)
        assert _receive(inbox, 15) == ("t/x", b"sent while the broker was down")
    finally:
        sub.stop()
        pub.stop()
        broker.stop()


_CRASHING_PUBLISHER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from fl_transport.mqtt import MqttConnection, MqttSettings, Will
    from fl_transport.outbox import Outbox
    port, outbox_dir, mode = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    will = Will("status/crasher", b"offline") if mode == "will" else None
    conn = MqttConnection(MqttSettings("127.0.0.1", port, "crasher", reconnect_min_s=0.2, reconnect_max_s=1),
                          lambda t, p: None, will=will, outbox=Outbox(outbox_dir))
    conn.start()
    if mode == "will":
        conn.wait_connected(10)
    else:
        conn.publish("t/update", b"masked update", durable=True)
    print("ready", flush=True)
    sys.stdin.read()  # until the test kills this process (or, if the test dies, closes the pipe)
""")


def _spawn(port: int, outbox_dir: Path, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_PUBLISHER, str(port), str(outbox_dir), mode],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_outbox_survives_process_death_before_puback(tmp_path: Path) -> None:
    port = free_port()
    outbox_dir = tmp_path / "outbox"
    proc = _spawn(port, outbox_dir, "durable")  # no broker yet: the publish cannot be acknowledged
    proc.kill()
    proc.communicate()  # reaps it and closes its pipes
    assert len(Outbox(outbox_dir)) == 1
    broker = start_mosquitto(_conf(port), port, workdir=tmp_path)
    inbox: queue.Queue = queue.Queue()
    sub = _client(port, "sub", inbox)
    sub.subscribe("t/#")
    try:
        sub.wait_connected(10)
        wait_subscribed(sub, inbox)
        restarted = _client(port, "crasher", queue.Queue(), outbox=Outbox(outbox_dir))
        assert _receive(inbox) == ("t/update", b"masked update")
        wait_until(
            lambda: len(Outbox(outbox_dir)) == 0,
            timeout_s=5,
            what="the acknowledged message leaving the outbox",
        )
        restarted.stop()
    finally:
        sub.stop()
        broker.stop()


def test_last_will_is_published_when_a_node_dies(mosquitto: MosquittoHandle, tmp_path: Path) -> None:
    inbox: queue.Queue = queue.Queue()
    sub = _client(mosquitto.port, "watcher", inbox)
    sub.subscribe("status/#")
    try:
        sub.wait_connected(10)
        wait_subscribed(sub, inbox)
        proc = _spawn(mosquitto.port, tmp_path / "ob", "will")
        proc.kill()
        proc.communicate()  # reaps it and closes its pipes
        assert _receive(inbox, 15) == ("status/crasher", b"offline")
    finally:
        sub.stop()


def test_unreachable_broker_is_a_clear_error() -> None:
    conn = MqttConnection(MqttSettings(HOST, free_port(), "lonely"), lambda t, p: None)
    conn.start()
    with pytest.raises(TransportError, match="no connection to mqtt broker 127.0.0.1"):
        conn.wait_connected(0.5)
    conn.stop()


def test_flush_waits_for_acknowledgements(tmp_path: Path) -> None:
    port = free_port()
    broker = start_mosquitto(_conf(port), port, workdir=tmp_path)
    try:
        pub = _client(port, "flusher", queue.Queue())
        pub.wait_connected(10)
        for i in range(50):
            pub.publish(f"t/{i}", b"x" * 10_000, retain=True)
        assert pub.flush(10)
        pub.stop()
        inbox: queue.Queue = queue.Queue()
        late = _client(port, "late", inbox)
        late.subscribe("t/#")
        got = {_receive(inbox)[0] for _ in range(50)}
        assert got == {f"t/{i}" for i in range(50)}
        late.stop()
    finally:
        broker.stop()


def test_unsubscribe_stops_a_subscription(mosquitto: MosquittoHandle) -> None:
    """A device's full-model fetch: subscribe to model/5 (the retained message arrives at once), then
    unsubscribe; a later message on model/5 is not delivered. Proven without waiting:
    the publisher's messages reach a subscriber in order, so once the probe published after them is
    back, anything still subscribed would have arrived before it."""
    model, probe = "fl/v1/f/model/5", "fl/v1/f/status/probe"
    pub = _client(mosquitto.port, "pub", queue.Queue())
    pub.wait_connected(10)
    pub.publish(model, b"v5", retain=True)
    inbox: queue.Queue = queue.Queue()
    sub = _client(mosquitto.port, "sub", inbox)
    sub.wait_connected(10)
    sub.subscribe(probe)
    sub.subscribe(model)
    assert _receive(inbox) == (model, b"v5")
    sub.unsubscribe(model)
    wait_subscribed(sub, inbox)  # the UNSUBSCRIBEs went before this probe, so the broker applied them
    pub.publish(model, b"later", retain=True)
    pub.publish(probe, b"after")
    assert _receive(inbox) == (probe, b"after")
    assert inbox.empty()
    sub.stop()
    pub.stop()
