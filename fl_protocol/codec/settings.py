"""Codec settings of one round (docs/update-codec.md): what every device and the gateway must agree on.

The settings travel inside the signed round task; the seeds are public per round (they fix the shared index
set and rotation), but are still kept out of `repr` and logs by habit. On the wire every field keeps its
name except `keep_fraction`, which travels under its original key `sparsity_fraction` (`WIRE_KEYS`;
docs/update-codec.md, "Settings and their wire keys").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from fl_protocol.errors import ConfigError

SEED_BYTES = 32
MIN_RING_BITS = 8
MAX_RING_BITS = 32  # ring values live in np.uint32 arrays
MIN_QUANT_BITS = 2
#: Field name -> wire key, for the fields whose wire key is not their name. `keep_fraction` was first
#: called `sparsity_fraction` (it is the fraction kept); deployed nodes decode tasks by the old key.
WIRE_KEYS: dict[str, str] = {"keep_fraction": "sparsity_fraction"}
# ring_bits = 0 in a cloud, simulator or demo configuration: "the smallest ring that holds the sum" (plus
# the DP noise), resolved from `required_ring_bits` once the cohort bound and the noise are known
# (aggregator_gateway/cloud/ring.py, smallest_ring_bits); never sent on the wire: tasks carry 8..32
AUTO_RING_BITS = 0


@dataclass(frozen=True, kw_only=True)
class CodecSettings:
    """Parameters of the update pipeline.

    clip_norm: L2 bound C of the (residual-corrected) update.
    keep_fraction: f in (0, 1], the fraction of coordinates kept: k = max(1, round(f * d)) (1 = dense).
        Wire key `sparsity_fraction` (`WIRE_KEYS`).
    index_seed: 32-byte public seed of the shared random-k index set S.
    rotate: apply the randomized Hadamard rotation to x_S before quantizing.
    rotation_seed: 32-byte public seed of the rotation's sign flips.
    quant_bits: q; quantized values lie in [-(2^(q-1) - 1), 2^(q-1) - 1].
    ring_bits: b in 8..32; values are summed in Z_{2^b}. Must leave room for the cohort sum and the noise,
        see `required_ring_bits`.
    scale: multiplier applied before rounding (see `default_scale`).
    error_feedback: keep the off-S mass as a residual for the next round.
    """

    clip_norm: float
    keep_fraction: float
    index_seed: bytes = field(repr=False)
    rotate: bool
    rotation_seed: bytes = field(repr=False)
    quant_bits: int
    ring_bits: int
    scale: float
    error_feedback: bool

    def __post_init__(self) -> None:
        for name in ("clip_norm", "scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number")
            if value <= 0:
                raise ConfigError(f"{name} must be > 0")
            object.__setattr__(self, name, float(value))
        f = self.keep_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f <= 1.0:
            raise ConfigError("keep_fraction must be in (0, 1]")
        object.__setattr__(self, "keep_fraction", float(f))
        for name in ("index_seed", "rotation_seed"):
            if not isinstance(getattr(self, name), bytes) or len(getattr(self, name)) != SEED_BYTES:
                raise ConfigError(f"{name} must be {SEED_BYTES} bytes")
        for name in ("rotate", "error_feedback"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be a bool")
        b, q = self.ring_bits, self.quant_bits
        if isinstance(b, bool) or not isinstance(b, int) or not MIN_RING_BITS <= b <= MAX_RING_BITS:
            raise ConfigError(f"ring_bits must be an int in [{MIN_RING_BITS}, {MAX_RING_BITS}]")
        if isinstance(q, bool) or not isinstance(q, int) or not MIN_QUANT_BITS <= q <= b:
            raise ConfigError(f"quant_bits must be an int in [{MIN_QUANT_BITS}, ring_bits]")

    @property
    def max_quantized(self) -> int:
        """Largest magnitude of a quantized coordinate: 2^(q-1) - 1 (the range is symmetric)."""
        return (1 << (self.quant_bits - 1)) - 1

    def to_fields(self) -> dict[str, Any]:
        """Field mapping for the wire (fl_protocol.wire.fields), keyed by wire key (`WIRE_KEYS`); the
        inverse of `from_fields`."""
        return {WIRE_KEYS.get(f.name, f.name): getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_fields(cls, values: dict[str, Any]) -> CodecSettings:
        """Rebuild from `to_fields` output; unknown or missing keys and wrong types are a ConfigError."""
        by_key = {WIRE_KEYS.get(f.name, f.name): f.name for f in fields(cls)}
        if set(values) != set(by_key):
            raise ConfigError("codec settings keys differ from the format")
        return cls(**{by_key[key]: value for key, value in values.items()})


def sparse_count(dimension: int, keep_fraction: float) -> int:
    """k = max(1, round(f * d)), capped at d: how many coordinates the shared index set keeps."""
    if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
        raise ValueError("dimension must be a positive int")
    return min(dimension, max(1, round(keep_fraction * dimension)))


def required_ring_bits(quant_bits: int, max_clients: int, noise_headroom_bits: int) -> int:
    """Smallest ring width b >= q + ceil(log2(max_clients)) + noise_headroom_bits (docs/update-codec.md).

    The sum of n values in [-(2^(q-1)-1), 2^(q-1)-1] lies in (-n*2^(q-1), n*2^(q-1)), which a centred
    representation in Z_{2^b} holds without wrapping when b >= q + ceil(log2 n); the integer DP noise needs
    `noise_headroom_bits` more (the DP engineer derives them from the noise tail bound).
    """
    if quant_bits < 1 or max_clients < 1 or noise_headroom_bits < 0:
        raise ConfigError("quant_bits >= 1, max_clients >= 1 and noise_headroom_bits >= 0 are required")
    return quant_bits + math.ceil(math.log2(max_clients)) + noise_headroom_bits


def check_ring_bits(settings: CodecSettings, max_clients: int, noise_headroom_bits: int) -> None:
    """Raise ConfigError if `settings.ring_bits` cannot hold the cohort sum plus noise without wrapping."""
    needed = required_ring_bits(settings.quant_bits, max_clients, noise_headroom_bits)
    if settings.ring_bits < needed:
        raise ConfigError(
            f"ring_bits={settings.ring_bits} < {needed} needed for quant_bits={settings.quant_bits}, "
            f"{max_clients} clients and {noise_headroom_bits} noise headroom bits"
        )


def default_scale(
    clip_norm: float, quant_bits: int, k: int, *, rotate: bool, clamp_probability: float = 1e-6
) -> float:
    """A quantization scale such that a vector of L2 norm <= clip_norm rarely (or never) clamps.

    Without rotation one coordinate can carry the whole norm, so scale = qmax / C never clamps.
    With the randomized Hadamard rotation (fl_protocol.codec.rotate) every output coordinate is a signed sum
    over a block of at least p = 2^floor(log2 k) inputs with random signs, hence sub-Gaussian:
    P(|y_i| > t) <= 2 exp(-p t^2 / (2 C^2)) (Hoeffding). A union bound over k coordinates gives
    t = C sqrt(2 ln(2k / clamp_probability) / p), and scale = qmax / t clamps with probability at most
    `clamp_probability` per vector (over the rotation's signs).
    """
    if clip_norm <= 0 or k < 1 or not 0 < clamp_probability < 1:
        raise ConfigError("clip_norm > 0, k >= 1 and clamp_probability in (0, 1) are required")
    max_quantized = (1 << (quant_bits - 1)) - 1
    if not rotate:
        return max_quantized / clip_norm
    block = 1 << (k.bit_length() - 1)
    bound = clip_norm * math.sqrt(2.0 * math.log(2.0 * k / clamp_probability) / block)
    return max_quantized / min(bound, clip_norm)
