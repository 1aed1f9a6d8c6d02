"""Turn a local update into the ring values to mask, with this device's share of the round's DP noise.

- 'skellam': the codec's integer hook adds a Skellam share of variance (z·C·s)² / min_survivors
  (`fl_protocol.dp.mechanisms.skellam_device_variance`) after stochastic rounding.
- 'gaussian': N(0, z²C² / min_survivors) per kept coordinate in float, after clipping, sparsification and
  rotation and before scaling and rounding (DESIGN.md §5 step 6). `encode_update` has no float-noise hook,
  so this path runs the same codec steps itself; a unit test pins it to `encode_update` at zero noise.
- 'none': no noise.

Randomness is injected: `rounding_rng` drives stochastic rounding, `noise_rng` the noise; production
passes two independent `secure_generator()`s (OS CSPRNG seeded).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from fl_protocol.codec.clip import l2_clip
from fl_protocol.codec.pipeline import EncodedUpdate, encode_update
from fl_protocol.codec.quantize import stochastic_round, to_ring
from fl_protocol.codec.rotate import rotate
from fl_protocol.codec.settings import sparse_count
from fl_protocol.codec.sparsify import gather, index_set, off_support
from fl_protocol.dp.mechanisms import (
    distributed_gaussian_share,
    skellam_device_variance,
    skellam_noise,
)
from fl_protocol.wire.messages import RoundTask

logger = logging.getLogger(__name__)


def encode_for_task(
    delta: np.ndarray,
    *,
    residual: np.ndarray | None,
    task: RoundTask,
    rounding_rng: np.random.Generator,
    noise_rng: np.random.Generator,
) -> EncodedUpdate:
    """Encode `delta` (θ_local − θ_global, float32 [d]) with the task's codec and DP settings."""
    settings, dp = task.codec, task.dp
    residual = residual if settings.error_feedback else None
    if dp.mechanism == "gaussian":
        std_share = dp.noise_multiplier * dp.clip_norm / np.sqrt(dp.min_survivors)
        logger.debug("gaussian noise share: std %.4g per coordinate", std_share)

        def float_noise(size: int) -> np.ndarray:
            return distributed_gaussian_share(
                size,
                noise_multiplier=dp.noise_multiplier,
                clip_norm=dp.clip_norm,
                min_survivors=dp.min_survivors,
                rng=noise_rng,
            )

        return encode_with_float_noise(
            delta, residual=residual, task=task, rng=rounding_rng, float_noise=float_noise
        )
    integer_noise = None
    if dp.mechanism == "skellam":
        variance = skellam_device_variance(
            noise_multiplier=dp.noise_multiplier,
            clip_norm=dp.clip_norm,
            scale=settings.scale,
            min_survivors=dp.min_survivors,
        )

        def integer_noise(size: int) -> np.ndarray:
            return skellam_noise(size, variance=variance, rng=noise_rng)

    return encode_update(
        delta, residual=residual, settings=settings, rng=rounding_rng, integer_noise=integer_noise
    )


def encode_with_float_noise(
    delta: np.ndarray,
    *,
    residual: np.ndarray | None,
    task: RoundTask,
    rng: np.random.Generator,
    float_noise: Callable[[int], np.ndarray],
) -> EncodedUpdate:
    """`encode_update`'s steps with float noise added to the kept (rotated) coordinates before rounding.

    `float_noise(k)` returns float64 noise of length k. Rotation is orthogonal, so isotropic Gaussian
    noise added after it is distributed as noise added before it.
    """
    settings = task.codec
    x = np.asarray(delta, dtype=np.float64)
    if x.ndim != 1 or x.shape[0] < 1:
        raise ValueError("delta must be a non-empty 1-D vector")
    if residual is not None:
        if residual.shape != x.shape:
            raise ValueError("residual shape differs from delta")
        x = x + residual
    clipped, input_norm = l2_clip(x, settings.clip_norm)
    indices = index_set(settings.index_seed, x.shape[0], sparse_count(x.shape[0], settings.sparsity_fraction))
    kept = gather(clipped, indices)
    new_residual = off_support(clipped, indices).astype(np.float32) if settings.error_feedback else None
    if settings.rotate:
        kept = rotate(kept, settings.rotation_seed)
    noise = np.asarray(float_noise(kept.shape[0]), dtype=np.float64)
    if noise.shape != kept.shape:
        raise ValueError("float_noise must return a vector of length k")
    quantized, clamped_count = stochastic_round(
        kept + noise, scale=settings.scale, quant_bits=settings.quant_bits, rng=rng
    )
    return EncodedUpdate(
        ring_values=to_ring(quantized, settings.ring_bits),
        residual=new_residual,
        input_norm=input_norm,
        clipped=input_norm > settings.clip_norm,
        clamped_count=clamped_count,
    )
