"""Message dataclass <-> signed frame: `encode_message` and `decode_message`.

Any class following the `WireMessage` protocol plugs in without a registry entry: a class attribute
`MESSAGE_TYPE`, `to_fields()` and a classmethod `from_fields()`. The expected class is named by the caller,
so a frame of another type, a body that does not decode, or values that fail the class's validation are all
the same opaque DecodeError. If the message has a `round_id`, it must equal the signed header's round_id.

A class may declare `FIELD_LIMITS` (fl_protocol.wire.fields.FieldLimits): the cost budget of its body. The
frame is refused before its signature is checked if it is larger than that budget allows, and the body
decoder stops at the first value over it. Classes without a declaration get `DEFAULT_MESSAGE_LIMITS`.
The project's own messages are declared with fl_protocol.wire.schema (`Message`), which derives all of
this (type, field methods, budget) from one declaration of the fields.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fl_protocol.errors import ConfigError, DecodeError
from fl_protocol.message_types import MessageType
from fl_protocol.wire.fields import FieldLimits, decode_fields, encode_fields
from fl_protocol.wire.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    MAX_HEADER_BYTES,
    MIN_FRAME_BYTES,
    FrameHeader,
    encode_frame,
    verified_body,
)

logger = logging.getLogger(__name__)


class WireMessage(Protocol):
    """What a message dataclass provides to be framed."""

    MESSAGE_TYPE: ClassVar[MessageType]

    def to_fields(self) -> Mapping[str, Any]:
        """The message as a field mapping (fl_protocol.wire.fields values only)."""
        ...

    @classmethod
    def from_fields(cls, values: dict[str, Any]) -> Any:
        """Rebuild (and validate) the message from the decoded field dict (`decode_fields` gives one)."""
        ...


M = TypeVar("M", bound=WireMessage)

# A message class without FIELD_LIMITS: any size the frame allows, few values, shallow, one array.
DEFAULT_MESSAGE_LIMITS = FieldLimits(max_items=4096, max_depth=4, max_arrays=1)

# What from_fields may raise on hostile values: every one becomes the opaque DecodeError. ArithmeticError
# covers float(2**1100) (OverflowError); LookupError covers missing keys and bad indexes.
_REJECTED = (ConfigError, DecodeError, ArithmeticError, AttributeError, LookupError, TypeError, ValueError)


def message_limits(expected_type: type) -> FieldLimits:
    """The body budget of `expected_type` (its FIELD_LIMITS, else DEFAULT_MESSAGE_LIMITS)."""
    limits = getattr(expected_type, "FIELD_LIMITS", DEFAULT_MESSAGE_LIMITS)
    return limits if isinstance(limits, FieldLimits) else DEFAULT_MESSAGE_LIMITS


def encode_message(
    message: WireMessage,
    *,
    fleet: str,
    round_id: int,
    sender: str,
    created_ms: int,
    signing_key: Ed25519PrivateKey,
    codec_chain: str = "",
) -> bytes:
    """Encode `message` as a body in a frame of type `message.MESSAGE_TYPE`, signed by `sender`."""
    message_round = getattr(message, "round_id", None)
    if message_round is not None and message_round != round_id:
        raise ConfigError("message round_id differs from the frame's round_id")
    header = FrameHeader(
        fleet=fleet,
        round_id=round_id,
        sender=sender,
        message_type=type(message).MESSAGE_TYPE,
        created_ms=created_ms,
        codec_chain=codec_chain,
    )
    return encode_frame(header, encode_fields(message.to_fields()), signing_key)


def decode_message(
    data: bytes,
    expected_type: type[M],
    *,
    verify_key: Callable[[str], Ed25519PublicKey | None],
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> tuple[FrameHeader, M]:
    """Verify a frame and decode its body as `expected_type`; every failure is an opaque DecodeError.

    The frame may be at most `max_frame_bytes` and at most what `expected_type`'s FIELD_LIMITS allow
    (checked before the signature); the body is decoded under those limits.
    """
    limits = message_limits(expected_type)
    frame_budget = MIN_FRAME_BYTES + MAX_HEADER_BYTES + limits.max_bytes
    header, body = verified_body(
        bytes(data), verify_key=verify_key, max_frame_bytes=min(max_frame_bytes, frame_budget)
    )
    try:
        if header.message_type != expected_type.MESSAGE_TYPE:
            raise ConfigError(
                f"frame type {header.message_type.name} where {expected_type.__name__} expected"
            )
        message = expected_type.from_fields(decode_fields(body, max_bytes=max_frame_bytes, limits=limits))
        if not isinstance(message, expected_type):
            raise ConfigError("from_fields returned another type")
        message_round = getattr(message, "round_id", None)
        if message_round is not None and message_round != header.round_id:
            raise ConfigError("message round_id differs from the signed header")
    except _REJECTED as exc:
        logger.debug("message rejected: %s", exc)
        raise DecodeError() from None
    return header, message
