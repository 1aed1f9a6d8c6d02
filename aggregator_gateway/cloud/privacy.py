"""The cloud's privacy bookkeeping: which noise multiplier the tasks carry, and ε after each round.

Noise: [privacy].noise_multiplier as given, or, with target_epsilon, the least noise that keeps ε ≤ target
over the planned `rounds` (fl_protocol.dp.calibrate; calibration never overshoots). Calibration assumes
sample rate 1 (no amplification), so the target holds whatever the actual participation turns out to be.
A failed round (no partial before its deadline) is not accounted. Limitation: a partial that arrives
after its round closed is ignored, yet it was released on the broker; the accountant does not count it.

Accounting, one event per completed round (a round with no partial released nothing to the cloud):
- gaussian: `RdpAccountant.step(noise_multiplier=z, sample_rate=q)`;
- skellam: `step_skellam` with the central variance (z C s)² and the rounded-update sensitivities of
  docs/privacy.md §2 at the round's scale s and sparse length k, sample rate q.

q = min(1, max(selected, survivors) / total_devices) — the larger of the counts the cloud saw, the
conservative choice — or 1 when total_devices is 0. Poisson amplification is only sound if devices really
join a round independently with that probability; when the cohort is picked otherwise, set
total_devices = 0 (q = 1), see docs/privacy.md §1.
"""

from __future__ import annotations

import json
import logging
import math

from aggregator_gateway.cloud.config import PrivacySection
from fl_protocol.dp import (
    ROUNDING_BETA,
    RdpAccountant,
    calibrate_noise_multiplier,
    calibrate_skellam_variance,
    rounded_l1_bound,
    rounded_l2_bound,
    skellam_central_variance,
)

logger = logging.getLogger(__name__)


def resolve_noise_multiplier(
    section: PrivacySection, *, rounds: int, scale: float, sparse_length: int
) -> float:
    """z for every task: as configured, calibrated from target_epsilon, or 0 for mechanism 'none'.

    Skellam is calibrated on its own RDP bound (central variance μ, then z = sqrt(μ) / (C s)), since at
    a finite scale it costs slightly more than the Gaussian with the same z.
    """
    if section.mechanism == "none":
        return 0.0
    if section.noise_multiplier is not None:
        return float(section.noise_multiplier)
    assert section.target_epsilon is not None  # PrivacySection guarantees exactly one
    if section.mechanism == "gaussian":
        z = calibrate_noise_multiplier(
            target_epsilon=section.target_epsilon, delta=section.delta, sample_rate=1.0, rounds=rounds
        )
    else:
        l2 = rounded_l2_bound(clip_norm=section.clip_norm, scale=scale, dim=sparse_length, beta=ROUNDING_BETA)
        variance = calibrate_skellam_variance(
            target_epsilon=section.target_epsilon,
            delta=section.delta,
            rounds=rounds,
            l1_sensitivity=rounded_l1_bound(l2_bound=l2, dim=sparse_length),
            l2_sensitivity=l2,
        )
        # round z up a hair so the device's (z C s)^2 is never below the calibrated variance
        z = math.sqrt(variance) / (section.clip_norm * scale) * (1.0 + 1e-9)
    logger.info(
        "calibrated noise_multiplier %.4g for ε=%g, δ=%g over %d rounds",
        z,
        section.target_epsilon,
        section.delta,
        rounds,
    )
    return z


def sample_rate(*, selected: int, survivors: int, total_devices: int) -> float:
    """Accountant sample rate q (see the module docstring)."""
    if total_devices <= 0:
        return 1.0
    return min(1.0, max(selected, survivors, 1) / total_devices)


class CloudAccountant:
    """Wraps RdpAccountant with the cloud's per-round event; persists as JSON."""

    def __init__(
        self, section: PrivacySection, noise_multiplier: float, state_json: str | None = None
    ) -> None:
        self._section = section
        self.noise_multiplier = noise_multiplier
        self._accountant = (
            RdpAccountant() if state_json is None else RdpAccountant.from_dict(json.loads(state_json))
        )

    def record_round(self, *, sample_rate: float, clip_norm: float, scale: float, sparse_length: int) -> None:
        """One release of the round's noisy sum."""
        if self._section.mechanism == "none" or sample_rate <= 0:
            return
        if self._section.mechanism == "gaussian":
            self._accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=sample_rate)
            return
        variance = skellam_central_variance(
            noise_multiplier=self.noise_multiplier, clip_norm=clip_norm, scale=scale
        )
        l2 = rounded_l2_bound(clip_norm=clip_norm, scale=scale, dim=sparse_length, beta=ROUNDING_BETA)
        l1 = rounded_l1_bound(l2_bound=l2, dim=sparse_length)
        self._accountant.step_skellam(
            variance=variance, l1_sensitivity=l1, l2_sensitivity=l2, sample_rate=sample_rate
        )

    def epsilon(self) -> float | None:
        """ε at [privacy].delta so far (0 before any release); None (unbounded) for mechanism 'none'."""
        if self._section.mechanism == "none":
            return None
        if self._accountant.steps == 0:
            return 0.0
        return float(self._accountant.get_epsilon(delta=self._section.delta))

    def to_json(self) -> str:
        """State for the model store's meta table."""
        return json.dumps(self._accountant.to_dict())
