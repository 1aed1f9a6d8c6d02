"""The update pipeline of docs/update-codec.md: device-side `encode_update`, gateway-side `decode_sum`.

Device: residual add -> L2 clip -> shared random-k sparsify (residual keeps the off-S mass) -> optional
randomized Hadamard rotation -> scale + stochastic rounding + clamp -> optional integer DP noise (after the
clamp, so it is never clipped) -> ring map.
Masking and packing follow (secure aggregation, fl_protocol.codec.pack).
Gateway, on the unmasked sum mod 2^b: centre -> de-scale -> inverse rotation -> scatter into S. The result is
the SUM of the cohort's (noisy) clipped sparse updates; the caller divides by the count or weight sum.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from fl_protocol.codec.clip import l2_clip
from fl_protocol.codec.pack import packed_bytes
from fl_protocol.codec.quantize import dequantize, from_ring, stochastic_round, to_ring
from fl_protocol.codec.rotate import rotate, unrotate
from fl_protocol.codec.settings import WIRE_KEYS, CodecSettings, sparse_count
from fl_protocol.codec.sparsify import gather, index_set, off_support, scatter
from fl_protocol.errors import ConfigError, PrivacyError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedUpdate:
    """Output of `encode_update`.

    ring_values: uint32, length k, entries < 2^ring_bits: the vector to mask and pack.
    residual: float32 error-feedback residual for the next round (None when error_feedback is off).
    input_norm: L2 norm of delta + residual before clipping; clipped: whether clipping scaled it down.
    clamped_count: coordinates that hit the q-bit range (non-zero means a small bias this round).
    """

    ring_values: np.ndarray
    residual: np.ndarray | None
    input_norm: float
    clipped: bool
    clamped_count: int


CONDITIONAL_ROUNDING_ATTEMPTS = 100  # with β = e^-0.5 failing all 100 draws has probability ~1e-22


class UplinkSize(NamedTuple):
    """Bytes of one device's packed update versus the same vector sent dense in float32."""

    payload_bytes: int
    dense_fp32_bytes: int


def _weighted_input(
    delta: np.ndarray, residual: np.ndarray | None, settings: CodecSettings, weight: float | None
) -> np.ndarray:
    """`delta` (1-D, non-empty) as float64, times `weight`, plus the error-feedback `residual`.

    ValueError for an empty or non-1-D delta, a weight outside (0, 1], a residual with error feedback off
    or of another shape.
    """
    x = np.asarray(delta, dtype=np.float64)
    if x.ndim != 1 or x.shape[0] < 1:
        raise ValueError("delta must be a non-empty 1-D vector")
    if weight is not None:
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"weight must be in (0, 1], got {weight!r}")
        x = weight * x
    if residual is not None:
        if not settings.error_feedback:
            raise ValueError("a residual was passed but error_feedback is off")
        if residual.shape != x.shape:
            raise ValueError("residual shape differs from delta")
        x = x + residual
    return x


def encode_update(
    delta: np.ndarray,
    *,
    residual: np.ndarray | None,
    settings: CodecSettings,
    rng: np.random.Generator,
    integer_noise: Callable[[int], np.ndarray] | None = None,
    max_rounded_l2: float | None = None,
    weight: float | None = None,
) -> EncodedUpdate:
    """Run the device-side pipeline on a flat update `delta` (float32, length d).

    `rng` drives stochastic rounding only (inject a CSPRNG-seeded generator in production). `integer_noise(k)`
    returns the device's int64 DP noise share of length k (distributed Skellam or discrete Gaussian), added
    after rounding and the q-bit clamp and before the ring map: the clamp never touches the noise, which
    rides the modular sum intact (there is deliberately no hook to add noise before the clamp: clamping
    there removed most of the noise the accountant charged for). `max_rounded_l2` turns on conditional
    rounding (Agarwal, Kairouz, Liu 2021 §4): the rounding is redrawn until the integer vector's L2 norm is
    within the bound the accountant assumed, and PrivacyError is raised (nothing is released) if it never
    is; integer noise without this bound is refused (ValueError), since the accountant's sensitivity would
    not hold. `weight` (0 < w <= 1) sends (w·Δ, w): the update is scaled before clipping and w rides as one
    extra ring value after the k values (docs/update-codec.md, fairness/adaptive weights inside the secure
    sum). Non-finite input raises PrivacyError (from the clip step).
    """
    if integer_noise is not None and max_rounded_l2 is None:
        raise ValueError("integer DP noise needs max_rounded_l2 (the sensitivity the accountant assumes)")
    x = _weighted_input(delta, residual, settings, weight)
    clipped, input_norm = l2_clip(x, settings.clip_norm)
    indices = index_set(settings.index_seed, x.shape[0], sparse_count(x.shape[0], settings.keep_fraction))
    kept = gather(clipped, indices)
    new_residual = off_support(clipped, indices).astype(np.float32) if settings.error_feedback else None
    if settings.rotate:
        kept = rotate(kept, settings.rotation_seed)
    quantized, clamped_count = _round(kept, settings, rng, max_rounded_l2)
    if clamped_count:
        logger.debug("quantizer clamped %d of %d coordinates", clamped_count, kept.shape[0])
    if integer_noise is not None:
        noise = np.asarray(integer_noise(kept.shape[0]))
        if noise.shape != kept.shape or noise.dtype != np.int64:
            raise ValueError("integer_noise must return an int64 array of length k")
        quantized = quantized + noise
    if weight is not None:
        quantized = np.append(quantized, np.int64(round(weight * settings.max_quantized)))
    return EncodedUpdate(
        ring_values=to_ring(quantized, settings.ring_bits),
        residual=new_residual,
        input_norm=input_norm,
        clipped=input_norm > settings.clip_norm,
        clamped_count=clamped_count,
    )


def _round(
    kept: np.ndarray, settings: CodecSettings, rng: np.random.Generator, max_l2: float | None
) -> tuple[np.ndarray, int]:
    for _attempt in range(CONDITIONAL_ROUNDING_ATTEMPTS):
        quantized, clamped_count = stochastic_round(
            kept, scale=settings.scale, quant_bits=settings.quant_bits, rng=rng
        )
        if max_l2 is None or float(np.linalg.norm(quantized.astype(np.float64))) <= max_l2:
            return quantized, clamped_count
    raise PrivacyError(
        f"conditional rounding: no rounding within the L2 bound {max_l2:.4g} after "
        f"{CONDITIONAL_ROUNDING_ATTEMPTS} draws; refusing to release the update"
    )


def decode_sum(ring_sum: np.ndarray, *, count: int, settings: CodecSettings, dimension: int) -> np.ndarray:
    """Gateway side: unmasked sum mod 2^b of `count` encoded updates -> float64 sum of length `dimension`.

    Raises ConfigError if `ring_bits` cannot even hold `count` noiseless quantized values (it would wrap).
    """
    if count < 1:
        raise ValueError("count must be >= 1")
    if count * settings.max_quantized >= 1 << (settings.ring_bits - 1):
        raise ConfigError("ring_bits too small for this many summands")
    k = sparse_count(dimension, settings.keep_fraction)
    values = np.asarray(ring_sum)
    if values.shape != (k,) or values.dtype != np.uint32:
        raise ValueError("ring_sum must be a uint32 array of length k")
    kept = dequantize(from_ring(values, settings.ring_bits), scale=settings.scale)
    if settings.rotate:
        kept = unrotate(kept, settings.rotation_seed)
    return scatter(kept, index_set(settings.index_seed, dimension, k), dimension)


def encoded_length(dimension: int, settings: CodecSettings, *, weighted: bool = False) -> int:
    """Ring values a device sends for a d-dimensional update: k, plus one weight coordinate if weighted."""
    return sparse_count(dimension, settings.keep_fraction) + (1 if weighted else 0)


def decode_weighted_sum(
    ring_sum: np.ndarray, *, count: int, settings: CodecSettings, dimension: int
) -> tuple[np.ndarray, float]:
    """Gateway side for weighted updates: (float64 Σ w·Δ of length `dimension`, Σ w)."""
    values = np.asarray(ring_sum)
    k = sparse_count(dimension, settings.keep_fraction)
    if values.shape != (k + 1,) or values.dtype != np.uint32:
        raise ValueError("ring_sum must be a uint32 array of length k + 1")
    vector_sum = decode_sum(values[:k], count=count, settings=settings, dimension=dimension)
    weight_sum = float(from_ring(values[k:], settings.ring_bits)[0]) / settings.max_quantized
    return vector_sum, weight_sum


def uplink_payload_bytes(dimension: int, settings: CodecSettings, *, weighted: bool = False) -> UplinkSize:
    """Packed uplink size (k values, + the weight if weighted, at ring_bits bits) vs dense float32."""
    return UplinkSize(
        payload_bytes=packed_bytes(
            encoded_length(dimension, settings, weighted=weighted), settings.ring_bits
        ),
        dense_fp32_bytes=4 * dimension,
    )


def codec_chain(settings: CodecSettings) -> list[dict[str, object]]:
    """The steps applied to an uplink update, in order, with their public parameters (no seeds)."""
    steps: list[dict[str, object]] = [
        {"step": "residual_add", "enabled": settings.error_feedback},
        {"step": "l2_clip", "clip_norm": settings.clip_norm},
        # The chain is signed header text: it names the fraction kept by its wire key (WIRE_KEYS).
        {"step": "random_k", WIRE_KEYS["keep_fraction"]: settings.keep_fraction},
    ]
    if settings.rotate:
        steps.append({"step": "hadamard_rotation"})
    steps += [
        {"step": "stochastic_round", "scale": settings.scale, "quant_bits": settings.quant_bits},
        {"step": "ring", "ring_bits": settings.ring_bits},
        {"step": "bit_pack", "bits": settings.ring_bits},
    ]
    return steps


def codec_chain_text(settings: CodecSettings) -> str:
    """Compact, canonical one-line form of `codec_chain` for FrameHeader.codec_chain."""
    parts = []
    for step in codec_chain(settings):
        params = ",".join(f"{key}={value!r}" for key, value in sorted(step.items()) if key != "step")
        parts.append(f"{step['step']}({params})")
    return ">".join(parts)
