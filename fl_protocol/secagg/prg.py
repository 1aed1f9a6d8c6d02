"""Mask expansion: the full 256-bit seed keys AES-256-CTR; the keystream, read as little-endian uint32,
is the mask. No folding of the seed, no numpy RNG.

Keystream bytes are written straight into a preallocated numpy buffer (`update_into` on a fixed zero
chunk), so expansion costs one pass of AES plus a view. Reduction mod 2^ring_bits is a bitmask; callers
that add many masks can skip it and reduce once at the end (x mod 2^b is a ring homomorphism of Z/2^32).
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 32
MIN_RING_BITS = 8
MAX_RING_BITS = 32
_CHUNK_BYTES = 1 << 18  # 256 KiB: stays in L2 cache, close to the best AES-CTR rate measured
_ZERO_CHUNK = bytes(_CHUNK_BYTES)
_NONCE = bytes(16)  # each seed keys exactly one mask, so a fixed counter start is safe


def ring_mask(ring_bits: int) -> np.uint32:
    """Bitmask selecting the low `ring_bits` bits (8..32)."""
    check_ring_bits(ring_bits)
    return np.uint32((1 << ring_bits) - 1)


def check_ring_bits(ring_bits: int) -> None:
    """Raise ValueError unless 8 <= ring_bits <= 32."""
    if not MIN_RING_BITS <= ring_bits <= MAX_RING_BITS:
        raise ValueError(f"ring_bits must be in [{MIN_RING_BITS}, {MAX_RING_BITS}], got {ring_bits}")


class MaskExpander:
    """Reusable scratch buffer for expanding masks of one dimension (avoids per-mask allocation)."""

    def __init__(self, dimension: int) -> None:
        if dimension < 0:
            raise ValueError("dimension must be >= 0")
        self.dimension = dimension
        self._bytes = np.empty(4 * dimension + 16, dtype=np.uint8)  # +16: update_into needs slack
        self._words = self._bytes[: 4 * dimension].view("<u4")
        self._out = memoryview(self._bytes)  # type: ignore[arg-type]

    def keystream(self, seed: bytes) -> np.ndarray:
        """Return the unreduced 32-bit keystream words for `seed` (a view into the scratch buffer)."""
        if len(seed) != SEED_BYTES:
            raise ValueError("mask seed must be 32 bytes")
        encryptor = Cipher(algorithms.AES(seed), modes.CTR(_NONCE)).encryptor()
        total = 4 * self.dimension
        zero = memoryview(_ZERO_CHUNK)
        for offset in range(0, total, _CHUNK_BYTES):
            size = min(_CHUNK_BYTES, total - offset)
            encryptor.update_into(zero[:size], self._out[offset : offset + size + 15])
        return self._words

    def add_into(self, accumulator: np.ndarray, seed: bytes, *, subtract: bool = False) -> None:
        """accumulator += (or -=) keystream(seed), uint32 wrapping, in place, not reduced."""
        if accumulator.shape != (self.dimension,) or accumulator.dtype != np.uint32:
            raise ValueError("accumulator must be a uint32 vector of the expander's dimension")
        words = self.keystream(seed)
        if subtract:
            np.subtract(accumulator, words, out=accumulator)
        else:
            np.add(accumulator, words, out=accumulator)


def expand_mask(seed: bytes, dimension: int, ring_bits: int) -> np.ndarray:
    """Expand a 32-byte seed into `dimension` mask values in [0, 2^ring_bits) (a fresh uint32 array)."""
    mask = ring_mask(ring_bits)
    words = MaskExpander(dimension).keystream(seed)
    out = words.astype(np.uint32, copy=True)
    np.bitwise_and(out, mask, out=out)
    return out
