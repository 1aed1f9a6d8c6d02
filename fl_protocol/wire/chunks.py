"""Signed chunks: one message too large for the broker's packet limit, split into frames that fit.

A chunk is an ordinary signed frame (fl_protocol.wire.framing) of type `MessageType.CHUNK`, round 0, whose
body is a `ChunkBody` (declared with fl_protocol.wire.schema; field table in docs/wire-format.md): the
message's SHA-256 (`message_id`), the topic it is published on, this chunk's `index` of `count`, the whole
message's length (`total_bytes`) and this chunk's slice of it (`data`); the receiver's `ChunkLimits` bound
`count` and `total_bytes` further.

The message itself is a complete signed frame and is verified again by its receiver after reassembly; the
chunk signature lets the receiver charge buffered bytes to an authenticated sender before the message is
whole. Decoding is strict: exact key set, exact types, every number inside the limits, data no longer than
the message; every failure is the opaque `DecodeError` (reason at DEBUG). See docs/wire-format.md.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fl_protocol.errors import ConfigError, DecodeError
from fl_protocol.message_types import MessageType
from fl_protocol.wire.fields import decode_fields, encode_fields
from fl_protocol.wire.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    FORMAT_VERSION,
    FRAME_MAGIC,
    MAX_UINT63,
    FrameHeader,
    decode_frame,
    encode_frame,
)
from fl_protocol.wire.schema import Message, wire
from fl_protocol.wire.wire_types import Bytes, Int, Text

logger = logging.getLogger(__name__)

MESSAGE_ID_BYTES = 32
MIN_CHUNK_DATA_BYTES = 1024
MAX_TOPIC_CHARS = 1024
MAX_CHUNKS = 2**20  # the most ChunkLimits.max_chunks allows
MAX_MESSAGE_BYTES = 2**32  # the most ChunkLimits.max_message_bytes allows


@dataclass(frozen=True)
class ChunkLimits:
    """Receiver-side bounds on chunked messages (all counts and sizes checked before buffering).

    max_message_bytes: largest reassembled message (default: the largest frame a role decodes, 64 MiB).
    max_chunks: most chunks of one message (8 KiB packets carry about 7 KiB each: 16,384 covers 64 MiB).
    """

    max_message_bytes: int = DEFAULT_MAX_FRAME_BYTES
    max_chunks: int = 16_384

    def __post_init__(self) -> None:
        if not 1 <= self.max_message_bytes <= MAX_MESSAGE_BYTES or not 1 <= self.max_chunks <= MAX_CHUNKS:
            raise ConfigError("chunk limits out of range")


@dataclass(frozen=True)
class Chunk:
    """One decoded, signature-verified chunk; `sender` comes from the signed frame header."""

    sender: str
    topic: str
    message_id: bytes
    index: int
    count: int
    total_bytes: int
    data: bytes


def is_chunk_frame(payload: bytes) -> bool:
    """True if `payload` claims to be a chunk frame (magic, version and type byte; nothing verified)."""
    return (
        len(payload) >= 6
        and payload[:4] == FRAME_MAGIC
        and payload[4] == FORMAT_VERSION
        and payload[5] == MessageType.CHUNK
    )


class ChunkBody(Message, message_type=MessageType.CHUNK, checked="decode"):
    """The body of one chunk frame (docs/wire-format.md, "Chunks").

    Checked when decoded (opaque DecodeError); `split_message` builds bodies unchecked, also one with every
    integer at 2^63 - 1 to size the frame overhead.
    """

    count: int = wire(Int(1, MAX_CHUNKS), doc="chunks in the message (at most `ChunkLimits.max_chunks`)")
    data: bytes = wire(Bytes(min_bytes=1), doc="this chunk's slice of the message")
    index: int = wire(Int(0, MAX_CHUNKS - 1), doc="position of this chunk")
    message_id: bytes = wire(Bytes(MESSAGE_ID_BYTES), doc="SHA-256 of the whole message")
    topic: str = wire(Text(0, MAX_TOPIC_CHARS), doc="the topic the message is published on")
    total_bytes: int = wire(
        Int(1, MAX_MESSAGE_BYTES), doc="length of the whole message (at most `ChunkLimits.max_message_bytes`)"
    )

    def validate(self) -> None:
        """`index < count`; `data` is at most `total_bytes` long."""
        if self.index >= self.count or len(self.data) > self.total_bytes:
            raise ConfigError("chunk index or data length out of range")


def _body(topic: str, message_id: bytes, index: int, count: int, total: int, data: bytes) -> bytes:
    body = ChunkBody(
        count=count, data=data, index=index, message_id=message_id, topic=topic, total_bytes=total
    )
    return encode_fields(body.to_fields())


def split_message(
    payload: bytes,
    *,
    topic: str,
    max_frame_bytes: int,
    fleet: str,
    sender: str,
    signing_key: Ed25519PrivateKey,
    created_ms: int,
    max_chunks: int | None = None,
) -> list[bytes]:
    """Split `payload` into signed chunk frames of at most `max_frame_bytes` bytes each.

    The chunk id is the SHA-256 of `payload`, so sending the same message again (after a crash) yields the
    same chunks. ConfigError if `max_frame_bytes` leaves less than MIN_CHUNK_DATA_BYTES of data per chunk,
    if the topic is longer than MAX_TOPIC_CHARS, or if the message needs more than `max_chunks` chunks
    (the receivers' `ChunkLimits.max_chunks`: they would refuse every chunk).
    """
    if not payload:
        raise ConfigError("an empty message is never chunked")
    if len(topic) > MAX_TOPIC_CHARS:
        raise ConfigError("topic too long for a chunk")
    header = FrameHeader(fleet, 0, sender, MessageType.CHUNK, created_ms)
    message_id = hashlib.sha256(payload).digest()
    # Upper bound of everything but the data: integers at their widest, data empty.
    overhead = len(
        encode_frame(header, _body(topic, message_id, MAX_UINT63, MAX_UINT63, MAX_UINT63, b""), signing_key)
    )
    room = max_frame_bytes - overhead
    if room < MIN_CHUNK_DATA_BYTES:
        raise ConfigError(f"a {max_frame_bytes}-byte packet limit leaves no room for chunks")
    count = -(-len(payload) // room)
    if max_chunks is not None and count > max_chunks:
        raise ConfigError(
            f"a message of {len(payload)} bytes needs {count} chunks at a {max_frame_bytes}-byte packet "
            f"limit, more than the {max_chunks} a receiver accepts"
        )
    return [
        encode_frame(
            header,
            _body(topic, message_id, i, count, len(payload), payload[i * room : (i + 1) * room]),
            signing_key,
        )
        for i in range(count)
    ]


@functools.cache
def max_chunk_overhead_bytes(topic_chars: int) -> int:
    """The most bytes a chunk frame holds besides its data, for a topic of `topic_chars` ASCII characters.

    Worst case of `split_message`'s own estimate: 64-character fleet and sender ids, every integer at its
    widest. A fixed throwaway key signs (an Ed25519 signature has one length whatever the key).
    """
    if not 0 <= topic_chars <= MAX_TOPIC_CHARS:
        raise ConfigError("topic too long for a chunk")
    header = FrameHeader("f" * 64, 0, "s" * 64, MessageType.CHUNK, MAX_UINT63)
    body = _body("t" * topic_chars, bytes(MESSAGE_ID_BYTES), MAX_UINT63, MAX_UINT63, MAX_UINT63, b"")
    return len(encode_frame(header, body, Ed25519PrivateKey.from_private_bytes(bytes(32))))


def decode_chunk(
    data: bytes,
    *,
    fleet: str,
    verify_key: Callable[[str], Ed25519PublicKey | None],
    limits: ChunkLimits,
) -> Chunk:
    """Verify and decode one chunk frame of `fleet`; every failure is the opaque DecodeError."""
    header, body = decode_frame(data, verify_key=verify_key, max_frame_bytes=limits.max_message_bytes + 65536)
    try:
        return _chunk_from_body(header, body, fleet, limits)
    except (_Invalid, DecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        logger.debug("chunk rejected: %s", exc)
        raise DecodeError() from None


class _Invalid(Exception):
    """Internal carrier of a chunk's precise failure reason."""


def _chunk_from_body(header: FrameHeader, body: bytes, fleet: str, limits: ChunkLimits) -> Chunk:
    if header.message_type != MessageType.CHUNK or header.fleet != fleet or header.round_id != 0:
        raise _Invalid("not a chunk of our fleet")
    budget = dataclasses.replace(ChunkBody.FIELD_LIMITS, max_bytes=len(body))
    chunk = ChunkBody.from_fields(decode_fields(body, max_bytes=len(body), limits=budget))
    if chunk.count > limits.max_chunks or chunk.total_bytes > limits.max_message_bytes:
        raise _Invalid("chunk count or size over the receiver's limits")
    return Chunk(
        header.sender, chunk.topic, chunk.message_id, chunk.index, chunk.count, chunk.total_bytes, chunk.data
    )
