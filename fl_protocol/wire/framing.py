"""Typed, versioned, signed binary frames: the envelope of every fedlora message.

Layout (all integers little-endian; docs/wire-format.md has the full table):

    offset      size  field
    0           4     magic b"FLRF"
    4           1     format version (1)
    5           1     message type (MessageType)
    6           4     header_bytes H
    10          H     header: encode_fields({codec_chain, created_ms, fleet, message_type, round_id, sender})
    10+H        4     body_bytes B
    14+H        B     body (opaque here; message bodies are encode_fields mappings)
    14+H+B      64    Ed25519 signature by the sender over bytes [0, 14+H+B)

The signature covers magic, version, type byte and the whole header, so it binds fleet, round, sender and
message type. Decoding is strict and opaque: every length is checked against the bytes that remain and the
limits before use, the frame must end exactly after the signature, and every failure is `DecodeError`.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fl_protocol.errors import ConfigError, DecodeError
from fl_protocol.message_types import MessageType
from fl_protocol.topics import is_valid_id
from fl_protocol.wire.fields import FieldLimits, decode_fields, encode_fields

logger = logging.getLogger(__name__)

FRAME_MAGIC = b"FLRF"
FORMAT_VERSION = 1
SIGNATURE_BYTES = 64
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
MAX_HEADER_BYTES = 4096
MAX_CODEC_CHAIN_CHARS = 1024
MAX_UINT63 = 2**63 - 1
_PREFIX = struct.Struct("<4sBBI")  # magic, version, type, header_bytes
_LENGTH = struct.Struct("<I")
_HEADER_KEYS = frozenset({"codec_chain", "created_ms", "fleet", "message_type", "round_id", "sender"})
MIN_FRAME_BYTES = _PREFIX.size + _LENGTH.size + SIGNATURE_BYTES
HEADER_LIMITS = FieldLimits(max_bytes=MAX_HEADER_BYTES, max_items=16, max_depth=1, max_arrays=0)


@dataclass(frozen=True)
class FrameHeader:
    """Routing and binding data of a frame; every field is covered by the signature.

    `codec_chain` describes the update codec applied to the body (fl_protocol.codec.codec_chain_text); it is
    the empty string for messages that carry no encoded update.
    """

    fleet: str
    round_id: int
    sender: str
    message_type: MessageType
    created_ms: int
    codec_chain: str = ""

    def __post_init__(self) -> None:
        if not is_valid_id(self.fleet) or not is_valid_id(self.sender):
            raise ConfigError("fleet and sender must be valid ids ([A-Za-z0-9_.-], 1..64 chars)")
        for name in ("round_id", "created_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_UINT63:
                raise ConfigError(f"{name} must be an int in [0, 2^63)")
        try:
            object.__setattr__(self, "message_type", MessageType(self.message_type))
        except ValueError:
            raise ConfigError("unknown message_type") from None
        chain = self.codec_chain
        if not isinstance(chain, str) or len(chain) > MAX_CODEC_CHAIN_CHARS or not chain.isascii():
            raise ConfigError("codec_chain must be an ASCII str of at most 1024 chars")
        if any(not ch.isprintable() for ch in chain):
            raise ConfigError("codec_chain must be printable")

    def to_fields(self) -> dict[str, object]:
        """The header as a field mapping (full field names), as encoded inside the frame."""
        return {
            "codec_chain": self.codec_chain,
            "created_ms": self.created_ms,
            "fleet": self.fleet,
            "message_type": int(self.message_type),
            "round_id": self.round_id,
            "sender": self.sender,
        }


def encode_frame(header: FrameHeader, body: bytes, signing_key: Ed25519PrivateKey) -> bytes:
    """Build and sign a frame. `signing_key` must be the identity key of `header.sender`."""
    header_raw = encode_fields(header.to_fields())  # type: ignore[arg-type]
    if len(header_raw) > MAX_HEADER_BYTES:
        raise ConfigError("frame header too large")
    body = bytes(body)
    if len(body) > 0xFFFFFFFF:
        raise ConfigError("frame body too large")
    signed = b"".join(
        (
            _PREFIX.pack(FRAME_MAGIC, FORMAT_VERSION, int(header.message_type), len(header_raw)),
            header_raw,
            _LENGTH.pack(len(body)),
            body,
        )
    )
    return signed + signing_key.sign(signed)


class _Malformed(Exception):
    """Internal carrier of the precise failure reason (logged at DEBUG, never returned to a peer)."""


def _parse(data: bytes, max_frame_bytes: int) -> tuple[FrameHeader, int, int]:
    """Parse without verifying: returns (header, body_offset, signed_bytes)."""
    total = len(data)
    if total < MIN_FRAME_BYTES or total > max_frame_bytes:
        raise _Malformed(f"frame size {total} outside [{MIN_FRAME_BYTES}, {max_frame_bytes}]")
    magic, version, type_byte, header_bytes = _PREFIX.unpack_from(data, 0)
    if magic != FRAME_MAGIC or version != FORMAT_VERSION:
        raise _Malformed("bad magic or format version")
    if type_byte not in MessageType._value2member_map_:
        raise _Malformed("unknown message type")
    if header_bytes > MAX_HEADER_BYTES or header_bytes > total - MIN_FRAME_BYTES:
        raise _Malformed("header length out of range")
    header_end = _PREFIX.size + header_bytes
    header = _header_from_fields(decode_fields(data[_PREFIX.size : header_end], limits=HEADER_LIMITS))
    if header.message_type != type_byte:
        raise _Malformed("type byte disagrees with header")
    (body_bytes,) = _LENGTH.unpack_from(data, header_end)
    body_offset = header_end + _LENGTH.size
    if body_bytes != total - body_offset - SIGNATURE_BYTES:
        raise _Malformed("body length does not match frame size (truncated or trailing data)")
    return header, body_offset, body_offset + body_bytes


def _header_from_fields(fields: Mapping[str, object]) -> FrameHeader:
    if set(fields) != _HEADER_KEYS:
        raise _Malformed("header keys differ from the format")
    types = {
        "codec_chain": str,
        "created_ms": int,
        "fleet": str,
        "message_type": int,
        "round_id": int,
        "sender": str,
    }
    for name, expected in types.items():
        if type(fields[name]) is not expected:
            raise _Malformed(f"header field {name} has the wrong type")
    if fields["message_type"] not in MessageType._value2member_map_:
        raise _Malformed("unknown message type in header")
    return FrameHeader(**fields)  # type: ignore[arg-type]


def peek_header(data: bytes, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> FrameHeader:
    """Parse a frame's header WITHOUT verifying the signature.

    UNTRUSTED: anyone can forge what this returns. Use it only to route or log (e.g. a gateway choosing a
    queue); every decision about content must go through `decode_frame`. Malformed frames raise DecodeError.
    """
    try:
        return _parse(bytes(data), max_frame_bytes)[0]
    except (_Malformed, DecodeError, ConfigError) as exc:
        logger.debug("frame peek failed: %s", exc)
        raise DecodeError() from None


def decode_frame(
    data: bytes,
    *,
    verify_key: Callable[[str], Ed25519PublicKey | None],
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> tuple[FrameHeader, bytes]:
    """Parse and verify a frame; return its header and body.

    `verify_key(sender)` returns the sender's Ed25519 public key, or None for an unknown sender. An unknown
    sender, a bad signature, a malformed or truncated frame and trailing bytes all raise the same opaque
    `DecodeError`; the precise reason is logged at DEBUG. Exceptions raised by `verify_key` itself propagate
    (a broken key store is a local fault, not a bad frame).
    """
    data = bytes(data)
    header, body = verified_body(data, verify_key=verify_key, max_frame_bytes=max_frame_bytes)
    return header, bytes(body)


def verified_body(
    data: bytes,
    *,
    verify_key: Callable[[str], Ed25519PublicKey | None],
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> tuple[FrameHeader, memoryview]:
    """`decode_frame` without copying: the body is a read-only view into `data` (bytes)."""
    view = memoryview(data)
    try:
        header, body_offset, signed_bytes = _parse(data, max_frame_bytes)
        public_key = verify_key(header.sender)
        if public_key is None:
            raise _Malformed("unknown sender")
        public_key.verify(view[signed_bytes:], view[:signed_bytes])
    except InvalidSignature:
        logger.debug("frame rejected: bad signature")
        raise DecodeError() from None
    except (_Malformed, DecodeError, ConfigError) as exc:
        logger.debug("frame rejected: %s", exc)
        raise DecodeError() from None
    return header, view[body_offset:signed_bytes]
