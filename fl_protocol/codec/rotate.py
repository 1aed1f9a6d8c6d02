"""Randomized Hadamard rotation of x_S (docs/update-codec.md step 4): spreads energy, so fewer clamps.

R = H_p D: random sign flips D (from the public rotation seed, ChaCha20) followed by the orthonormal
Walsh-Hadamard transform H_p = H / sqrt(p), computed in O(p log p) with vectorised numpy butterflies.
R is orthogonal, so it preserves the L2 norm; its exact inverse is D H_p (H_p is symmetric, involutory).

Length: the uplink carries exactly k values, so padding to p = 2^ceil(log2 k) would cost up to 2x the bytes
(docs/update-codec.md). For k that is not a power of two we therefore pad nothing and rotate two overlapping
power-of-two blocks instead: first the leading p = 2^floor(log2 k) coordinates, then the trailing p. Both
steps are orthogonal on R^k and every coordinate ends up mixed over a block of size p >= k/2, which is what
`default_scale`'s tail bound uses. For k a power of two it is the plain single-block transform.
"""

from __future__ import annotations

import numpy as np

from fl_protocol.codec.prg import random_signs

_SIGN_LABELS = (b"fedlora-rot1", b"fedlora-rot2")


def walsh_hadamard(values: np.ndarray) -> np.ndarray:
    """Orthonormal fast Walsh-Hadamard transform of a power-of-two-length vector (float64 copy)."""
    n = values.shape[0]
    if n < 1 or n & (n - 1):
        raise ValueError("length must be a power of two")
    y = np.array(values, dtype=np.float64, copy=True)
    half = 1
    while half < n:
        pairs = y.reshape(-1, 2, half)  # (blocks, 2, half): each block's two halves
        y = np.stack((pairs[:, 0] + pairs[:, 1], pairs[:, 0] - pairs[:, 1]), axis=1).reshape(n)
        half *= 2
    return y / np.sqrt(n)


def _blocks(length: int) -> list[tuple[slice, bytes]]:
    """The power-of-two blocks of a length-`length` vector, each with the label of its sign stream."""
    block = 1 << (length.bit_length() - 1)
    if block == length:
        return [(slice(0, length), _SIGN_LABELS[0])]
    return [(slice(0, block), _SIGN_LABELS[0]), (slice(length - block, length), _SIGN_LABELS[1])]


def rotate(values: np.ndarray, seed: bytes) -> np.ndarray:
    """Apply R (see module docstring) to a 1-D vector; same length, same L2 norm, float64."""
    y = np.array(values, dtype=np.float64, copy=True)
    if y.ndim != 1 or y.shape[0] < 1:
        raise ValueError("rotate expects a non-empty 1-D vector")
    for block, label in _blocks(y.shape[0]):
        signs = random_signs(seed, label, block.stop - block.start)
        y[block] = walsh_hadamard(y[block] * signs)
    return y


def unrotate(values: np.ndarray, seed: bytes) -> np.ndarray:
    """Exact inverse of `rotate` (up to float rounding): undo the blocks in reverse order."""
    y = np.array(values, dtype=np.float64, copy=True)
    if y.ndim != 1 or y.shape[0] < 1:
        raise ValueError("unrotate expects a non-empty 1-D vector")
    for block, label in reversed(_blocks(y.shape[0])):
        signs = random_signs(seed, label, block.stop - block.start)
        y[block] = walsh_hadamard(y[block]) * signs
    return y
