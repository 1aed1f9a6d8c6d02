"""Public-seed pseudo-random streams for the codec (index set, rotation signs).

ChaCha20 keyed by the full 32-byte seed, with a 12-byte label as nonce for domain separation, so the index
set and the sign flips of one seed are independent streams. Never numpy's RNG: every device and the gateway
must derive the same values on every platform, and seeds are never folded.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

SEED_BYTES = 32
LABEL_BYTES = 12


def keystream(seed: bytes, label: bytes, n_bytes: int) -> bytes:
    """`n_bytes` of ChaCha20 keystream under key `seed` (32 bytes), nonce = 0 counter || `label` (<= 12)."""
    if len(seed) != SEED_BYTES:
        raise ValueError("seed must be 32 bytes")
    if len(label) > LABEL_BYTES or n_bytes < 0:
        raise ValueError("label must be at most 12 bytes and n_bytes >= 0")
    nonce = b"\x00" * 4 + label.ljust(LABEL_BYTES, b"\x00")
    encryptor = Cipher(algorithms.ChaCha20(seed, nonce), mode=None).encryptor()
    return encryptor.update(b"\x00" * n_bytes)


def random_uint64(seed: bytes, label: bytes, count: int) -> np.ndarray:
    """`count` uniform uint64 values from the keystream (little-endian words)."""
    return np.frombuffer(keystream(seed, label, 8 * count), dtype="<u8").astype(np.uint64)


def random_signs(seed: bytes, label: bytes, count: int) -> np.ndarray:
    """`count` independent uniform signs in {-1.0, +1.0} (float64), one keystream bit each."""
    raw = np.frombuffer(keystream(seed, label, (count + 7) // 8), dtype=np.uint8)
    bits = np.unpackbits(raw, bitorder="little")[:count]
    return 1.0 - 2.0 * bits.astype(np.float64)
