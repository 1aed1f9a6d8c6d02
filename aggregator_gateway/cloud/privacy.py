"""The cloud's privacy bookkeeping: which noise multiplier the tasks carry, and ε after each round.

Noise: [privacy].noise_multiplier as given, or, with target_epsilon, the least noise that keeps ε ≤ target
over the planned `rounds` (fl_protocol.dp.calibrate; calibration never overshoots), calibrated on the
event the rounds are charged as. A failed round (no partial before its deadline) is not accounted.
Limitation: a partial that arrives after its round closed is ignored, yet it was released on the broker;
the accountant does not count it.

Accounting, one event per completed round (a round with no partial released nothing to the cloud): the
event of `fl_protocol.dp.rounds.round_privacy_event` for the round's settings, the same event every
device's ledger charges. Sample rate 1: devices join rounds by availability, nobody samples them at
random, so no amplification by sampling is claimed ([cloud].total_devices only sizes the ring: the rule the
summed noise must fit is in aggregator_gateway/cloud/ring.py).
"""

from __future__ import annotations

import json
import logging

from aggregator_gateway.cloud.config import PrivacySection
from fl_protocol.dp import RdpAccountant
from fl_protocol.dp.calibrate import calibrate_event_noise
from fl_protocol.dp.rdp import DEFAULT_ORDERS
from fl_protocol.dp.rounds import round_privacy_event

logger = logging.getLogger(__name__)


def resolve_noise_multiplier(
    section: PrivacySection, *, rounds: int, scale: float, sparse_length: int
) -> float:
    """z for every task: as configured, calibrated from target_epsilon, or 0 for mechanism 'none'.

    Both mechanisms are calibrated on the bound they are charged with (Skellam [AKL21], distributed
    discrete Gaussian [KLS21]) at the round's scale s and sparse length k; at a coarse scale either
    costs more than the continuous Gaussian with the same z.
    """
    if section.mechanism == "none":
        return 0.0
    if section.noise_multiplier is not None:
        return float(section.noise_multiplier)
    assert section.target_epsilon is not None  # PrivacySection guarantees exactly one

    def rdp_of(z: float) -> list[float]:
        event = round_privacy_event(
            mechanism=section.mechanism,
            noise_multiplier=z,
            clip_norm=section.clip_norm,
            min_survivors=section.min_survivors,
            scale=scale,
            sparse_length=sparse_length,
        )
        assert event is not None
        return list(event.rdp(DEFAULT_ORDERS))

    z = calibrate_event_noise(
        rdp_of, target_epsilon=section.target_epsilon, delta=section.delta, rounds=rounds
    )
    logger.info(
        "calibrated noise_multiplier %.4g for ε=%g, δ=%g over %d rounds",
        z,
        section.target_epsilon,
        section.delta,
        rounds,
    )
    return z


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

    def record_round(self, *, clip_norm: float, scale: float, sparse_length: int) -> None:
        """One release of the round's noisy sum (no sampling amplification: sample rate 1)."""
        event = round_privacy_event(
            mechanism=self._section.mechanism,
            noise_multiplier=self.noise_multiplier,
            clip_norm=clip_norm,
            min_survivors=self._section.min_survivors,
            scale=scale,
            sparse_length=sparse_length,
        )
        if event is not None:
            self._accountant.record(event)

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
