"""The compressed downlink (docs/update-codec.md, "Downlink"): a global model version travels as a
quantized delta from the version before it.

Quantization: the float delta (shape (d,)) is cut into chunks of `chunk` values (the last one may be
shorter). Chunk j gets one float32 absmax scale s_j = fl32(max |δ_i| / qmax), qmax = 2^(bits−1) − 1, and
every value the signed integer q_i = clip(rint(δ_i / s_j), −qmax, qmax) (round to nearest, ties to even:
deterministic), so |δ_i − s_j q_i| ≤ s_j / 2. An all-zero chunk has s_j = 0 and q_i = 0.

Reconstruction, bit-exact wherever IEEE 754 binary32 arithmetic is (round to nearest even, subnormals
kept), because every step is one correctly rounded float32 operation in a fixed order, each a separate
numpy ufunc (no fused multiply-add, no float64 intermediate):

    1. q32_i   = float32(q_i)                  exact (|q_i| ≤ 127)
    2. step_i  = fl32(s_{i // chunk} × q32_i)  np.multiply on float32 arrays
    3. new_i   = fl32(base_i + step_i)         np.add on float32 arrays

The cloud publishes exactly this reconstruction as the new version, and the device computes it from the
same base, scales and integers, so the device's vector hashes to the sha256 the task carries. A platform
that rounded differently would fail that check and fetch the full model (it never trains on a mismatch).

On the wire the integers are offset to u_i = q_i + qmax in [0, 2 qmax], bit-packed at `bits` bits
(`pack_uint`) and zstd-compressed (`compress_bytes`); the decoder refuses any u_i > 2 qmax.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from fl_protocol.codec.compress import compress_bytes, decompress_bytes
from fl_protocol.codec.pack import pack_uint, packed_bytes, unpack_uint
from fl_protocol.errors import DecodeError

logger = logging.getLogger(__name__)

MIN_DOWNLINK_BITS = 2
MAX_DOWNLINK_BITS = 8
DEFAULT_DOWNLINK_BITS = 8
DEFAULT_DOWNLINK_CHUNK = 256
MAX_DOWNLINK_CHUNK = 1 << 20
_TINY = np.float32(np.finfo(np.float32).smallest_subnormal)


def check_downlink_bits(bits: int) -> int:
    """`bits` if it is an int in [2, 8], else ValueError."""
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise ValueError("downlink bits must be an int")
    if not MIN_DOWNLINK_BITS <= bits <= MAX_DOWNLINK_BITS:
        raise ValueError(f"downlink bits must be an int in [{MIN_DOWNLINK_BITS}, {MAX_DOWNLINK_BITS}]")
    return bits


def chunk_count(dimension: int, chunk: int) -> int:
    """Number of chunks (and scales) of a d-dimensional delta: ceil(d / chunk)."""
    return -(-dimension // chunk)


@dataclass(frozen=True, eq=False)
class QuantizedDelta:
    """A quantized delta: `scales` float32, shape (ceil(d / chunk),), each ≥ 0; `values` int8, shape (d,),
    in [−qmax, qmax]. Built by `quantize_delta` or decoded from the wire (`unpack_values`)."""

    bits: int
    chunk: int
    scales: np.ndarray
    values: np.ndarray

    @property
    def dimension(self) -> int:
        """d, the length of the vector the delta applies to."""
        return int(self.values.shape[0])

    @property
    def max_quantized(self) -> int:
        """qmax = 2^(bits−1) − 1."""
        return (1 << (self.bits - 1)) - 1

    def step(self) -> np.ndarray:
        """float32 (d,): fl32(s_{i // chunk} × q_i), steps 1-2 of the module docstring."""
        per_value = np.repeat(self.scales, self.chunk)[: self.dimension]
        return np.multiply(per_value, self.values.astype(np.float32), dtype=np.float32)


def quantize_delta(
    delta: np.ndarray, *, bits: int = DEFAULT_DOWNLINK_BITS, chunk: int = DEFAULT_DOWNLINK_CHUNK
) -> QuantizedDelta:
    """Quantize a 1-D float delta (any float dtype, evaluated in float64) as the module docstring says.

    Raises ValueError for a non-1-D or empty delta, NaN or ±inf in it, bits outside [2, 8], chunk outside
    [1, 2^20], or a chunk whose scale overflows float32.
    """
    check_downlink_bits(bits)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= MAX_DOWNLINK_CHUNK:
        raise ValueError(f"chunk must be an int in [1, {MAX_DOWNLINK_CHUNK}]")
    x = np.asarray(delta, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("the delta must be a non-empty 1-D vector")
    if not np.all(np.isfinite(x)):
        raise ValueError("non-finite value in the downlink delta")
    qmax = (1 << (bits - 1)) - 1
    count = chunk_count(x.size, chunk)
    padded = np.zeros(count * chunk, dtype=np.float64)
    padded[: x.size] = x
    absmax = np.abs(padded).reshape(count, chunk).max(axis=1)  # (chunks,)
    with np.errstate(over="ignore"):
        scales = (absmax / qmax).astype(np.float32)
    if not np.all(np.isfinite(scales)):
        raise ValueError("the downlink delta is too large for float32 scales")
    # A non-zero chunk whose scale underflows to 0 gets the smallest subnormal: |δ| / s then stays ≤ qmax.
    scales = np.where((absmax > 0) & (scales == 0), _TINY, scales).astype(np.float32)
    per_value = np.repeat(scales.astype(np.float64), chunk)[: x.size]
    safe = np.where(per_value > 0, per_value, 1.0)
    q = np.clip(np.rint(x / safe), -qmax, qmax)  # an all-zero chunk: 0 / 1 = 0
    return QuantizedDelta(bits, chunk, scales, q.astype(np.int8))


def apply_delta(base: np.ndarray, quantized: QuantizedDelta) -> np.ndarray:
    """new = base + step, float32 (d,), bit-exact (module docstring, step 3). ValueError if `base` is not a
    float32 vector of the delta's length."""
    b = np.asarray(base)
    if b.dtype != np.float32 or b.shape != (quantized.dimension,):
        raise ValueError(f"the base must be a float32 vector of length {quantized.dimension}")
    return np.add(b, quantized.step(), dtype=np.float32)


def pack_values(quantized: QuantizedDelta) -> bytes:
    """zstd of the integers offset by qmax and bit-packed at `bits` bits (the wire form)."""
    offset = (quantized.values.astype(np.int32) + quantized.max_quantized).astype(np.uint32)
    return compress_bytes(pack_uint(offset, quantized.bits))


def unpack_values(data: bytes, *, count: int, bits: int) -> np.ndarray:
    """Inverse of `pack_values`: int8 (count,) in [−qmax, qmax]. DecodeError on a bad zstd frame (strict:
    its declared size must be exactly ⌈count · bits / 8⌉), wrong length, non-zero padding or a value
    above 2 qmax."""
    check_downlink_bits(bits)
    expected = packed_bytes(count, bits)
    raw = decompress_bytes(data, max_output_bytes=expected)
    offset = unpack_uint(raw, count, bits)  # DecodeError if the length differs
    qmax = (1 << (bits - 1)) - 1
    if offset.size and int(offset.max()) > 2 * qmax:
        logger.debug("downlink value above 2 qmax")
        raise DecodeError()
    return (offset.astype(np.int32) - qmax).astype(np.int8)
