"""Bit-packing of ring values at exactly b bits each (docs/update-codec.md, "Packing").

n values of b bits take ceil(n b / 8) bytes. Value i occupies bits [i b, (i+1) b) of the little-endian
bit stream (bit j of the stream is bit j % 8 of byte j // 8). Unused high bits of the last byte are zero;
the unpacker requires exactly that length and zero padding, so every value vector has one encoding.

`pack_bits` / `unpack_bits` take ring widths (8..32 bits, the masked uplink); `pack_uint` / `unpack_uint`
are the same packing for any width 1..32 (the downlink's 2..8-bit values, fl_protocol/codec/downlink.py).
"""

from __future__ import annotations

import logging

import numpy as np

from fl_protocol.codec.settings import MAX_RING_BITS, MIN_RING_BITS
from fl_protocol.errors import DecodeError

logger = logging.getLogger(__name__)


def packed_bytes(count: int, ring_bits: int) -> int:
    """Size in bytes of `count` values packed at `ring_bits` bits."""
    return (count * ring_bits + 7) // 8


MAX_PACK_BITS = 32  # values live in np.uint32 arrays


def pack_bits(values: np.ndarray, ring_bits: int) -> bytes:
    """Pack a 1-D uint32 array whose entries are < 2^ring_bits; ValueError otherwise."""
    if not MIN_RING_BITS <= ring_bits <= MAX_RING_BITS:
        raise ValueError("ring_bits out of range")
    return pack_uint(values, ring_bits)


def unpack_bits(data: bytes, count: int, ring_bits: int) -> np.ndarray:
    """Inverse of `pack_bits`. Wrong length or non-zero padding bits raise DecodeError."""
    if not MIN_RING_BITS <= ring_bits <= MAX_RING_BITS or count < 0:
        raise ValueError("ring_bits out of range or negative count")
    return unpack_uint(data, count, ring_bits)


def pack_uint(values: np.ndarray, bits: int) -> bytes:
    """Pack a 1-D uint32 array whose entries are < 2^bits, bits in 1..32, at exactly `bits` bits each
    (the layout of the module docstring); ValueError otherwise."""
    if not 1 <= bits <= MAX_PACK_BITS:
        raise ValueError("bits out of range")
    v = np.asarray(values)
    if v.ndim != 1 or v.dtype != np.uint32:
        raise ValueError("pack_bits expects a 1-D uint32 array")
    if bits < 32 and v.size and int(v.max()) >> bits:
        raise ValueError("value does not fit in ring_bits")
    if bits % 8 == 0:  # fast path: keep the low bytes of each little-endian word
        return v.astype("<u4").view(np.uint8).reshape(-1, 4)[:, : bits // 8].tobytes()
    shifts = np.arange(bits, dtype=np.uint32)
    bit_matrix = ((v[:, None] >> shifts) & np.uint32(1)).astype(np.uint8)  # (n, b), least significant first
    return np.packbits(bit_matrix.reshape(-1), bitorder="little").tobytes()


def unpack_uint(data: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of `pack_uint`: `count` uint32 values of `bits` bits (1..32). Wrong length or non-zero
    padding bits raise DecodeError; a bad `bits` or negative `count` is a ValueError (caller's bug)."""
    if not 1 <= bits <= MAX_PACK_BITS or count < 0:
        raise ValueError("bits out of range or negative count")
    if len(data) != packed_bytes(count, bits):
        logger.debug("packed length %d != expected %d", len(data), packed_bytes(count, bits))
        raise DecodeError()
    raw = np.frombuffer(bytes(data), dtype=np.uint8)
    if bits % 8 == 0:
        words = np.zeros((count, 4), dtype=np.uint8)
        words[:, : bits // 8] = raw.reshape(count, bits // 8)  # (n, b/8) low bytes
        return words.view("<u4").reshape(count).astype(np.uint32)
    bit_stream = np.unpackbits(raw, bitorder="little")
    if bit_stream[count * bits :].any():
        logger.debug("non-zero padding bits in packed data")
        raise DecodeError()
    bit_matrix = bit_stream[: count * bits].reshape(count, bits).astype(np.uint32)  # (n, b)
    return (bit_matrix << np.arange(bits, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)
