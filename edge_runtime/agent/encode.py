"""Turn a local update into the ring values to mask, with this device's share of the round's DP noise.

Both noisy mechanisms add an integer share after clipping, conditional rounding and the q-bit clamp
(never before the clamp, which would eat the noise), through the codec's integer-noise hook:

- 'skellam': Skellam of variance (z·C·s)² / min_survivors (`fl_protocol.dp.mechanisms`, [AKL21]);
- 'gaussian': discrete Gaussian N_Z(0, (z·C·s)² / min_survivors) (distributed discrete Gaussian, [KLS21]);
- 'none': no noise.

The rounding bound is the L2 sensitivity that `fl_protocol.dp.rounds.round_privacy_event` charges, so the
mechanism the accountant and the ledger charge is the mechanism that runs. Randomness is injected:
`rounding_rng` drives stochastic rounding, `noise_rng` the noise; production passes two independent
`secure_generator()`s (OS CSPRNG seeded).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from fl_protocol.codec.pipeline import EncodedUpdate, encode_update
from fl_protocol.codec.settings import sparse_count
from fl_protocol.dp.mechanisms import (
    ROUNDING_BETA,
    discrete_gaussian_noise,
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
    integer_noise = None
    max_rounded_l2 = None
    if dp.mechanism in ("skellam", "gaussian"):
        max_rounded_l2 = rounded_l2_bound(
            clip_norm=dp.clip_norm,
            scale=settings.scale,
            dim=sparse_count(delta.shape[0], settings.keep_fraction),
            beta=ROUNDING_BETA,
        )
        variance = skellam_device_variance(
            noise_multiplier=dp.noise_multiplier,
            clip_norm=dp.clip_norm,
            scale=settings.scale,
            min_survivors=dp.min_survivors,
        )
        logger.debug(
            "%s noise share: std %.4g integer units per coordinate", dp.mechanism, math.sqrt(variance)
        )
        if dp.mechanism == "skellam":

            def integer_noise(size: int) -> np.ndarray:
                return skellam_noise(size, variance=variance, rng=noise_rng)

        else:

            def integer_noise(size: int) -> np.ndarray:
                return discrete_gaussian_noise(size, stddev=math.sqrt(variance), rng=noise_rng)

    return encode_update(
        delta,
        residual=residual,
        settings=settings,
        rng=rounding_rng,
        integer_noise=integer_noise,
        max_rounded_l2=max_rounded_l2,
        weight=weight,
    )
