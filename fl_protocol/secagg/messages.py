"""SecAgg+ messages (docs/round-protocol.md rows 2-7) as frozen dataclasses.

Each class names its wire type (`MESSAGE_TYPE`) and converts to and from a mapping of plain field values
(`to_fields` / `from_fields`, exact inverses) that the generic wire encoder serialises and the framing
layer signs. `from_fields` is strict: unknown or missing keys, wrong types or sizes raise an opaque
`DecodeError` (the reason goes to the debug log only).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from fl_protocol.codec.pack import pack_bits, packed_bytes, unpack_bits
from fl_protocol.errors import DecodeError
from fl_protocol.message_types import MessageType
from fl_protocol.wire.fields import DEFAULT_MAX_BYTES, MAX_COHORT_DEVICES, FieldLimits

logger = logging.getLogger(__name__)

# FieldValue: None, bool, int, float, str, bytes, np.ndarray, or lists / str-keyed dicts of these
FieldValue = Any
Fields = dict[str, FieldValue]

MAX_NODE_ID_CHARS = 128
MAX_REASON_CHARS = 512
MAX_MASKED_VALUES = 1 << 28  # masked values per update; the frame size limit binds far earlier


def _limits(*, items: int, depth: int, arrays: int = 0, max_bytes: int = DEFAULT_MAX_BYTES) -> FieldLimits:
    """A message's decoding budget (see fl_protocol.wire.fields.FieldLimits); 64 items of slack."""
    return FieldLimits(max_bytes=max_bytes, max_items=64 + items, max_depth=depth, max_arrays=arrays)


_SMALL = _limits(items=0, depth=1, max_bytes=8192)


def _fail(reason: str) -> DecodeError:
    logger.debug("secagg message rejected: %s", reason)
    return DecodeError()


def _expect_keys(fields: Fields, names: tuple[str, ...]) -> None:
    if not isinstance(fields, dict) or set(fields) != set(names):
        raise _fail(f"expected keys {names}")


def _int(fields: Fields, name: str, low: int = 0, high: int = 2**64 - 1) -> int:
    value = fields[name]
    if type(value) is not int or not low <= value <= high:
        raise _fail(f"{name}: not an int in [{low}, {high}]")
    return value


def _str(value: FieldValue, name: str, max_chars: int = MAX_NODE_ID_CHARS) -> str:
    if type(value) is not str or not 0 < len(value) <= max_chars:
        raise _fail(f"{name}: not a non-empty string of at most {max_chars} chars")
    return value


def _bytes(value: FieldValue, name: str, size: int | None = None, max_size: int = 4096) -> bytes:
    if type(value) is not bytes or (size is not None and len(value) != size) or len(value) > max_size:
        raise _fail(f"{name}: bad bytes")
    return value


def _ids(value: FieldValue, name: str) -> tuple[str, ...]:
    if type(value) is not list:
        raise _fail(f"{name}: not a list")
    ids = tuple(_str(v, name) for v in value)
    if list(ids) != sorted(set(ids)):
        raise _fail(f"{name}: ids must be sorted and unique")
    return ids


def _bytes_map(value: FieldValue, name: str, size: int | None = None) -> dict[str, bytes]:
    if type(value) is not dict:
        raise _fail(f"{name}: not a dict")
    return {_str(k, name): _bytes(v, name, size) for k, v in value.items()}


def _int_map(value: FieldValue, name: str) -> dict[str, int]:
    if type(value) is not dict:
        raise _fail(f"{name}: not a dict")
    out: dict[str, int] = {}
    for key, item in value.items():
        if type(item) is not int or item < 0:
            raise _fail(f"{name}: not a non-negative int")
        out[_str(key, name)] = item
    return out


@dataclass(frozen=True)
class AdvertiseKeys:
    """Device -> gateway: the two X25519 public keys, signed by the device's Ed25519 identity key."""

    MESSAGE_TYPE: ClassVar[MessageType] = MessageType.ADVERTISE_KEYS
    FIELD_LIMITS: ClassVar[FieldLimits] = _SMALL
    round_id: int
    sender: str
    c_public: bytes
    s_public: bytes
    signature: bytes

    def to_fields(self) -> Fields:
        """Plain field mapping for the wire encoder."""
        return {
            "round_id": self.round_id,
            "sender": self.sender,
            "c_public": self.c_public,
            "s_public": self.s_public,
            "signature": self.signature,
        }

    @classmethod
    def from_fields(cls, fields: Fields) -> AdvertiseKeys:
        """Strict inverse of `to_fields`."""
        _expect_keys(fields, ("round_id", "sender", "c_public", "s_public", "signature"))
        return cls(
            round_id=_int(fields, "round_id"),
            sender=_str(fields["sender"], "sender"),
            c_public=_bytes(fields["c_public"], "c_public", 32),
            s_public=_bytes(fields["s_public"], "s_public", 32),
            signature=_bytes(fields["signature"], "signature", 64),
        )


@dataclass(frozen=True)
class Roster:
    """Gateway -> devices: the cohort (index = position + 1 = Shamir x), its signed keys, graph and t.

    `members` holds the advertisements themselves so each device can check its neighbours' key
    signatures: the gateway routes keys but cannot substitute them.
    """

    MESSAGE_TYPE: ClassVar[MessageType] = MessageType.ROSTER
    FIELD_LIMITS: ClassVar[FieldLimits] = _limits(items=6 * MAX_COHORT_DEVICES, depth=3)
    round_id: int
    sender: str
    members: tuple[AdvertiseKeys, ...]
    graph_seed: bytes
    degree: int
    threshold: int
    dimension: int
    ring_bits: int

    def to_fields(self) -> Fields:
        """Plain field mapping for the wire encoder."""
        return {
            "round_id": self.round_id,
            "sender": self.sender,
            "members": [m.to_fields() for m in self.members],
            "graph_seed": self.graph_seed,
            "degree": self.degree,
            "threshold": self.threshold,
            "dimension": self.dimension,
            "ring_bits": self.ring_bits,
        }

    @classmethod
    def from_fields(cls, fields: Fields) -> Roster:
        """Strict inverse of `to_fields`."""
        names = ("round_id", "sender", "members", "graph_seed", "degree", "threshold", "dimension")
        _expect_keys(fields, (*names, "ring_bits"))
        if type(fields["members"]) is not list:
            raise _fail("members: not a list")
        return cls(
            round_id=_int(fields, "round_id"),
            sender=_str(fields["sender"], "sender"),
            members=tuple(AdvertiseKeys.from_fields(m) for m in fields["members"]),
            graph_seed=_bytes(fields["graph_seed"], "graph_seed", 32),
            degree=_int(fields, "degree", 1, 1 << 20),
            threshold=_int(fields, "threshold", 1, 1 << 20),
            dimension=_int(fields, "dimension", 0, 1 << 31),
            ring_bits=_int(fields, "ring_bits", 8, 32),
        )


@dataclass(frozen=True)
class ShareKeys:
    """Device -> gateway: AES-GCM encrypted (b-share, s-share) for each neighbour, keyed by recipient,
    and `b_commitment`, the 32-byte SHA-256 commitment to its self-mask seed b_u
    (`keys.self_mask_commitment`) that the gateway checks a reconstructed b_u against."""

    MESSAGE_TYPE: ClassVar[MessageType] = MessageType.SHARE_KEYS
    FIELD_LIMITS: ClassVar[FieldLimits] = _limits(items=MAX_COHORT_DEVICES, depth=2)
    round_id: int
    sender: str
    ciphertexts: dict[str, bytes]
    b_commitment: bytes

    def to_fields(self) -> Fields:
        """Plain field mapping for the wire encoder."""
        return {
            "round_id": self.round_id,
            "sender": self.sender,
            "ciphertexts": dict(self.ciphertexts),
            "b_commitment": self.b_commitment,
        }

    @classmethod
    def from_fields(cls, fields: Fields) -> ShareKeys:
        """Strict inverse of `to_fields`."""
        _expect_keys(fields, ("round_id", "sender", "ciphertexts", "b_commitment"))
        return cls(
            round_id=_int(fields, "round_id"),
            sender=_str(fields["sender"], "sender"),
            ciphertexts=_bytes_map(fields["ciphertexts"], "ciphertexts"),
            b_commitment=_bytes(fields["b_commitment"], "b_commitment", 32),
        )


@dataclass(frozen=True)
class RoutedShares:
    """Gateway -> one device: the ciphertexts addressed to it, keyed by their source."""

    MESSAGE_TYPE: ClassVar[MessageType] = MessageType.ROUTED_SHARES
    FIELD_LIMITS: ClassVar[FieldLimits] = _limits(items=MAX_COHORT_DEVICES, depth=2)
    round_id: int
    sender: str
    recipient: str
    ciphertexts: dict[str, bytes]

    def to_fields(self) -> Fields:
        """Plain field mapping for the wire encoder."""
        return {
            "round_id": self.round_id,
            "sender": self.sender,
            "recipient": self.recipient,
            "ciphertexts": dict(self.ciphertexts),
        }

    @classmethod
    def from_fields(cls, fields: Fields) -> RoutedShares:
        """Strict inverse of `to_fields`."""
        _expect_keys(fields, ("round_id", "sender", "recipient", "ciphertexts"))
        return cls(
            round_id=_int(fields, "round_id"),
            sender=_str(fields["sender"], "sender"),
            recipient=_str(fields["recipient"], "recipient"),
            ciphertexts=_bytes_map(fields["ciphertexts"], "ciphertexts"),
        )


@dataclass(frozen=True, eq=False)
class MaskedUpdate:
    """Device -> gateway: the masked update, uint32 values in [0, 2^ring_bits).

    On the wire the values travel bit-packed at exactly `ring_bits` bits each (fl_protocol.codec.pack):
    fields `count` (number of values) and `packed` (ceil(count · ring_bits / 8) bytes), so a device sends
    k · b bits, not 32 bits per value. The decoder checks the length against count and ring_bits before
    unpacking and refuses non-zero padding bits.
    """

    MESSAGE_TYPE: ClassVar[MessageType] = MessageType.MASKED_UPDATE
    FIELD_LIMITS: ClassVar[FieldLimits] = _limits(items=0, depth=1, arrays=1)
    round_id: int
    sender: str
    ring_bits: int
    values: np.ndarray

    def to_fields(self) -> Fields:
        """Plain field mapping for the wire encoder (values packed at ring_bits bits)."""
        values = np.asarray(self.values)
        return {
            "round_id": self.round_id,
            "sender": self.sender,
            "ring_bits": self.ring_bits,
            "count": int(values.shape[0]) if values.ndim == 1 else -1,
            "packed": pack_bits(values, self.ring_bits),
        }

    @classmethod
    def from_fields(cls, fields: Fields) -> MaskedUpdate:
        """Strict inverse of `to_fields`: the packed length must match count and ring_bits exactly."""
        _expect_keys(fields, ("round_id", "sender", "ring_bits", "count", "packed"))
        ring_bits = _int(fields, "ring_bits", 8, 32)
        count = _int(fields, "count", 0, MAX_MASKED_VALUES)
        packed = fields["packed"]
        if type(packed) is not bytes or len(packed) != packed_bytes(count, ring_bits):
            raise _fail("packed: length differs from ceil(count * ring_bits / 8)")
        return cls(
            round_id=_int(fields, "round_id"),
            sender=_str(fields["sender"], "sender"),
            ring_bits=ring_bits,
            values=unpack_bits(packed, count, ring_bits),
        )


@dataclass(frozen=True)
class Survivors:
    """Gateway -> devices: the sorted set of nodes whose masked update arrived (to be signed)."""

    MESSAGE_TYPE: ClassVar[MessageType] = MessageType.SURVIVORS
    FIELD_LIMITS: ClassVar[FieldLimits] = _limits(items=MAX_COHORT_DEVICES, depth=2)
    round_id: int
    sender: str
    survivors: tuple[str, ...]

    def to_fields(self) -> Fields:
        """Plain field mapping for the wire encoder."""
        return {"round_id": self.round_id, "sender": self.sender, "survivors": list(self.survivors)}

    @classmethod
    def from_fields(cls, fields: Fields) -> Survivors:
        """Strict inverse of `to_fields`."""
        _expect_keys(fields, ("round_id", "sender", "survivors"))
        return cls(
            round_id=_int(fields, "round_id"),
            sender=_str(fields["sender"], "sender"),
            survivors=_ids(fields["survivors"], "survivors"),
        )


@dataclass(frozen=True)
class ConsistencySignature:
    """Device -> gateway: Ed25519 signature over (fleet, round, sorted survivors, global model hash)."""

    MESSAGE_TYPE: ClassVar[MessageType] = MessageType.CONSISTENCY_SIGNATURE
    FIELD_LIMITS: ClassVar[FieldLimits] = _SMALL
    round_id: int
    sender: str
    signature: bytes

    def to_fields(self) -> Fields:
        """Plain field mapping for the wire encoder."""
        return {"round_id": self.round_id, "sender": self.sender, "signature": self.signature}

    @classmethod
    def from_fields(cls, fields: Fields) -> ConsistencySignature:
        """Strict inverse of `to_fields`."""
        _expect_keys(fields, ("round_id", "sender", "signature"))
        return cls(
            round_id=_int(fields, "round_id"),
            sender=_str(fields["sender"], "sender"),
            signature=_bytes(fields["signature"], "signature", 64),
        )


@dataclass(frozen=True)
class UnmaskRequest:
    """Gateway -> devices: survivors (send their b-shares), dropped (send s_sk-shares), and the
    consistency signatures proving at least t survivors signed this survivor set."""

    MESSAGE_TYPE: ClassVar[MessageType] = MessageType.UNMASK_REQUEST
    FIELD_LIMITS: ClassVar[FieldLimits] = _limits(items=3 * MAX_COHORT_DEVICES, depth=2)
    round_id: int
    sender: str
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    signatures: dict[str, bytes]

    def to_fields(self) -> Fields:
        """Plain field mapping for the wire encoder."""
        return {
            "round_id": self.round_id,
            "sender": self.sender,
            "survivors": list(self.survivors),
            "dropped": list(self.dropped),
            "signatures": dict(self.signatures),
        }

    @classmethod
    def from_fields(cls, fields: Fields) -> UnmaskRequest:
        """Strict inverse of `to_fields`."""
        _expect_keys(fields, ("round_id", "sender", "survivors", "dropped", "signatures"))
        return cls(
            round_id=_int(fields, "round_id"),
            sender=_str(fields["sender"], "sender"),
            survivors=_ids(fields["survivors"], "survivors"),
            dropped=_ids(fields["dropped"], "dropped"),
            signatures=_bytes_map(fields["signatures"], "signatures", 64),
        )


@dataclass(frozen=True)
class UnmaskShares:
    """Device -> gateway: Shamir shares (field elements) it holds: b-shares of survivors, s_sk-shares of
    dropped peers; never both kinds for one peer."""

    MESSAGE_TYPE: ClassVar[MessageType] = MessageType.UNMASK_SHARES
    FIELD_LIMITS: ClassVar[FieldLimits] = _limits(items=2 * MAX_COHORT_DEVICES, depth=2)
    round_id: int
    sender: str
    b_shares: dict[str, int]
    s_shares: dict[str, int]

    def to_fields(self) -> Fields:
        """Plain field mapping for the wire encoder."""
        return {
            "round_id": self.round_id,
            "sender": self.sender,
            "b_shares": dict(self.b_shares),
            "s_shares": dict(self.s_shares),
        }

    @classmethod
    def from_fields(cls, fields: Fields) -> UnmaskShares:
        """Strict inverse of `to_fields`."""
        _expect_keys(fields, ("round_id", "sender", "b_shares", "s_shares"))
        return cls(
            round_id=_int(fields, "round_id"),
            sender=_str(fields["sender"], "sender"),
            b_shares=_int_map(fields["b_shares"], "b_shares"),
            s_shares=_int_map(fields["s_shares"], "s_shares"),
        )


@dataclass(frozen=True)
class Abort:
    """Gateway -> devices: the cohort is aborted for this round; nothing will be released."""

    MESSAGE_TYPE: ClassVar[MessageType] = MessageType.ABORT
    FIELD_LIMITS: ClassVar[FieldLimits] = _SMALL
    round_id: int
    sender: str
    reason: str

    def to_fields(self) -> Fields:
        """Plain field mapping for the wire encoder."""
        return {"round_id": self.round_id, "sender": self.sender, "reason": self.reason}

    @classmethod
    def from_fields(cls, fields: Fields) -> Abort:
        """Strict inverse of `to_fields`."""
        _expect_keys(fields, ("round_id", "sender", "reason"))
        return cls(
            round_id=_int(fields, "round_id"),
            sender=_str(fields["sender"], "sender"),
            reason=_str(fields["reason"], "reason", MAX_REASON_CHARS),
        )


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
