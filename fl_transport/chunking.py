"""Split messages above the broker's packet limit into signed chunks, and put them back together.

`ChunkCodec` holds what both directions need: this node's identity to sign chunks, the fleet's keys to
verify them, and a `Reassembler` whose buffers are bounded per sender and in total. Chunks of one message
travel on the message's own topic with its QoS, except those of a retained task or model message: they are
retained on chunk topics `{topic}/chunk/{i}` (fl_transport.retained_chunks), so a subscriber that arrives
later gets them all. Chunks are keyed by (sender, topic, message id = SHA-256 of the message): chunks of an
older version of a retained message never combine with a newer one.

Reassembly limits (all enforced before a byte is buffered): the chunk decoder's `ChunkLimits` (message size,
chunk count); at most `max_partial_per_sender` incomplete messages and `max_buffered_bytes_per_sender` bytes
per authenticated sender, `max_buffered_bytes` over all senders (to make room, the oldest incomplete
message of the same sender, or over the total of the sender holding the most, is dropped with a log
line); an incomplete message is dropped `timeout_s` after its last chunk. A message is handed on only when
every chunk arrived and its SHA-256 equals the signed message id.

Queues: a subscriber slower than the publisher, or offline with a persistent session, gets the chunks
from the broker's per-client queue, which must hold them (`chunk_count_bound`; `fedlora provision` sizes
mosquitto's `max_queued_messages` with it, docs/transport.md).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fl_protocol.errors import DecodeError
from fl_protocol.identity import NodeIdentity
from fl_protocol.wire.chunks import (
    MIN_CHUNK_DATA_BYTES,
    Chunk,
    ChunkLimits,
    decode_chunk,
    max_chunk_overhead_bytes,
    split_message,
)
from fl_transport.settings import publish_packet_bytes

logger = logging.getLogger(__name__)

_RECENT_COMPLETED = 256
# Longer than any topic fl_protocol.topics builds, retained chunk topics included (64-character ids and
# 19-digit numbers: a device stage topic has at most 241 characters).
BOUND_TOPIC_CHARS = 256


def chunk_count_bound(message_bytes: int, max_packet_bytes: int, limits: ChunkLimits | None = None) -> int:
    """The most chunks (MQTT packets) a message of `message_bytes` bytes becomes under `max_packet_bytes`.

    Counted for the longest protocol topic and the widest chunk header, and capped at `limits.max_chunks`
    (a sender refuses to split into more; a limit too small for chunks caps at it too). 1 if the message
    fits one packet.
    """
    limits = limits or ChunkLimits()
    if publish_packet_bytes("t" * BOUND_TOPIC_CHARS, message_bytes, qos=1, mqtt5=True) <= max_packet_bytes:
        return 1
    header = publish_packet_bytes("t" * BOUND_TOPIC_CHARS, max_packet_bytes, qos=1, mqtt5=True)
    room = max_packet_bytes - (header - max_packet_bytes) - max_chunk_overhead_bytes(BOUND_TOPIC_CHARS)
    if room < MIN_CHUNK_DATA_BYTES:
        return limits.max_chunks
    return min(-(-message_bytes // room), limits.max_chunks)


@dataclass(frozen=True)
class ReassemblyLimits:
    """Bounds on chunk buffers of a receiving node (bytes, counts, seconds)."""

    chunk: ChunkLimits = field(default_factory=ChunkLimits)
    max_partial_per_sender: int = 4
    max_buffered_bytes_per_sender: int = 2 * ChunkLimits().max_message_bytes
    max_buffered_bytes: int = 512 * 1024 * 1024
    timeout_s: float = 300.0


@dataclass
class _Partial:
    count: int
    total_bytes: int
    last_s: float
    parts: dict[int, bytes] = field(default_factory=dict)
    buffered_bytes: int = 0


_Key = tuple[str, str, bytes]  # sender, topic, message id


class Reassembler:
    """Collects chunks per (sender, topic, message id); thread-safe; clock injected (seconds)."""

    def __init__(self, limits: ReassemblyLimits, *, clock_s: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._clock_s = clock_s
        self._lock = threading.Lock()
        self._partials: OrderedDict[_Key, _Partial] = OrderedDict()  # oldest activity first
        self._completed: OrderedDict[_Key, None] = OrderedDict()

    @property
    def buffered_bytes(self) -> int:
        """Bytes held in incomplete messages right now."""
        with self._lock:
            return sum(p.buffered_bytes for p in self._partials.values())

    def add(self, topic: str, chunk: Chunk) -> bytes | None:
        """Buffer a verified chunk that arrived on `topic`; return the whole message once complete."""
        if chunk.topic != topic:
            logger.warning(
                "chunk from %s for topic %s arrived on %s: ignored", chunk.sender, chunk.topic, topic
            )
            return None
        key = (chunk.sender, topic, chunk.message_id)
        now = self._clock_s()
        with self._lock:
            self._expire(now)
            if key in self._completed:
                return None  # a repeated chunk of a message already delivered
            partial = self._partial_for(key, chunk, now)
            if partial is None or chunk.index in partial.parts:
                return None
            if partial.buffered_bytes + len(chunk.data) > partial.total_bytes:
                logger.warning("chunks from %s on %s exceed their declared size: dropped", key[0], key[1])
                del self._partials[key]
                return None
            self._partials.move_to_end(key)  # the message being fed is the last one dropped for room
            if not self._make_room(key, len(chunk.data)):
                return None
            partial.parts[chunk.index] = chunk.data
            partial.buffered_bytes += len(chunk.data)
            partial.last_s = now
            self._partials.move_to_end(key)
            if len(partial.parts) < partial.count:
                return None
            del self._partials[key]
        return self._finish(key, partial)

    def _partial_for(self, key: _Key, chunk: Chunk, now: float) -> _Partial | None:
        partial = self._partials.get(key)
        if partial is None:
            partial = _Partial(chunk.count, chunk.total_bytes, now)
            self._partials[key] = partial
        elif (partial.count, partial.total_bytes) != (chunk.count, chunk.total_bytes):
            logger.warning("chunks from %s on %s disagree on count or size: message dropped", key[0], key[1])
            del self._partials[key]
            return None
        return partial

    def _finish(self, key: _Key, partial: _Partial) -> bytes | None:
        message = b"".join(partial.parts[i] for i in range(partial.count))
        if len(message) != partial.total_bytes or hashlib.sha256(message).digest() != key[2]:
            logger.warning("chunked message from %s on %s does not match its id: dropped", key[0], key[1])
            return None
        with self._lock:
            self._completed[key] = None
            while len(self._completed) > _RECENT_COMPLETED:
                self._completed.popitem(last=False)
        return message

    def _expire(self, now: float) -> None:
        for key in [k for k, p in self._partials.items() if now - p.last_s > self._limits.timeout_s]:
            partial = self._partials.pop(key)
            logger.warning(
                "incomplete message from %s on %s dropped after %.0f s (%d of %d chunks)",
                key[0], key[1], self._limits.timeout_s, len(partial.parts), partial.count,
            )  # fmt: skip

    def _make_room(self, key: _Key, incoming_bytes: int) -> bool:
        """Drop the oldest incomplete messages until `incoming_bytes` fit every bound; False if the
        message `key` itself had to go."""
        limits = self._limits
        while True:
            mine = [k for k in self._partials if k[0] == key[0]]
            sender_bytes = sum(self._partials[k].buffered_bytes for k in mine)
            total = sum(p.buffered_bytes for p in self._partials.values())
            over_sender = len(mine) > limits.max_partial_per_sender or (
                sender_bytes + incoming_bytes > limits.max_buffered_bytes_per_sender
            )
            if over_sender:
                victim = mine[0]
            elif total + incoming_bytes > limits.max_buffered_bytes:
                victim = self._oldest_of_biggest_sender()
            else:
                return True
            dropped = self._partials.pop(victim)
            logger.warning(
                "chunk buffer full: incomplete message from %s on %s dropped (%d bytes)",
                victim[0], victim[1], dropped.buffered_bytes,
            )  # fmt: skip
            if victim == key:
                return False

    def _oldest_of_biggest_sender(self) -> _Key:
        """The oldest incomplete message of the sender holding the most bytes: a flooding sender pays
        for its own flood before anyone else's message is dropped."""
        per_sender: dict[str, int] = {}
        for (sender, _topic, _id), partial in self._partials.items():
            per_sender[sender] = per_sender.get(sender, 0) + partial.buffered_bytes
        biggest = max(per_sender, key=lambda sender: per_sender[sender])
        return next(k for k in self._partials if k[0] == biggest)


@dataclass
class ChunkCodec:
    """Signs outgoing chunks as this node and verifies and reassembles incoming ones."""

    fleet: str
    sender: str
    signing_key: Ed25519PrivateKey = field(repr=False)
    verify_key: Callable[[str], Ed25519PublicKey | None] = field(repr=False)
    limits: ReassemblyLimits = field(default_factory=ReassemblyLimits)
    clock_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000), repr=False)
    clock_s: Callable[[], float] = field(default=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        self.reassembler = Reassembler(self.limits, clock_s=self.clock_s)

    @classmethod
    def for_identity(cls, identity: NodeIdentity, limits: ReassemblyLimits | None = None) -> ChunkCodec:
        """Codec signing as `identity` and verifying against its fleet keys."""
        return cls(
            identity.fleet,
            identity.node_id,
            identity.signing_key,
            identity.verify_key,
            limits or ReassemblyLimits(),
            clock_ms=lambda: int(identity.clock_ms()),
        )

    def split(self, topic: str, payload: bytes, max_frame_bytes: int) -> list[bytes]:
        """Signed chunk frames of at most `max_frame_bytes` bytes; ConfigError if the limit is too small or
        the message needs more chunks than `limits.chunk.max_chunks` (receivers would refuse them)."""
        return split_message(
            payload,
            topic=topic,
            max_frame_bytes=max_frame_bytes,
            fleet=self.fleet,
            sender=self.sender,
            signing_key=self.signing_key,
            created_ms=self.clock_ms(),
            max_chunks=self.limits.chunk.max_chunks,
        )

    def receive(self, topic: str, payload: bytes, *, index: int | None = None) -> bytes | None:
        """Verify one chunk frame of the message on `topic` and return the whole message once complete.

        `index`: the chunk index its retained chunk topic names; the chunk must carry the same.
        DecodeError if the frame is invalid or its index differs.
        """
        chunk = decode_chunk(payload, fleet=self.fleet, verify_key=self.verify_key, limits=self.limits.chunk)
        if index is not None and chunk.index != index:
            logger.debug("chunk %d arrived on the chunk topic of index %d", chunk.index, index)
            raise DecodeError()
        return self.reassembler.add(topic, chunk)
