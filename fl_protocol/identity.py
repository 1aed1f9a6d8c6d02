"""A node's identity on the wire: sign outgoing messages, verify incoming ones against the fleet keys.

Every frame is signed by its sender and bound to fleet, round, sender and type (fl_protocol.wire). This
class adds the two checks every role needs on top: the frame's fleet is ours, and the sender is one we
expect for that message (e.g. only the cloud may send a RoundTask), so a valid signature from the wrong
node is still refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fl_protocol.errors import DecodeError
from fl_protocol.wire.envelope import WireMessage, decode_message, encode_message
from fl_protocol.wire.framing import FrameHeader

logger = logging.getLogger(__name__)
M = TypeVar("M", bound=WireMessage)


@dataclass(frozen=True)
class NodeIdentity:
    """This node's id, fleet, signing key, and the public keys of every node it may hear from."""

    node_id: str
    fleet: str
    signing_key: Ed25519PrivateKey = field(repr=False)
    fleet_keys: Mapping[str, Ed25519PublicKey] = field(repr=False)
    clock_ms: Callable[[], int] = field(repr=False, compare=False, default=lambda: 0)

    def verify_key(self, node_id: str) -> Ed25519PublicKey | None:
        """Public key of `node_id`, or None if it is not (or no longer) part of the fleet."""
        return self.fleet_keys.get(node_id)

    def encode(self, message: WireMessage, *, round_id: int, codec_chain: str = "") -> bytes:
        """Sign `message` as this node, for `round_id`."""
        return encode_message(
            message,
            fleet=self.fleet,
            round_id=round_id,
            sender=self.node_id,
            created_ms=int(self.clock_ms()),
            signing_key=self.signing_key,
            codec_chain=codec_chain,
        )

    def decode(
        self, data: bytes, expected_type: type[M], *, senders: Collection[str] | None = None
    ) -> tuple[FrameHeader, M]:
        """Verify and decode; DecodeError if the signature, fleet, type or sender is not what we expect."""
        header, message = decode_message(data, expected_type, verify_key=self.verify_key)
        if header.fleet != self.fleet:
            logger.debug("frame for fleet %s refused (we are %s)", header.fleet, self.fleet)
            raise DecodeError()
        if senders is not None and header.sender not in senders:
            logger.debug("%s from unexpected sender %s refused", expected_type.__name__, header.sender)
            raise DecodeError()
        return header, message
