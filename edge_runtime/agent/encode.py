"""Turn a local update into the ring values to mask, with this device's share of the round's DP noise.

- 'skellam': the codec's integer hook adds a Skellam share of variance (z·C·s)² / min_survivors
  (`fl_protocol.dp.mechanisms.skellam_device_variance`) after stochastic rounding.
- 'gaussian': N(0, z²C² / min_survivors) per kept coordinate in float, after clipping, sparsification and
  rotation and before scaling and rounding (DESIGN.md §5 step 6), through the codec's float-noise hook.
- 'none': no noise.

Randomness is injected: `rounding_rng` drives stochastic rounding, `noise_rng` the noise; production
passes two independent `secure_generator()`s (OS CSPRNG seeded).
"""

from __future__ import annotations

import logging

import numpy as np

from fl_protocol.codec.pipeline import EncodedUpdate, encode_update
from fl_protocol.codec.settings import sparse_count
from fl_protocol.dp.mechanisms import (
    ROUNDING_BETA,
    distributed_gaussian_share,
    rounded_l2_bound,
    skellam_device_variance,
    skellam_noise,
)
from fl_protocol.errors import PrivacyError
from fl_protocol.wire.messages import RoundTask

logger = logging.getLogger(__name__)


def encode_for_task(
    delta: np.ndarray,
    *,
    residual: np.ndarray | None,
    task: RoundTask,
    rounding_rng: np.random.Generator,
    noise_rng: np.random.Generator,
    weight: float | None = None,
) -> EncodedUpdate:
    """Encode `delta` (θ_local − θ_global, float32 [d]) with the task's codec and DP settings."""
    settings, dp = task.codec, task.dp
    if weight is not None and dp.mechanism != "none":
        # the weight rides un-noised: weighted rounds refuse DP (docs/privacy.md, "Weighted rounds")
        raise PrivacyError("a weighted update cannot be sent in a DP round: its weight carries no noise")
    residual = residual if settings.error_feedback else None
    float_noise = None
    if dp.mechanism == "gaussian":
        logger.debug(
            "gaussian noise share: std %.4g per coordinate",
            dp.noise_multiplier * dp.clip_norm / np.sqrt(dp.min_survivors),
        )

        def float_noise(size: int) -> np.ndarray:
            return distributed_gaussian_share(
                size,
                noise_multiplier=dp.noise_multiplier,
                clip_norm=dp.clip_norm,
                min_survivors=dp.min_survivors,
                rng=noise_rng,
            )

    integer_noise = None
    max_rounded_l2 = None
    if dp.mechanism == "skellam":
        # The accountant assumes this bound on the rounded update's L2 norm (conditional rounding).
        max_rounded_l2 = rounded_l2_bound(
            clip_norm=dp.clip_norm,
            scale=settings.scale,
            dim=sparse_count(delta.shape[0], settings.sparsity_fraction),
            beta=ROUNDING_BETA,
        )
        variance = skellam_device_variance(
            noise_multiplier=dp.noise_multiplier,
            clip_norm=dp.clip_norm,
            scale=settings.scale,
            min_survivors=dp.min_survivors,
        )

        def integer_noise(size: int) -> np.ndarray:
            return skellam_noise(size, variance=variance, rng=noise_rng)

    return encode_update(
        delta,
        residual=residual,
        settings=settings,
        rng=rounding_rng,
        integer_noise=integer_noise,
        float_noise=float_noise,
        max_rounded_l2=max_rounded_l2,
        weight=weight,
    )
