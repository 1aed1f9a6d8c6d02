"""Retained messages above the broker's packet limit, against a real mosquitto (issue 12, finding 5).

Before retained chunk topics, a chunked retained model kept only its last chunk at the broker: a device that
subscribed after it was published got one chunk that never completed, and the model only at its next
version. Now every chunk is retained on `{topic}/chunk/{i}` (docs/transport.md, "Retained chunks").
"""

from __future__ import annotations

import queue
import random
import threading
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from fedlora.provision.mosquitto_conf import MAX_INFLIGHT_MESSAGES, max_queued_messages_for
from fl_protocol.identity import NodeIdentity
from fl_protocol.topics import model_topic, task_topic
from fl_protocol.wire.messages import GlobalModel
from fl_transport.chunking import ChunkCodec
from fl_transport.mqtt import MqttConnection, MqttSettings
from fl_transport.retained_chunks import RetainedChunkLedger
from tests.integration.mosquitto_fixture import HOST, MosquittoHandle, free_port, start_mosquitto

pytestmark = pytest.mark.integration

SMALL_LIMIT = 12_000
FLEET = "f1"
QUIET_S = 1.0  # how long a message that must NOT arrive is waited for


def _conf(port: int, limit: int, *extra: str) -> str:
    lines = [f"listener {port} {HOST}", "allow_anonymous true", f"max_packet_size {limit}", *extra]
    return "\n".join(lines) + "\n"


def _identities(*names: str) -> dict[str, NodeIdentity]:
    keys = {name: Ed25519PrivateKey.generate() for name in names}
    public = {name: key.public_key() for name, key in keys.items()}
    return {name: NodeIdentity(name, FLEET, keys[name], public) for name in names}


IDS = _identities("cloud", "dev")


class Node:
    """A transport connection of `name` whose whole messages land in `inbox`."""

    def __init__(self, port: int, name: str, **kw: object) -> None:
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        settings = MqttSettings(HOST, port, name, clean_session=True, reconnect_min_s=0.2)
        self.conn = MqttConnection(
            settings,
            lambda t, p: self.inbox.put((t, p)),
            chunking=ChunkCodec.for_identity(IDS[name]),
            **kw,  # type: ignore[arg-type]
        )
        self.conn.start()
        self.conn.wait_connected(10)

    def messages(self, wait_for: int, timeout_s: float = 30.0) -> list[tuple[str, bytes]]:
        """The first `wait_for` messages, then whatever else arrives within QUIET_S."""
        got = [self.inbox.get(timeout=timeout_s) for _ in range(wait_for)]
        while True:
            try:
                got.append(self.inbox.get(timeout=QUIET_S))
            except queue.Empty:
                return got


class RawSubscriber:
    """A plain paho client (no chunk handling) that records what the broker delivers on a filter."""

    def __init__(self, port: int, topic_filter: str) -> None:
        self.inbox: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        subscribed = threading.Event()
        self.client.on_message = lambda c, u, m: self.inbox.put((m.topic, bytes(m.payload), bool(m.retain)))
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(HOST, port)
        self.client.loop_start()
        self.client.subscribe(topic_filter, qos=1)
        assert subscribed.wait(5), "no SUBACK"

    def until_quiet(self) -> list[tuple[str, bytes, bool]]:
        got = []
        while True:
            try:
                got.append(self.inbox.get(timeout=QUIET_S))
            except queue.Empty:
                return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _model_frame(version: int, elements: int) -> bytes:
    vector = np.random.default_rng(version).standard_normal(elements).astype(np.float32)  # incompressible
    return IDS["cloud"].encode(GlobalModel.from_vector(version, vector), round_id=1)


def _retained_chunk_indices(port: int, topic: str) -> list[int]:
    """Indices of the non-empty retained messages on `topic`'s chunk topics, as a new subscriber sees them."""
    raw = RawSubscriber(port, f"{topic}/chunk/+")
    try:
        seen = raw.until_quiet()
    finally:
        raw.close()
    assert all(retained for _, _, retained in seen)
    return sorted(int(t.rsplit("/", 1)[1]) for t, payload, _ in seen if payload)


def _start(tmp_path: Path, *extra: str) -> tuple[MosquittoHandle, int]:
    port = free_port()
    return start_mosquitto(_conf(port, SMALL_LIMIT, *extra), port, workdir=tmp_path), port


def test_a_late_subscriber_gets_the_whole_chunked_retained_model(tmp_path: Path) -> None:
    broker, port = _start(tmp_path)
    cloud = Node(port, "cloud")
    try:
        topic, frame = model_topic(FLEET, 3), _model_frame(3, 20_000)
        assert len(frame) > 5 * SMALL_LIMIT
        cloud.conn.publish(topic, frame, retain=True)
        assert cloud.conn.flush(10)
        late = Node(port, "dev")  # connects after the publish: only retained messages can reach it
        try:
            late.conn.subscribe(f"fl/v1/{FLEET}/model/+")
            assert late.messages(wait_for=1) == [(topic, frame)]  # whole, once, under the model topic
        finally:
            late.conn.stop()
        indices = _retained_chunk_indices(port, topic)
        assert indices == list(range(len(indices))) and len(indices) > 5  # one retained chunk per topic
        assert "due to oversize packet" not in broker.log()
    finally:
        cloud.conn.stop()
        broker.stop()


def test_after_a_newer_shorter_version_a_late_subscriber_gets_only_that_one(tmp_path: Path) -> None:
    broker, port = _start(tmp_path)
    cloud = Node(port, "cloud")
    topic = task_topic(FLEET, 4)  # tasks have chunk topics as models do; one topic, two versions
    old, new = _model_frame(1, 30_000), _model_frame(2, 9_000)
    try:
        cloud.conn.publish(topic, old, retain=True)
        assert cloud.conn.flush(10)
        old_chunks = _retained_chunk_indices(port, topic)
        cloud.conn.publish(topic, new, retain=True)
        assert cloud.conn.flush(10)
        new_chunks = _retained_chunk_indices(port, topic)
        assert new_chunks == list(range(len(new_chunks))) and len(old_chunks) > len(new_chunks) > 1
        late = Node(port, "dev")
        try:
            late.conn.subscribe(f"fl/v1/{FLEET}/round/+/task")
            assert late.messages(wait_for=1) == [(topic, new)]
        finally:
            late.conn.stop()
        cloud.conn.publish(topic, b"", retain=True)  # the round is over: clear the task
        assert cloud.conn.flush(10)
        assert _retained_chunk_indices(port, topic) == []
    finally:
        cloud.conn.stop()
        broker.stop()


def test_a_restarted_publisher_clears_chunk_topics_from_its_ledger_file(tmp_path: Path) -> None:
    broker, port = _start(tmp_path)
    ledger = tmp_path / "retained_chunks.json"
    topic = task_topic(FLEET, 9)
    try:
        first = Node(port, "cloud", retained_chunks=RetainedChunkLedger(ledger))
        first.conn.publish(topic, _model_frame(9, 20_000), retain=True)
        assert first.conn.flush(10)
        first.conn.stop()
        assert _retained_chunk_indices(port, topic)
        restarted = Node(port, "cloud", retained_chunks=RetainedChunkLedger(ledger))
        try:  # the cloud's start(): an interrupted round's task must not stay retained
            restarted.conn.publish(topic, b"", retain=True)
            assert restarted.conn.flush(10)
        finally:
            restarted.conn.stop()
        assert _retained_chunk_indices(port, topic) == []
    finally:
        broker.stop()


@pytest.mark.parametrize("provisioned_queue", [True, False])
def test_a_model_of_more_chunks_than_the_default_queue(tmp_path: Path, provisioned_queue: bool) -> None:
    """mosquitto queues at most max_queued_messages (default 1000) beyond max_inflight_messages per client
    and drops the rest, retained messages sent on subscribing included. The provisioned queue holds them."""
    queue_lines = [
        f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
        f"max_queued_messages {max_queued_messages_for(SMALL_LIMIT)}",
    ]
    if not provisioned_queue:
        queue_lines = []  # mosquitto's defaults: 20 in flight, 1000 queued
    broker, port = _start(tmp_path, *queue_lines)
    cloud = Node(port, "cloud")
    topic = model_topic(FLEET, 5)
    payload = random.Random(5).randbytes(13_500_000)  # about 1,160 chunks; the transport only sees bytes
    try:
        cloud.conn.publish(topic, payload, retain=True)
        assert cloud.conn.flush(60)
        raw = RawSubscriber(port, f"{topic}/chunk/+")  # a late subscriber that acknowledges everything
        try:
            delivered = raw.until_quiet()
        finally:
            raw.close()
        chunk_topics = {t for t, _, _ in delivered}
        if provisioned_queue:
            assert len(delivered) == len(chunk_topics) > 1_100  # every chunk, once
        else:
            assert len(delivered) <= 1_000 + MAX_INFLIGHT_MESSAGES  # the rest was dropped
    finally:
        cloud.conn.stop()
        broker.stop()
