"""Property tests of the wire format: frames and fields round trip; any corruption is a DecodeError."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fl_protocol.errors import DecodeError
from fl_protocol.message_types import MessageType
from fl_protocol.wire.fields import FieldValue, decode_fields, encode_fields
from fl_protocol.wire.framing import FrameHeader, decode_frame, encode_frame

KEY = Ed25519PrivateKey.from_private_bytes(b"\x05" * 32)
PUBLIC = KEY.public_key()
ids = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-", min_size=1, max_size=64
)
headers = st.builds(
    FrameHeader,
    fleet=ids,
    round_id=st.integers(0, 2**63 - 1),
    sender=ids,
    message_type=st.sampled_from(list(MessageType)),
    created_ms=st.integers(0, 2**63 - 1),
    codec_chain=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80),
)
bodies = st.binary(max_size=300)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _verify(header: FrameHeader) -> Any:
    return lambda sender: PUBLIC if sender == header.sender else None


@FAST
@given(headers, bodies)
def test_frame_round_trip(header: FrameHeader, body: bytes) -> None:
    assert decode_frame(encode_frame(header, body, KEY), verify_key=_verify(header)) == (header, body)


@FAST
@given(headers, bodies, st.data())
def test_any_single_byte_corruption_is_rejected(
    header: FrameHeader, body: bytes, data: st.DataObject
) -> None:
    frame = bytearray(encode_frame(header, body, KEY))
    position = data.draw(st.integers(0, len(frame) - 1), label="position")
    frame[position] ^= data.draw(st.integers(1, 255), label="xor")
    with pytest.raises(DecodeError, match="invalid message"):
        decode_frame(bytes(frame), verify_key=_verify(header))


@FAST
@given(headers, bodies, st.data())
def test_truncation_and_extension_are_rejected(header: FrameHeader, body: bytes, data: st.DataObject) -> None:
    frame = encode_frame(header, body, KEY)
    cut = data.draw(st.integers(0, len(frame) - 1), label="cut")
    with pytest.raises(DecodeError, match="invalid message"):
        decode_frame(frame[:cut], verify_key=_verify(header))
    extra = data.draw(st.binary(min_size=1, max_size=8), label="extra")
    with pytest.raises(DecodeError, match="invalid message"):
        decode_frame(frame + extra, verify_key=_verify(header))


_DTYPES = [
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
]
arrays = st.sampled_from(_DTYPES).flatmap(
    lambda dtype: hnp.arrays(
        np.dtype(dtype), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
    )
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**700), max_value=2**700),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=20),
    arrays,
)
keys = st.text(min_size=1, max_size=12)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=20,
)


def _same(a: object, b: object) -> bool:
    """Exact equality, bit for bit for floats and arrays (NaN == NaN, -0.0 != 0.0)."""
    if isinstance(a, np.ndarray):
        return (
            isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.tobytes() == b.tobytes()
        )
    if isinstance(a, float):
        return isinstance(b, float) and struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, bool) or a is None:
        return a is b
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, values, max_size=6))
def test_fields_round_trip_and_are_canonical(fields: dict[str, FieldValue]) -> None:
    raw = encode_fields(fields)
    decoded = decode_fields(raw)
    assert _same(decoded, fields)
    assert encode_fields(decoded) == raw
    assert encode_fields(dict(reversed(list(fields.items())))) == raw


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, values, min_size=1, max_size=6), st.data())
def test_fields_corruption_fails_or_yields_a_canonical_other_value(
    fields: dict[str, Any], data: st.DataObject
) -> None:
    """The decoder accepts only canonical encodings: whatever a corrupted body decodes to re-encodes to it."""
    raw = bytearray(encode_fields(fields))
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= data.draw(st.integers(1, 255))
    try:
        decoded = decode_fields(bytes(raw))
    except DecodeError:
        return
    assert encode_fields(decoded) == bytes(raw)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(DecodeError, match="invalid message"):
        decode_fields(bytes(raw[:cut]))


def test_float_special_values_survive() -> None:
    decoded = decode_fields(encode_fields({"a": math.inf, "b": -0.0, "c": math.nan}))
    assert decoded["a"] == math.inf and math.copysign(1.0, decoded["b"]) == -1.0  # type: ignore[arg-type]
    assert math.isnan(decoded["c"])  # type: ignore[arg-type]
