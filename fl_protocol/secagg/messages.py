"""SecAgg+ messages (docs/round-protocol.md rows 2-7; docs/secure-aggregation.md, "Stages") declared with
the wire schema.

Each class names its wire type and declares its fields once (fl_protocol.wire.schema); `to_fields` /
`from_fields` are exact inverses for the generic wire encoder, and the framing layer signs the result.
The protocol state machines build these messages (building is not checked: `checked="decode"`);
`from_fields` is strict: unknown or missing keys, wrong types or sizes raise an opaque `DecodeError` (the
reason goes to the debug log only). Field tables: docs/wire-format.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fl_protocol.codec.pack import pack_bits, packed_bytes, unpack_bits
from fl_protocol.errors import ConfigError
from fl_protocol.message_types import MessageType
from fl_protocol.wire.fields import MAX_COHORT_DEVICES, FieldValue
from fl_protocol.wire.schema import Message, wire
from fl_protocol.wire.wire_types import Bytes, Int, Map, Nested, Seq, Text, WireType, number_text

MAX_NODE_ID_CHARS = 128
MAX_REASON_CHARS = 512
MAX_MASKED_VALUES = 1 << 28  # masked values per update; the frame size limit binds far earlier
SMALL_BODY_BYTES = 8192  # body budget of the messages of a few fixed-size fields

ROUND_ID = Int(0, 2**64 - 1)
NODE = Text(1, MAX_NODE_ID_CHARS)
SIGNATURE = Bytes(64)
X25519_KEY = Bytes(32)


class PackedRing(WireType):
    """uint32 ring values in [0, 2^b), on the wire bit-packed at exactly b bits each (fl_protocol.codec.pack)
    as two keys: `count` (number of values) and `packed` (ceil(count · b / 8) bytes), so a device sends k · b
    bits, not 32 bits per value. b is the message's field `bits_field`, decoded before this one. The decoder
    checks the length against count and b before unpacking and refuses non-zero padding bits."""

    items = 2

    def __init__(self, bits_field: str, max_count: int) -> None:
        self.bits_field, self.count = bits_field, Int(0, max_count)

    def keys(self, name: str) -> tuple[str, ...]:
        return ("count", "packed")

    def check(self, name: str, value: Any) -> np.ndarray:
        if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype != np.uint32:
            raise ConfigError(f"{name} must be a 1-D uint32 array")
        return value

    def encode_into(self, out: dict[str, FieldValue], name: str, value: Any, owner: object) -> None:
        values = np.asarray(value)
        out["count"] = int(values.shape[0]) if values.ndim == 1 else -1
        out["packed"] = pack_bits(values, getattr(owner, self.bits_field))  # ValueError outside the ring

    def decode_from(self, values: Mapping[str, Any], name: str, decoded: Mapping[str, Any]) -> Any:
        ring_bits = decoded[self.bits_field]
        count = self.count.check("count", values["count"])
        packed = values["packed"]
        if type(packed) is not bytes or len(packed) != packed_bytes(count, ring_bits):
            raise ConfigError("packed: length differs from ceil(count * ring_bits / 8)")
        return unpack_bits(packed, count, ring_bits)

    def describe(self) -> str:
        return f"{number_text(self.count.hi or 0)} values at most, packed at `{self.bits_field}` bits"

    def rows(self, name: str, doc: str) -> list[tuple[str, str, str]]:
        return [
            ("count", self.count.describe(), f"number of {name}"),
            ("packed", f"bytes, exactly ⌈count · {self.bits_field} / 8⌉", f"{doc}; padding bits zero"),
        ]


class AdvertiseKeys(
    Message, message_type=MessageType.ADVERTISE_KEYS, checked="decode", max_bytes=SMALL_BODY_BYTES
):
    """Device -> gateway: the two X25519 public keys, signed by the device's Ed25519 identity key."""

    round_id: int = wire(ROUND_ID)
    sender: str = wire(NODE)
    c_public: bytes = wire(X25519_KEY, doc="X25519 key for the share encryption")
    s_public: bytes = wire(X25519_KEY, doc="X25519 key for the pairwise masks")
    signature: bytes = wire(SIGNATURE, doc="Ed25519 over (fleet, round, id, c_public, s_public)")


class Roster(Message, message_type=MessageType.ROSTER, checked="decode"):
    """Gateway -> devices: the cohort (index = position + 1 = Shamir x), its signed keys, graph and t.

    `members` holds the advertisements themselves so each device can check its neighbours' key
    signatures: the gateway routes keys but cannot substitute them.
    """

    round_id: int = wire(ROUND_ID)
    sender: str = wire(NODE)
    members: tuple[AdvertiseKeys, ...] = wire(
        Seq(Nested(AdvertiseKeys), MAX_COHORT_DEVICES), doc="the advertisements, sorted by sender"
    )
    graph_seed: bytes = wire(Bytes(32), doc="seed of the neighbour graph")
    degree: int = wire(Int(1, 1 << 20), doc="k of the neighbour graph")
    threshold: int = wire(Int(1, 1 << 20), doc="Shamir threshold t")
    dimension: int = wire(Int(0, 1 << 31), doc="masked values per update")
    ring_bits: int = wire(Int(8, 32), doc="b of Z_2^b")


class ShareKeys(Message, message_type=MessageType.SHARE_KEYS, checked="decode"):
    """Device -> gateway: AES-GCM encrypted (b-share, s-share) for each neighbour, keyed by recipient,
    and `b_commitment`, the 32-byte SHA-256 commitment to its self-mask seed b_u
    (`keys.self_mask_commitment`) that the gateway checks a reconstructed b_u against."""

    round_id: int = wire(ROUND_ID)
    sender: str = wire(NODE)
    ciphertexts: dict[str, bytes] = wire(
        Map(NODE, Bytes(max_bytes=4096), MAX_COHORT_DEVICES), doc="recipient → encrypted shares"
    )
    b_commitment: bytes = wire(Bytes(32), doc="SHA-256 commitment to b_u")


class RoutedShares(Message, message_type=MessageType.ROUTED_SHARES, checked="decode"):
    """Gateway -> one device: the ciphertexts addressed to it, keyed by their source."""

    round_id: int = wire(ROUND_ID)
    sender: str = wire(NODE)
    recipient: str = wire(NODE)
    ciphertexts: dict[str, bytes] = wire(
        Map(NODE, Bytes(max_bytes=4096), MAX_COHORT_DEVICES), doc="source → encrypted shares"
    )


class MaskedUpdate(Message, message_type=MessageType.MASKED_UPDATE, checked="decode", eq=False):
    """Device -> gateway: the masked update, uint32 values in [0, 2^ring_bits), bit-packed on the wire.

    Equality is identity (compare `values` with numpy).
    """

    round_id: int = wire(ROUND_ID)
    sender: str = wire(NODE)
    ring_bits: int = wire(Int(8, 32), doc="b of Z_2^b")
    values: np.ndarray = wire(
        PackedRing("ring_bits", MAX_MASKED_VALUES), doc="the masked values, `ring_bits` bits each"
    )


class Survivors(Message, message_type=MessageType.SURVIVORS, checked="decode"):
    """Gateway -> devices: the sorted set of nodes whose masked update arrived (to be signed)."""

    round_id: int = wire(ROUND_ID)
    sender: str = wire(NODE)
    survivors: tuple[str, ...] = wire(Seq(NODE, MAX_COHORT_DEVICES, order="sorted"))


class ConsistencySignature(
    Message, message_type=MessageType.CONSISTENCY_SIGNATURE, checked="decode", max_bytes=SMALL_BODY_BYTES
):
    """Device -> gateway: Ed25519 signature over (fleet, round, sorted survivors, global model hash)."""

    round_id: int = wire(ROUND_ID)
    sender: str = wire(NODE)
    signature: bytes = wire(SIGNATURE)


class UnmaskRequest(Message, message_type=MessageType.UNMASK_REQUEST, checked="decode"):
    """Gateway -> devices: survivors (send their b-shares), dropped (send s_sk-shares), and the
    consistency signatures proving at least t survivors signed this survivor set."""

    round_id: int = wire(ROUND_ID)
    sender: str = wire(NODE)
    survivors: tuple[str, ...] = wire(Seq(NODE, MAX_COHORT_DEVICES, order="sorted"))
    dropped: tuple[str, ...] = wire(Seq(NODE, MAX_COHORT_DEVICES, order="sorted"))
    signatures: dict[str, bytes] = wire(
        Map(NODE, SIGNATURE, MAX_COHORT_DEVICES), doc="consistency signatures"
    )


class UnmaskShares(Message, message_type=MessageType.UNMASK_SHARES, checked="decode"):
    """Device -> gateway: Shamir shares (field elements) it holds: b-shares of survivors, s_sk-shares of
    dropped peers; never both kinds for one peer."""

    round_id: int = wire(ROUND_ID)
    sender: str = wire(NODE)
    b_shares: dict[str, int] = wire(Map(NODE, Int(0, None), MAX_COHORT_DEVICES), doc="survivor → b-share")
    s_shares: dict[str, int] = wire(Map(NODE, Int(0, None), MAX_COHORT_DEVICES), doc="dropped → s_sk-share")


class Abort(Message, message_type=MessageType.ABORT, checked="decode", max_bytes=SMALL_BODY_BYTES):
    """Gateway -> devices (and the cloud): the cohort is aborted for this round; nothing will be released.

    The one abort message of the protocol: a gateway publishes it on its roster topic and on the cloud's
    abort topic (docs/round-protocol.md).
    """

    round_id: int = wire(ROUND_ID)
    sender: str = wire(NODE)
    reason: str = wire(Text(1, MAX_REASON_CHARS))


MESSAGE_CLASSES: dict[MessageType, type] = {
    cls.MESSAGE_TYPE: cls
    for cls in (
        AdvertiseKeys,
        Roster,
        ShareKeys,
        RoutedShares,
        MaskedUpdate,
        Survivors,
        ConsistencySignature,
        UnmaskRequest,
        UnmaskShares,
        Abort,
    )
}
