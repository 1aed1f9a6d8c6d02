"""The privacy event of one round: what the cloud's accountant and every device's ledger charge.

Both sides call `round_privacy_event` with the round task's settings, so the device's ε for a tier is
exactly the cloud's for the same rounds (no sampling amplification is claimed on either side: devices
join rounds by availability, not by Poisson sampling, so the sample rate is 1).

- 'skellam': `SkellamEvent` with central variance μ = (z C s)² and the conditionally rounded update's
  sensitivities at the round's scale s and sparse length k ([AKL21]).
- 'gaussian': `DiscreteGaussianEvent` with per-device σ = z C s / sqrt(min_survivors), the same L2
  sensitivity and dimension k ([KLS21]).
- 'none': None (no noise: ε is unbounded).
"""

from __future__ import annotations

import math

from fl_protocol.dp.accountant import DiscreteGaussianEvent, PrivacyEvent, SkellamEvent
from fl_protocol.dp.mechanisms import (
    ROUNDING_BETA,
    rounded_l1_bound,
    rounded_l2_bound,
    skellam_central_variance,
)
from fl_protocol.errors import ConfigError

#: The sample rate every round is accounted with (see the module docstring).
ROUND_SAMPLE_RATE = 1.0


def round_privacy_event(
    *,
    mechanism: str,
    noise_multiplier: float,
    clip_norm: float,
    min_survivors: int,
    scale: float,
    sparse_length: int,
) -> PrivacyEvent | None:
    """The event one release of a round's noisy sum is charged as; None for mechanism 'none'.

    `scale` is the codec's quantization scale s (integer units per float unit) and `sparse_length` the
    number k of coordinates each device sends. Raises ConfigError for an unknown mechanism or a noisy
    mechanism with noise_multiplier <= 0.
    """
    if mechanism == "none":
        return None
    if mechanism not in ("skellam", "gaussian"):
        raise ConfigError(f"unknown DP mechanism {mechanism!r}")
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ConfigError(f"mechanism {mechanism!r} needs noise_multiplier > 0, got {noise_multiplier!r}")
    l2 = rounded_l2_bound(clip_norm=clip_norm, scale=scale, dim=sparse_length, beta=ROUNDING_BETA)
    central = skellam_central_variance(noise_multiplier=noise_multiplier, clip_norm=clip_norm, scale=scale)
    if mechanism == "skellam":
        l1 = rounded_l1_bound(l2_bound=l2, dim=sparse_length)
        return SkellamEvent(
            variance=central, l1_sensitivity=l1, l2_sensitivity=l2, sample_rate=ROUND_SAMPLE_RATE
        )
    return DiscreteGaussianEvent(
        local_stddev=math.sqrt(central / min_survivors),
        min_summands=int(min_survivors),
        l2_sensitivity=l2,
        dim=int(sparse_length),
    )


def noise_headroom_bits(*, central_stddev: float, tail_sigmas: float = 12.0) -> int:
    """Extra ring bits the summed noise needs: ceil(log2(tail_sigmas · σ + 1)) + 1 (sign), 0 without noise.

    The noise is added after the q-bit clamp and rides the modular sum; a ring too narrow for it would
    wrap (destroying the update, not the privacy). P(|N(0, σ²)| > 12σ) < 4e-33 per coordinate.
    """
    if not (math.isfinite(central_stddev) and central_stddev >= 0):
        raise ConfigError(f"central_stddev must be finite and >= 0, got {central_stddev!r}")
    if central_stddev == 0:
        return 0
    return math.ceil(math.log2(tail_sigmas * central_stddev + 1.0)) + 1
