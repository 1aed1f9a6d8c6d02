"""SecAgg+ messages: to_fields/from_fields are exact inverses, also through the wire field encoder,
and from_fields is strict."""

from __future__ import annotations

import numpy as np
import pytest

from fl_protocol.errors import DecodeError
from fl_protocol.secagg.messages import (
    MESSAGE_CLASSES,
    Abort,
    AdvertiseKeys,
    ConsistencySignature,
    MaskedUpdate,
    Roster,
    RoutedShares,
    ShareKeys,
    Survivors,
    UnmaskRequest,
    UnmaskShares,
)
from fl_protocol.wire.fields import decode_fields, encode_fields

ADVERT = AdvertiseKeys(3, "dev-a", bytes(range(32)), bytes(range(1, 33)), bytes(64))
SAMPLES: list[object] = [
    ADVERT,
    Roster(
        3,
        "gw",
        (ADVERT, AdvertiseKeys(3, "dev-b", bytes(32), bytes(32), b"\x01" * 64)),
        b"s" * 32,
        1,
        2,
        10,
        16,
    ),
    ShareKeys(3, "dev-a", {"dev-b": b"\x00" * 160}, b"c" * 32),
    RoutedShares(3, "gw", "dev-b", {"dev-a": b"\xff" * 160}),
    MaskedUpdate(3, "dev-a", 20, np.arange(7, dtype=np.uint32)),
    Survivors(3, "gw", ("dev-a", "dev-b")),
    ConsistencySignature(3, "dev-a", b"\x02" * 64),
    UnmaskRequest(3, "gw", ("dev-a",), ("dev-b",), {"dev-a": b"\x03" * 64}),
    UnmaskShares(3, "dev-a", {"dev-a": 2**520 + 5}, {"dev-b": 0}),
    Abort(3, "gw", "fewer than t survivors"),
]


def _equal(a: object, b: object) -> bool:
    if isinstance(a, MaskedUpdate) and isinstance(b, MaskedUpdate):
        same = (a.round_id, a.sender, a.ring_bits) == (b.round_id, b.sender, b.ring_bits)
        return same and a.values.dtype == b.values.dtype and np.array_equal(a.values, b.values)
    return a == b


def test_every_message_type_has_a_sample() -> None:
    assert {type(m) for m in SAMPLES} == set(MESSAGE_CLASSES.values())


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_fields_round_trip_direct_and_through_wire_encoder(message: object) -> None:
    cls = type(message)
    fields = message.to_fields()  # type: ignore[attr-defined]
    assert _equal(cls.from_fields(fields), message)  # type: ignore[attr-defined]
    decoded = decode_fields(encode_fields(fields))
    assert _equal(cls.from_fields(decoded), message)  # type: ignore[attr-defined]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_from_fields_rejects_extra_and_missing_keys(message: object) -> None:
    cls = type(message)
    fields = message.to_fields()  # type: ignore[attr-defined]
    with pytest.raises(DecodeError, match="invalid message"):
        cls.from_fields({**fields, "extra": 1})  # type: ignore[attr-defined]
    with pytest.raises(DecodeError, match="invalid message"):
        cls.from_fields({k: v for k, v in fields.items() if k != "round_id"})  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("cls", "key", "bad"),
    [
        (AdvertiseKeys, "c_public", bytes(31)),
        (AdvertiseKeys, "round_id", -1),
        (AdvertiseKeys, "round_id", True),
        (Survivors, "survivors", ["b", "a"]),
        (Survivors, "survivors", ["a", "a"]),
        (MaskedUpdate, "packed", b"\x00" * 17),  # 7 values at 20 bits take 18 bytes
        (MaskedUpdate, "packed", b"\x00" * 19),
        (MaskedUpdate, "packed", b"\x00" * 17 + b"\xf0"),  # non-zero padding bits
        (MaskedUpdate, "packed", np.zeros(18, dtype=np.uint8)),
        (MaskedUpdate, "count", 8),
        (MaskedUpdate, "count", -1),
        (MaskedUpdate, "ring_bits", 40),
        (UnmaskShares, "b_shares", {"a": -1}),
        (ConsistencySignature, "signature", b"\x00" * 63),
        (ShareKeys, "b_commitment", b"\x00" * 31),
    ],
)
def test_from_fields_rejects_bad_values(cls: type, key: str, bad: object) -> None:
    sample = next(m for m in SAMPLES if type(m) is cls)
    fields = {**sample.to_fields(), key: bad}  # type: ignore[attr-defined]
    with pytest.raises(DecodeError, match="invalid message"):
        cls.from_fields(fields)


@pytest.mark.parametrize("ring_bits", [8, 13, 17, 20, 32])
def test_masked_update_travels_packed_at_the_ring_width(ring_bits: int) -> None:
    """k values cost ceil(k b / 8) bytes on the wire, not 4 bytes each (issue 10, item 0)."""
    k = 1000
    values = (np.arange(k, dtype=np.uint64) * 2654435761 % (1 << ring_bits)).astype(np.uint32)
    message = MaskedUpdate(1, "dev-a", ring_bits, values)
    body = encode_fields(message.to_fields())
    assert len(body) - (k * ring_bits + 7) // 8 < 100  # field names and lengths only
    decoded = MaskedUpdate.from_fields(decode_fields(body))
    assert decoded.values.dtype == np.uint32 and np.array_equal(decoded.values, values)


def test_masked_update_refuses_values_outside_the_ring() -> None:
    with pytest.raises(ValueError, match="value does not fit in ring_bits"):
        MaskedUpdate(1, "dev-a", 20, np.array([1 << 20], dtype=np.uint32)).to_fields()
