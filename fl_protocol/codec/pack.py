"""Bit-packing of ring values at exactly b bits each (docs/update-codec.md, "Packing").

n values of b bits take ceil(n b / 8) bytes. Value i occupies bits [i b, (i+1) b) of the little-endian
bit stream (bit j of the stream is bit j % 8 of byte j // 8). Unused high bits of the last byte are zero;
the unpacker requires exactly that length and zero padding, so every value vector has one encoding.
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


def pack_bits(values: np.ndarray, ring_bits: int) -> bytes:
    """Pack a 1-D uint32 array whose entries are < 2^ring_bits; ValueError otherwise."""
    if not MIN_RING_BITS <= ring_bits <= MAX_RING_BITS:
        raise ValueError("ring_bits out of range")
    v = np.asarray(values)
    if v.ndim != 1 or v.dtype != np.uint32:
        raise ValueError("pack_bits expects a 1-D uint32 array")
    if ring_bits < 32 and v.size and int(v.max()) >> ring_bits:
        raise ValueError("value does not fit in ring_bits")
    if ring_bits % 8 == 0:  # fast path: keep the low bytes of each little-endian word
        return v.astype("<u4").view(np.uint8).reshape(-1, 4)[:, : ring_bits // 8].tobytes()
    shifts = np.arange(ring_bits, dtype=np.uint32)
    bits = ((v[:, None] >> shifts) & np.uint32(1)).astype(np.uint8)  # (n, b), least significant first
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes, count: int, ring_bits: int) -> np.ndarray:
    """Inverse of `pack_bits`. Wrong length or non-zero padding bits raise DecodeError."""
    if not MIN_RING_BITS <= ring_bits <= MAX_RING_BITS or count < 0:
        raise ValueError("ring_bits out of range or negative count")
    if len(data) != packed_bytes(count, ring_bits):
        logger.debug("packed length %d != expected %d", len(data), packed_bytes(count, ring_bits))
        raise DecodeError()
    raw = np.frombuffer(bytes(data), dtype=np.uint8)
    if ring_bits % 8 == 0:
        words = np.zeros((count, 4), dtype=np.uint8)
        words[:, : ring_bits // 8] = raw.reshape(count, ring_bits // 8)  # (n, b/8) low bytes
        return words.view("<u4").reshape(count).astype(np.uint32)
    bits = np.unpackbits(raw, bitorder="little")
    if bits[count * ring_bits :].any():
        logger.debug("non-zero padding bits in packed data")
        raise DecodeError()
    bit_matrix = bits[: count * ring_bits].reshape(count, ring_bits).astype(np.uint32)  # (n, b)
    return (bit_matrix << np.arange(ring_bits, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)
