"""Field codec: types, determinism, canonical-only decoding and limits."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from fl_protocol.errors import DecodeError
from fl_protocol.wire.fields import MAX_DEPTH, MAX_INT_BYTES, Tag, decode_fields, encode_fields


def test_every_type_round_trips() -> None:
    value = {
        "none": None,
        "yes": True,
        "no": False,
        "small": -1,
        "prime_share": 2**521 - 1,
        "neg": -(2**300),
        "x": 0.1,
        "s": "ünïcode ✓",
        "b": b"\x00\x01",
        "arr": np.arange(12, dtype=np.int64).reshape(3, 4),
        "half": np.array([1.5, -0.25], dtype=np.float16),
        "big_endian_in": np.array([1, 2], dtype=">u4"),
        "empty_arr": np.zeros((0, 5), dtype=np.float32),
        "scalar_arr": np.array(3.0),
        "list": [1, "a", [None]],
        "dict": {"inner": {"deeper": b""}},
    }
    decoded = decode_fields(encode_fields(value))  # type: ignore[arg-type]
    assert set(decoded) == set(value)
    assert decoded["prime_share"] == 2**521 - 1 and decoded["neg"] == -(2**300)
    assert decoded["yes"] is True and decoded["none"] is None
    arr = decoded["arr"]
    assert isinstance(arr, np.ndarray) and arr.dtype == np.int64 and arr.shape == (3, 4)
    assert np.array_equal(arr, value["arr"])  # type: ignore[arg-type]
    big = decoded["big_endian_in"]
    assert isinstance(big, np.ndarray) and big.dtype == np.dtype("uint32") and list(big) == [1, 2]
    assert isinstance(decoded["scalar_arr"], np.ndarray) and decoded["scalar_arr"].shape == ()
    assert decoded["list"] == [1, "a", [None]] and decoded["dict"] == {"inner": {"deeper": b""}}
    arr[0, 0] = 99  # decoded arrays are writable copies, not views of the input


def test_deterministic_regardless_of_insertion_order() -> None:
    a = {"b": 1, "a": {"y": 2, "x": 3}}
    b = {"a": {"x": 3, "y": 2}, "b": 1}
    assert encode_fields(a) == encode_fields(b)


def test_numpy_scalars_encode_like_python_scalars() -> None:
    assert encode_fields({"v": np.int32(5)}) == encode_fields({"v": 5})
    assert encode_fields({"v": np.float32(0.5)}) == encode_fields({"v": 0.5})
    assert encode_fields({"v": np.bool_(True)}) == encode_fields({"v": True})


def test_unsupported_values_are_rejected_when_encoding() -> None:
    with pytest.raises(TypeError, match="cannot encode a field of type set"):
        encode_fields({"v": {1, 2}})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="ndarray dtype complex128 is not in the wire allowlist"):
        encode_fields({"v": np.array([1 + 2j])})
    with pytest.raises(TypeError, match="ndarray dtype bool is not in the wire allowlist"):
        encode_fields({"v": np.array([True])})  # bool arrays are not in the allowlist
    with pytest.raises(ValueError, match="integer field too large"):
        encode_fields({"v": 1 << (8 * MAX_INT_BYTES)})
    with pytest.raises(ValueError, match="field name empty or too long"):
        encode_fields({"": 1})
    nested: object = 1
    for _ in range(MAX_DEPTH + 2):
        nested = [nested]
    with pytest.raises(ValueError, match="field nesting too deep"):
        encode_fields({"v": nested})  # type: ignore[dict-item]


def _dict(*entries: bytes) -> bytes:
    return bytes([Tag.DICT]) + struct.pack("<I", len(entries)) + b"".join(entries)


def _key(name: str) -> bytes:
    return struct.pack("<H", len(name)) + name.encode()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        bytes([Tag.LIST, 0, 0, 0, 0]),  # top level must be a mapping
        _dict(_key("b") + bytes([Tag.NONE]), _key("a") + bytes([Tag.NONE])),  # unsorted keys
        _dict(_key("a") + bytes([Tag.NONE]), _key("a") + bytes([Tag.NONE])),  # duplicate key
        _dict(_key("a") + bytes([Tag.INT]) + struct.pack("<H", 2) + b"\x01\x00"),  # non-minimal int
        _dict(_key("a") + bytes([Tag.INT]) + struct.pack("<H", 0)),  # empty int
        _dict(_key("a") + bytes([0x7F])),  # unknown tag
        _dict(_key("a") + bytes([Tag.STR]) + struct.pack("<I", 2) + b"\xff\xfe"),  # invalid UTF-8
        _dict(_key("a") + bytes([Tag.BYTES]) + struct.pack("<I", 10**9) + b"x"),  # length past the end
        _dict(_key("a") + bytes([Tag.ARRAY, 99, 1]) + struct.pack("<Q", 1) + b"\x00"),  # dtype not allowed
        _dict(_key("a") + bytes([Tag.ARRAY, 11, 2]) + struct.pack("<QQ", 2**40, 2**40)),  # huge shape
        _dict(_key("a") + bytes([Tag.LIST]) + struct.pack("<I", 2**31)),  # count past the end
        _dict(_key("a") + bytes([Tag.NONE])) + b"\x00",  # trailing byte
        bytes([Tag.DICT]) + struct.pack("<I", 1) + struct.pack("<H", 0) + bytes([Tag.NONE]),  # empty key
    ],
)
def test_malformed_or_non_canonical_input_is_a_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError, match="invalid message"):
        decode_fields(raw)


def test_depth_and_size_limits_on_decode() -> None:
    deep = bytes([Tag.NONE])
    for _ in range(MAX_DEPTH + 2):
        deep = bytes([Tag.LIST]) + struct.pack("<I", 1) + deep
    with pytest.raises(DecodeError, match="invalid message"):
        decode_fields(_dict(_key("a") + deep))
    body = encode_fields({"a": b"x" * 100})
    with pytest.raises(DecodeError, match="invalid message"):
        decode_fields(body, max_bytes=len(body) - 1)
    assert decode_fields(body, max_bytes=len(body)) == {"a": b"x" * 100}


def test_decode_error_message_is_opaque() -> None:
    with pytest.raises(DecodeError, match="invalid message") as info:
        decode_fields(b"\x09\x01")
    assert str(info.value) == "invalid message"
