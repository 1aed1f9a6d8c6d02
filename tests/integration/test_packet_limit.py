"""Messages larger than the broker's max_packet_size, against a real mosquitto (issue 12, finding 5).

Before chunking, a publish above the limit was acknowledged locally, the broker dropped the connection
("disconnected due to oversize packet") and paho re-sent the message on every reconnect, forever.
"""

from __future__ import annotations

import json
import queue
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fl_protocol.identity import NodeIdentity
from fl_protocol.wire.messages import PartialAggregate
from fl_transport.chunking import ChunkCodec
from fl_transport.mqtt import MqttConnection, MqttSettings, TransportError
from fl_transport.outbox import Outbox
from tests.integration.mosquitto_fixture import HOST, free_port, start_mosquitto
from tests.kit.mqtt import wait_subscribed
from tests.kit.waits import assert_never_within, assert_nothing_within

pytestmark = pytest.mark.integration

SMALL_LIMIT = 12_000
DEFAULT_LIMIT = 32 * 1024 * 1024  # what `fedlora provision` writes by default
LLAMA_PARTIAL_BYTES = 33_554_764  # LoRA r=8 q_proj+v_proj partial of a Llama-2-7B-shaped model


def _conf(port: int, limit: int) -> str:
    return f"listener {port} {HOST}\nallow_anonymous true\nmax_packet_size {limit}\n"


def _identities(*names: str) -> dict[str, NodeIdentity]:
    keys = {name: Ed25519PrivateKey.generate() for name in names}
    public = {name: key.public_key() for name, key in keys.items()}
    return {name: NodeIdentity(name, "f1", keys[name], public) for name in names}


def _connect(port: int, identity: NodeIdentity | None, name: str, inbox: queue.Queue, **kw: object):
    settings = MqttSettings(HOST, port, name, reconnect_min_s=0.2, reconnect_max_s=1.0)
    chunking = None if identity is None else ChunkCodec.for_identity(identity)
    conn = MqttConnection(
        settings,
        lambda t, p: inbox.put((t, p)),
        chunking=chunking,
        **kw,  # type: ignore[arg-type]
    )
    conn.start()
    conn.wait_connected(10)
    return conn


def test_oversize_publish_is_a_clear_error_not_a_reconnect_storm(tmp_path: Path) -> None:
    port = free_port()
    broker = start_mosquitto(_conf(port, SMALL_LIMIT), port, workdir=tmp_path)
    conn = _connect(port, None, "plain", queue.Queue())
    try:
        assert conn.max_packet_bytes == SMALL_LIMIT  # learned from the MQTT 5 CONNACK
        with pytest.raises(TransportError, match="exceeds the broker's maximum packet size of 12000"):
            conn.publish("fl/v1/f1/round/1/partial/g1", b"x" * 20_000)
        conn.publish("fl/v1/f1/status/plain", b"small", retain=True)
        assert conn.flush(5)
        assert_never_within(
            1.5,
            lambda: not conn.connected or "due to oversize packet" in broker.log(),
            what="the broker dropping the connection over the refused publish",
        )
    finally:
        conn.stop()
        broker.stop()


def test_large_messages_cross_a_12000_byte_broker_in_signed_chunks(tmp_path: Path) -> None:
    port = free_port()
    broker = start_mosquitto(_conf(port, SMALL_LIMIT), port, workdir=tmp_path)
    ids = _identities("g1", "cloud")
    inbox: queue.Queue = queue.Queue()
    cloud = _connect(port, ids["cloud"], "cloud", inbox)
    cloud.subscribe("fl/v1/f1/round/+/partial/+")
    outbox = Outbox(tmp_path / "outbox")
    gateway = _connect(port, ids["g1"], "g1", queue.Queue(), outbox=outbox)
    try:
        wait_subscribed(cloud, inbox)
        partial = PartialAggregate("g1", 1, 0, np.linspace(-1, 1, 40_000), 2, 2.0, ("d1", "d2"))
        frame = ids["g1"].encode(partial, round_id=1)
        assert len(frame) > 300_000
        topic = "fl/v1/f1/round/1/partial/g1"
        gateway.publish(topic, frame, durable=True)
        got_topic, got = inbox.get(timeout=30)
        assert got_topic == topic and got == frame
        _, decoded = ids["cloud"].decode(got, PartialAggregate, senders={"g1"})
        np.testing.assert_array_equal(decoded.vector_sum, partial.vector_sum)
        assert gateway.flush(10)
        assert len(outbox) == 0, "every chunk was acknowledged, so the outbox entry must be gone"
        assert_nothing_within(1.0, inbox, what="a second delivery of the chunked partial")
        assert "due to oversize packet" not in broker.log()
        assert gateway.connected and cloud.connected
    finally:
        gateway.stop()
        cloud.stop()
        broker.stop()


def test_llama_7b_sized_partial_over_the_default_limit(tmp_path: Path) -> None:
    port = free_port()
    broker = start_mosquitto(_conf(port, DEFAULT_LIMIT), port, workdir=tmp_path)
    ids = _identities("g1", "cloud")
    inbox: queue.Queue = queue.Queue()
    cloud = _connect(port, ids["cloud"], "cloud", inbox)
    cloud.subscribe("fl/v1/f1/round/+/partial/+")
    gateway = _connect(port, ids["g1"], "g1", queue.Queue())
    try:
        wait_subscribed(cloud, inbox)
        probe = len(ids["g1"].encode(PartialAggregate("g1", 1, 0, np.zeros(1), 1, 1.0, ("d1",)), round_id=1))
        values = -(-(LLAMA_PARTIAL_BYTES - probe + 8) // 8)  # probe holds one 8-byte value
        partial = PartialAggregate("g1", 1, 0, np.full(values, 0.5), 1, 1.0, ("d1",))
        frame = ids["g1"].encode(partial, round_id=1)
        assert len(frame) >= LLAMA_PARTIAL_BYTES > DEFAULT_LIMIT
        gateway.publish("fl/v1/f1/round/1/partial/g1", frame)
        _, got = inbox.get(timeout=120)
        assert got == frame
        assert "due to oversize packet" not in broker.log()
    finally:
        gateway.stop()
        cloud.stop()
        broker.stop()


@pytest.mark.slow
def test_demo_round_over_a_12000_byte_broker(tmp_path: Path) -> None:
    """Cloud, gateway and device processes: every message kind (global model, task, shares, masked
    updates, partials) crosses a broker that refuses packets over 12,000 bytes."""
    from fedlora.demo.runner import DemoOptions, run_demo

    port = free_port()
    broker = start_mosquitto(_conf(port, SMALL_LIMIT), port, workdir=tmp_path)
    try:
        options = DemoOptions(
            devices=4,
            gateways=1,
            rounds=2,
            dropout=0.0,
            out_dir=tmp_path / "out",
            seed=5,
            cache_dir=tmp_path / "cache",
            settings_overrides={"noise_multiplier": 0.1, "ring_bits": 32},  # ring holds 4 devices + noise
            broker=f"mqtt://{HOST}:{port}",
            verbose=True,
        )
        assert run_demo(options, progress=lambda _line: None) == 0
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        assert [r["round"] for r in report["rounds"]] == [1, 2]
        assert "due to oversize packet" not in broker.log()
        logs = {p.stem: p.read_text() for p in (tmp_path / "out" / "work" / "logs").glob("*.log")}
        chunked = {name for name, text in logs.items() if " chunks (packet limit 12000)" in text}
        assert "cloud" in chunked, "the global model should have needed chunks"
        assert chunked - {"cloud"}, "no gateway or device message needed chunks: the test proves little"
    finally:
        broker.stop()


def test_mqtt_311_uses_the_configured_limit(tmp_path: Path) -> None:
    """Without MQTT 5 the limit comes from configuration ([broker] max_packet_bytes)."""
    port = free_port()
    broker = start_mosquitto(_conf(port, SMALL_LIMIT), port, workdir=tmp_path)
    ids = _identities("g1", "cloud")
    inbox: queue.Queue = queue.Queue()

    def connect(name: str, chunking: ChunkCodec | None, on_message) -> MqttConnection:  # type: ignore[no-untyped-def]
        settings = MqttSettings(HOST, port, name, mqtt_version="3.1.1", max_packet_bytes=SMALL_LIMIT)
        conn = MqttConnection(settings, on_message, chunking=chunking)
        conn.start()
        conn.wait_connected(10)
        return conn

    cloud = connect("cloud", ChunkCodec.for_identity(ids["cloud"]), lambda t, p: inbox.put((t, p)))
    cloud.subscribe("t/#")
    gateway = connect("g1", ChunkCodec.for_identity(ids["g1"]), lambda t, p: None)
    plain = connect("plain", None, lambda t, p: None)
    try:
        wait_subscribed(cloud, inbox)
        payload = bytes(range(256)) * 400  # 102,400 bytes
        gateway.publish("t/big", payload)
        assert inbox.get(timeout=20) == ("t/big", payload)
        with pytest.raises(TransportError, match="maximum packet size of 12000"):
            plain.publish("t/big", payload)
        assert_never_within(
            1.0,
            lambda: not plain.connected or "due to oversize packet" in broker.log(),
            what="the broker dropping the connection over the refused publish",
        )
    finally:
        for conn in (gateway, plain, cloud):
            conn.stop()
        broker.stop()


def test_broker_without_mqtt_5_gets_3_1_1() -> None:
    """A broker that answers an MQTT 5 CONNECT with "unsupported protocol version" (amqtt, for a clean
    session) gets MQTT 3.1.1 on the next attempt."""
    from fedlora.embedded_broker import EmbeddedBroker

    embedded = EmbeddedBroker()
    embedded.start()
    try:
        settings = MqttSettings(HOST, embedded.port, "old", clean_session=True, reconnect_min_s=0.2)
        conn = MqttConnection(settings, lambda t, p: None)
        conn.start()
        try:
            conn.wait_connected(10)
            assert conn.max_packet_bytes is None
        finally:
            conn.stop()
    finally:
        embedded.stop()
