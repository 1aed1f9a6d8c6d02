"""Scale + unbiased stochastic rounding to q-bit signed integers, and the map into the ring Z_{2^b}.

Stochastic rounding: v = floor(s x) + Bernoulli(s x - floor(s x)), so E[v] = s x exactly (before clamping)
and |v - s x| < 1. Values are then clamped to the symmetric range [-(2^(q-1)-1), 2^(q-1)-1]; clamping is
the only source of bias and `default_scale` makes it rare. The random generator is injected: devices pass a
generator seeded from the OS CSPRNG, tests pass a fixed seed.

Ring map: a signed integer v becomes v mod 2^b in a uint32 array; the inverse centres, i.e. values
>= 2^(b-1) are read as v - 2^b. Sums of ring values are taken mod 2^b.
"""

from __future__ import annotations

import numpy as np

from fl_protocol.codec.settings import MAX_RING_BITS, MIN_RING_BITS


def stochastic_round(
    values: np.ndarray, *, scale: float, quant_bits: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Return (int64 array of clamped stochastic roundings of values * scale, number of clamped entries)."""
    scaled = np.asarray(values, dtype=np.float64) * scale
    if not np.all(np.isfinite(scaled)):
        raise ValueError("non-finite value in quantizer input")
    floor = np.floor(scaled)
    rounded = floor + (rng.random(scaled.shape) < (scaled - floor))
    limit = (1 << (quant_bits - 1)) - 1
    clamped_count = int(np.count_nonzero(np.abs(rounded) > limit))
    return np.clip(rounded, -limit, limit).astype(np.int64), clamped_count


def dequantize(values: np.ndarray, *, scale: float) -> np.ndarray:
    """Inverse de-scale: integer (sum of) quantized values -> float64 estimate of the (sum of) inputs."""
    return np.asarray(values, dtype=np.float64) / scale


def _check_ring_bits(ring_bits: int) -> None:
    if not MIN_RING_BITS <= ring_bits <= MAX_RING_BITS:
        raise ValueError(f"ring_bits must be in [{MIN_RING_BITS}, {MAX_RING_BITS}]")


def to_ring(values: np.ndarray, ring_bits: int) -> np.ndarray:
    """Signed int64 values -> uint32 residues mod 2^ring_bits (two's complement wrap)."""
    _check_ring_bits(ring_bits)
    mask = np.int64((1 << ring_bits) - 1)
    return (np.asarray(values, dtype=np.int64) & mask).astype(np.uint32)


def ring_sum(values: np.ndarray, ring_bits: int, axis: int = 0) -> np.ndarray:
    """Sum of uint32 ring vectors along `axis`, reduced mod 2^ring_bits (what unmasking yields)."""
    _check_ring_bits(ring_bits)
    total = np.asarray(values, dtype=np.uint64).sum(axis=axis, dtype=np.uint64)
    return (total & np.uint64((1 << ring_bits) - 1)).astype(np.uint32)


def from_ring(values: np.ndarray, ring_bits: int) -> np.ndarray:
    """uint32 residues mod 2^ring_bits -> centred int64 in [-2^(b-1), 2^(b-1))."""
    _check_ring_bits(ring_bits)
    v = np.asarray(values, dtype=np.int64) & ((1 << ring_bits) - 1)
    return np.where(v >= (1 << (ring_bits - 1)), v - (1 << ring_bits), v)
