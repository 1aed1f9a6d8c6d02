"""Which MQTT packets carry one publish under the broker's packet limit (docs/transport.md, "Packet size").

A message that fits goes whole. A larger one is split into signed chunks (fl_transport.chunking) on its own
topic, except a retained task or model message: its chunks go to retained chunk topics
(fl_transport.retained_chunks), so a subscriber that arrives later still gets every chunk. What cannot be
sent is a TransportError with the reason: no ChunkCodec, a limit too small for chunks, more chunks than a
receiver accepts, or a retained message too large for one packet on a topic without chunk topics (status:
the broker itself publishes the last will there as one packet).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fl_protocol.errors import ConfigError
from fl_protocol.topics import has_retained_chunk_topics, retained_chunk_topic
from fl_transport.chunking import ChunkCodec
from fl_transport.retained_chunks import Packet, RetainedChunkLedger, replace_retained
from fl_transport.settings import TransportError, publish_packet_bytes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    """One publish as the caller made it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    key: str | None  # outbox key, None when not durable


@dataclass(frozen=True)
class Plan:
    """The packets of one publish, in order; `retained_chunks` is the number of chunk topics the retained
    message now fills (0 when it went whole), None for messages without retained chunk topics."""

    packets: list[Packet]
    retained_chunks: int | None


def refusal(
    topic: str, payload_bytes: int, *, qos: int, retain: bool, limit: int | None, mqtt5: bool, can_chunk: bool
) -> str | None:
    """Why a message of `payload_bytes` on `topic` cannot be sent under `limit` (bytes), or None."""
    if limit is None or payload_bytes == 0:
        return None
    size = publish_packet_bytes(topic, payload_bytes, qos=qos, mqtt5=mqtt5)
    if size <= limit:
        return None
    too_big = f"message of {size} bytes on {topic} exceeds the broker's maximum packet size of {limit} bytes"
    if not can_chunk:
        return f"{too_big} and this connection cannot chunk it"
    if retain and not has_retained_chunk_topics(topic):
        return f"retained {too_big}: only task and model topics have retained chunk topics"
    return None


def plan(
    item: Outgoing,
    *,
    limit: int | None,
    mqtt5: bool,
    chunking: ChunkCodec | None,
    ledger: RetainedChunkLedger,
) -> Plan:
    """The packets that carry `item` under `limit` (None: unknown or unlimited); TransportError if none can.

    Writes `ledger` ahead for retained task and model messages (see fl_transport.retained_chunks).
    """
    reason = refusal(
        item.topic, len(item.payload), qos=item.qos, retain=item.retain, limit=limit, mqtt5=mqtt5,
        can_chunk=chunking is not None,
    )  # fmt: skip
    if reason is not None:
        raise TransportError(reason)
    chunk_topics = item.retain and has_retained_chunk_topics(item.topic)
    size = publish_packet_bytes(item.topic, len(item.payload), qos=item.qos, mqtt5=mqtt5)
    if limit is None or size <= limit or not item.payload:
        if chunk_topics:
            return Plan(replace_retained(ledger, item.topic, None, item.payload), 0)
        return Plan([(item.topic, item.payload)], None)
    assert chunking is not None  # refusal() said so
    # Room for a chunk frame: the limit less the PUBLISH header of the longest topic a chunk may go on.
    longest = item.topic
    if chunk_topics:
        longest = retained_chunk_topic(item.topic, chunking.limits.chunk.max_chunks - 1)
    room = limit - (publish_packet_bytes(longest, limit, qos=item.qos, mqtt5=True) - limit)
    try:
        chunks = chunking.split(item.topic, item.payload, room)
    except ConfigError as exc:
        raise TransportError(f"cannot send {size} bytes on {item.topic}: {exc}") from None
    logger.info(
        "sending %d bytes on %s as %d chunks (packet limit %d)%s", size, item.topic, len(chunks), limit,
        " in retained chunk topics" if chunk_topics else "",
    )  # fmt: skip
    if chunk_topics:
        return Plan(replace_retained(ledger, item.topic, chunks, item.payload), len(chunks))
    return Plan([(item.topic, chunk) for chunk in chunks], None)
