"""Signed chunks: one message too large for the broker's packet limit, split into frames that fit.

A chunk is an ordinary signed frame (fl_protocol.wire.framing) of type `MessageType.CHUNK`, round 0, whose
body is the field mapping

    count        int    number of chunks of the message, 1..limits.max_chunks
    data         bytes  this chunk's slice of the message
    index        int    0..count-1
    message_id   bytes  SHA-256 of the whole message (32 bytes): identifies it and checks the reassembly
    topic        str    the MQTT topic the message is published on (a chunk is refused on any other topic)
    total_bytes  int    length of the whole message, 1..limits.max_message_bytes

The message itself is a complete signed frame and is verified again by its receiver after reassembly; the
chunk signature lets the receiver charge buffered bytes to an authenticated sender before the message is
whole. Decoding is strict: exact key set, exact types, every number inside the limits, data no longer than
the message; every failure is the opaque `DecodeError` (reason at DEBUG). See docs/wire-format.md.
"""

from __future__ import annotations

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

logger = logging.getLogger(__name__)

MESSAGE_ID_BYTES = 32
MIN_CHUNK_DATA_BYTES = 1024
MAX_TOPIC_CHARS = 1024
_KEYS = frozenset({"count", "data", "index", "message_id", "topic", "total_bytes"})


@dataclass(frozen=True)
class ChunkLimits:
    """Receiver-side bounds on chunked messages (all counts and sizes checked before buffering).

    max_message_bytes: largest reassembled message (default: the largest frame a role decodes, 64 MiB).
    max_chunks: most chunks of one message (8 KiB packets carry about 7 KiB each: 16,384 covers 64 MiB).
    """

    max_message_bytes: int = DEFAULT_MAX_FRAME_BYTES
    max_chunks: int = 16_384

    def __post_init__(self) -> None:
        if not 1 <= self.max_message_bytes <= 2**32 or not 1 <= self.max_chunks <= 2**20:
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


def _body(topic: str, message_id: bytes, index: int, count: int, total: int, data: bytes) -> bytes:
    return encode_fields(
        {
            "count": count,
            "data": data,
            "index": index,
            "message_id": message_id,
            "topic": topic,
            "total_bytes": total,
        }
    )


def split_message(
    payload: bytes,
    *,
    topic: str,
    max_frame_bytes: int,
    fleet: str,
    sender: str,
    signing_key: Ed25519PrivateKey,
    created_ms: int,
) -> list[bytes]:
    """Split `payload` into signed chunk frames of at most `max_frame_bytes` bytes each.

    The chunk id is the SHA-256 of `payload`, so sending the same message again (after a crash) yields the
    same chunks. ConfigError if `max_frame_bytes` leaves less than MIN_CHUNK_DATA_BYTES of data per chunk,
    or if the topic is longer than MAX_TOPIC_CHARS.
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
    return [
        encode_frame(
            header,
            _body(topic, message_id, i, count, len(payload), payload[i * room : (i + 1) * room]),
            signing_key,
        )
        for i in range(count)
    ]


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
    fields = decode_fields(body, max_bytes=len(body))
    if set(fields) != _KEYS:
        raise _Invalid("chunk keys differ from the format")
    count, index, total = fields["count"], fields["index"], fields["total_bytes"]
    topic, message_id, chunk_data = fields["topic"], fields["message_id"], fields["data"]
    for value in (count, index, total):
        if type(value) is not int:
            raise _Invalid("count, index and total_bytes must be ints")
    if type(topic) is not str or type(message_id) is not bytes or type(chunk_data) is not bytes:
        raise _Invalid("topic, message_id or data of the wrong type")
    assert isinstance(count, int) and isinstance(index, int) and isinstance(total, int)  # for mypy
    if not 1 <= count <= limits.max_chunks or not 0 <= index < count:
        raise _Invalid("chunk count or index out of range")
    if not 1 <= total <= limits.max_message_bytes or not 1 <= len(chunk_data) <= total:
        raise _Invalid("chunk sizes out of range")
    if len(message_id) != MESSAGE_ID_BYTES or len(topic) > MAX_TOPIC_CHARS:
        raise _Invalid("bad message id or topic")
    return Chunk(header.sender, topic, message_id, index, count, total, chunk_data)
