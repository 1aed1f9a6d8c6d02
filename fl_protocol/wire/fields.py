"""Self-describing, deterministic binary encoding of a mapping of field names to values.

Every message body is a mapping encoded with `encode_fields`. The encoding is canonical: one mapping has
exactly one byte string (keys sorted, minimal integer lengths, little-endian arrays), and the decoder rejects
any other spelling. That keeps signatures over re-encoded bodies stable and gives an attacker no second
encoding of the same message. See docs/wire-format.md for the tag table and limits.

Decoding is strict: every length is checked against the remaining bytes and the limits before anything is
allocated; any failure is an opaque `DecodeError` (the reason is logged at DEBUG). No pickle, ever.
`FieldLimits` bounds the cost of decoding one body (bytes, values, nesting, arrays); every message class
declares its own (`FIELD_LIMITS`), so a hostile frame costs at most that message type's budget.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Union

import numpy as np

from fl_protocol.errors import DecodeError

logger = logging.getLogger(__name__)

FieldValue = Union[  # noqa: UP007 - a runtime alias; `X | Y` of a recursive string alias is not valid
    None, bool, int, float, str, bytes, np.ndarray, list["FieldValue"], dict[str, "FieldValue"]
]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 16
MAX_ITEMS = 1_000_000  # decoded values (every scalar, str, bytes, array, list and dict counts one)
MAX_INT_BYTES = 1024  # 8192-bit integers: ample for Shamir shares over a 256..2048-bit prime
MAX_KEY_BYTES = 256
MAX_NDIM = 8
# The largest cohort (devices in one gateway's round) any per-message budget admits: it sizes the budgets of
# messages that carry one entry per device (roster, survivors, shares, partial aggregate survivors).
MAX_COHORT_DEVICES = 16_384


@dataclass(frozen=True)
class FieldLimits:
    """What one decoded body may cost: checked before anything is allocated, DecodeError when exceeded.

    max_bytes: encoded body size; max_items: decoded values (each scalar, str, bytes, ndarray, list and dict
    counts one, so a list of n empty lists counts n + 1); max_depth: nesting (a top-level scalar field is
    depth 1); max_arrays: ndarray values. Peak memory is about the body size plus ~100 bytes per item.
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_items: int = MAX_ITEMS
    max_depth: int = MAX_DEPTH
    max_arrays: int = MAX_ITEMS

    def __post_init__(self) -> None:
        values = (self.max_bytes, self.max_items, self.max_depth, self.max_arrays)
        if any(not isinstance(v, int) or v < 0 for v in values) or self.max_depth > MAX_DEPTH:
            raise ValueError(f"field limits must be non-negative ints and max_depth <= {MAX_DEPTH}")


DEFAULT_LIMITS = FieldLimits()


class Tag(IntEnum):
    """Type tag byte in front of every encoded value. Part of the wire format: never renumber."""

    NONE = 0x00
    FALSE = 0x01
    TRUE = 0x02
    INT = 0x03  # u16 length + minimal two's-complement little-endian bytes
    FLOAT = 0x04  # IEEE 754 binary64, little-endian
    STR = 0x05  # u32 length + UTF-8
    BYTES = 0x06  # u32 length + raw bytes
    ARRAY = 0x07  # dtype code u8, ndim u8, ndim x u64 dims, raw little-endian data
    LIST = 0x08  # u32 count + values
    DICT = 0x09  # u32 count + (u16 key length, UTF-8 key, value) sorted by key, no duplicates


class DtypeCode(IntEnum):
    """Allowlisted ndarray dtypes and their wire codes (data always little-endian)."""

    UINT8 = 1
    UINT16 = 2
    UINT32 = 3
    UINT64 = 4
    INT8 = 5
    INT16 = 6
    INT32 = 7
    INT64 = 8
    FLOAT16 = 9
    FLOAT32 = 10
    FLOAT64 = 11


_DTYPES: dict[DtypeCode, np.dtype] = {
    code: np.dtype(code.name.lower()).newbyteorder("<") for code in DtypeCode
}
_CODE_BY_KIND: dict[tuple[str, int], DtypeCode] = {(dt.kind, dt.itemsize): c for c, dt in _DTYPES.items()}


def _int_length(value: int) -> int:
    """Minimal number of bytes of the two's-complement encoding of `value`."""
    magnitude = value if value >= 0 else ~value
    return magnitude.bit_length() // 8 + 1


def encode_fields(fields: Mapping[str, FieldValue]) -> bytes:
    """Encode a mapping of field name -> value canonically (see module docstring).

    Raises TypeError for a value outside `FieldValue` (a programming error, not a wire error) and
    ValueError for a value over the limits.
    """
    out = bytearray()
    _encode_value(dict(fields), out, depth=0)
    return bytes(out)


def _encode_value(value: object, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError("field nesting too deep")
    if value is None:
        out.append(Tag.NONE)
    elif isinstance(value, (bool, np.bool_)):
        out.append(Tag.TRUE if value else Tag.FALSE)
    elif isinstance(value, (int, np.integer)):
        _encode_int(int(value), out)
    elif isinstance(value, (float, np.floating)):
        out.append(Tag.FLOAT)
        out += struct.pack("<d", float(value))
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out.append(Tag.STR)
        out += struct.pack("<I", len(raw)) + raw
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        out.append(Tag.BYTES)
        out += struct.pack("<I", len(raw)) + raw
    elif isinstance(value, np.ndarray):
        _encode_array(value, out)
    elif isinstance(value, (list, tuple)):
        out.append(Tag.LIST)
        out += struct.pack("<I", len(value))
        for item in value:
            _encode_value(item, out, depth + 1)
    elif isinstance(value, Mapping):
        _encode_dict(value, out, depth)
    else:
        raise TypeError(f"cannot encode a field of type {type(value).__name__}")


def _encode_int(value: int, out: bytearray) -> None:
    length = _int_length(value)
    if length > MAX_INT_BYTES:
        raise ValueError("integer field too large")
    out.append(Tag.INT)
    out += struct.pack("<H", length) + value.to_bytes(length, "little", signed=True)


def _encode_array(array: np.ndarray, out: bytearray) -> None:
    code = _CODE_BY_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise TypeError(f"ndarray dtype {array.dtype} is not in the wire allowlist")
    if array.ndim > MAX_NDIM:
        raise ValueError("ndarray has too many dimensions")
    out.append(Tag.ARRAY)
    out += struct.pack("<BB", code, array.ndim)
    out += struct.pack(f"<{array.ndim}Q", *array.shape)
    out += np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()


def _encode_dict(mapping: Mapping[object, object], out: bytearray, depth: int) -> None:
    keys = list(mapping.keys())
    if not all(isinstance(k, str) for k in keys):
        raise TypeError("field names must be str")
    out.append(Tag.DICT)
    out += struct.pack("<I", len(keys))
    for key in sorted(keys):  # type: ignore[type-var]
        raw = key.encode("utf-8")  # type: ignore[attr-defined]
        if not raw or len(raw) > MAX_KEY_BYTES:
            raise ValueError("field name empty or too long")
        out += struct.pack("<H", len(raw)) + raw
        _encode_value(mapping[key], out, depth + 1)


class _Malformed(Exception):
    """Internal: a decode failure with its reason; turned into an opaque DecodeError at the boundary."""


_U32 = struct.Struct("<I")
_T_NONE, _T_FALSE, _T_TRUE, _T_INT, _T_FLOAT = (
    Tag.NONE.value,
    Tag.FALSE.value,
    Tag.TRUE.value,
    Tag.INT.value,
    Tag.FLOAT.value,
)
_T_STR, _T_BYTES, _T_ARRAY, _T_LIST, _T_DICT = (
    Tag.STR.value,
    Tag.BYTES.value,
    Tag.ARRAY.value,
    Tag.LIST.value,
    Tag.DICT.value,
)


class _Reader:
    """Cursor over the input that refuses to read past the end or past the item budget."""

    def __init__(self, data: bytes | memoryview, limits: FieldLimits) -> None:
        self.view = memoryview(data)
        self.pos = 0
        self.items = 0
        self.arrays = 0
        self.limits = limits

    def take(self, size: int) -> memoryview:
        """The next `size` bytes, refusing before any copy if fewer remain."""
        if size < 0 or size > len(self.view) - self.pos:
            raise _Malformed("length exceeds remaining bytes")
        chunk = self.view[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str) -> tuple[int, ...]:
        """Read a fixed-size struct."""
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def byte(self) -> int:
        """The next byte (a tag)."""
        if self.pos >= len(self.view):
            raise _Malformed("length exceeds remaining bytes")
        self.pos += 1
        return int(self.view[self.pos - 1])

    def u32(self) -> int:
        """The next little-endian u32 (a length or count)."""
        if self.pos + 4 > len(self.view):
            raise _Malformed("length exceeds remaining bytes")
        (value,) = _U32.unpack_from(self.view, self.pos)
        self.pos += 4
        return int(value)

    def count(self) -> None:
        """Charge one decoded value against the item budget."""
        self.items += 1
        if self.items > self.limits.max_items:
            raise _Malformed("too many items")

    def check_count(self, count: int) -> None:
        """Refuse a list/dict count that cannot fit the remaining bytes or the item budget."""
        if count > len(self.view) - self.pos:  # every value takes at least one byte
            raise _Malformed("count exceeds remaining bytes")
        if count > self.limits.max_items - self.items:
            raise _Malformed("count exceeds the item budget")


def decode_fields(
    data: bytes | memoryview, *, max_bytes: int = DEFAULT_MAX_BYTES, limits: FieldLimits = DEFAULT_LIMITS
) -> dict[str, FieldValue]:
    """Decode bytes produced by `encode_fields`; the exact inverse on canonical input.

    Any malformed, non-canonical, truncated or over-limit input (`max_bytes` and every bound of `limits`)
    and any trailing byte raise `DecodeError`, and nothing else. Arrays come back as writable, native
    little-endian ndarrays of the encoded dtype and shape.
    """
    try:
        if len(data) > min(max_bytes, limits.max_bytes):
            raise _Malformed("body over max_bytes")
        reader = _Reader(data if isinstance(data, memoryview) else bytes(data), limits)
        (tag,) = reader.unpack("<B")
        if tag != Tag.DICT:
            raise _Malformed("top level is not a mapping")
        reader.count()
        result = _decode_dict(reader, depth=0)
        if reader.pos != len(reader.view):
            raise _Malformed("trailing bytes")
        return result
    except (_Malformed, struct.error, UnicodeDecodeError, ValueError, OverflowError) as exc:
        logger.debug("field decode failed: %s", exc)
        raise DecodeError() from None


def _decode_value(reader: _Reader, depth: int) -> FieldValue:
    if depth > reader.limits.max_depth:
        raise _Malformed("nesting too deep")
    reader.count()
    tag = reader.byte()
    if tag == _T_LIST:
        count = reader.u32()
        reader.check_count(count)
        return [_decode_value(reader, depth + 1) for _ in range(count)]
    if tag == _T_STR or tag == _T_BYTES:
        raw = bytes(reader.take(reader.u32()))
        return raw.decode("utf-8", errors="strict") if tag == _T_STR else raw
    if tag == _T_INT:
        return _decode_int(reader)
    if tag == _T_DICT:
        return _decode_dict(reader, depth)
    if tag == _T_NONE:
        return None
    if tag == _T_FALSE or tag == _T_TRUE:
        return tag == _T_TRUE
    if tag == _T_FLOAT:
        return float(reader.unpack("<d")[0])
    if tag == _T_ARRAY:
        return _decode_array(reader)
    raise _Malformed(f"unknown tag {tag}")


def _decode_int(reader: _Reader) -> int:
    (length,) = reader.unpack("<H")
    if length == 0 or length > MAX_INT_BYTES:
        raise _Malformed("integer length out of range")
    value = int.from_bytes(reader.take(length), "little", signed=True)
    if _int_length(value) != length:
        raise _Malformed("non-minimal integer")
    return value


def _decode_array(reader: _Reader) -> np.ndarray:
    reader.arrays += 1
    if reader.arrays > reader.limits.max_arrays:
        raise _Malformed("too many arrays")
    code_raw, ndim = reader.unpack("<BB")
    if code_raw not in DtypeCode._value2member_map_ or ndim > MAX_NDIM:
        raise _Malformed("bad array dtype or ndim")
    dtype = _DTYPES[DtypeCode(code_raw)]
    shape = reader.unpack(f"<{ndim}Q")
    # math.prod over Python ints cannot overflow; compare with the remaining bytes before allocating.
    data_bytes = math.prod(shape) * dtype.itemsize
    raw = reader.take(data_bytes)
    array = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=True)
    return array.reshape(shape)


def _decode_dict(reader: _Reader, depth: int) -> dict[str, FieldValue]:
    count = reader.u32()
    reader.check_count(count)
    result: dict[str, FieldValue] = {}
    previous: str | None = None
    for _ in range(count):
        (key_length,) = reader.unpack("<H")
        if key_length == 0 or key_length > MAX_KEY_BYTES:
            raise _Malformed("bad key length")
        key = bytes(reader.take(key_length)).decode("utf-8", errors="strict")
        if previous is not None and key <= previous:
            raise _Malformed("keys not strictly sorted")
        previous = key
        result[key] = _decode_value(reader, depth + 1)
    return result
