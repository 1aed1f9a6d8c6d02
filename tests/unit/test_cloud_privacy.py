"""The cloud's accountant equals RdpAccountant used directly; calibration meets the target; sample rate."""

from __future__ import annotations

import math

import pytest

from aggregator_gateway.cloud.config import PrivacySection
from aggregator_gateway.cloud.privacy import (
    ROUNDING_BETA,
    CloudAccountant,
    resolve_noise_multiplier,
    sample_rate,
)
from fl_protocol.dp import RdpAccountant, rounded_l1_bound, rounded_l2_bound


def test_gaussian_rounds_match_rdp_accountant() -> None:
    section = PrivacySection(mechanism="gaussian", noise_multiplier=1.1, delta=1e-5)
    cloud = CloudAccountant(section, 1.1)
    direct = RdpAccountant()
    for q in (0.1, 0.25, 0.1):
        cloud.record_round(sample_rate=q, clip_norm=1.0, scale=100.0, sparse_length=64)
        direct.step(noise_multiplier=1.1, sample_rate=q)
    assert cloud.epsilon() == pytest.approx(direct.get_epsilon(delta=1e-5), rel=1e-12)
    restored = CloudAccountant(section, 1.1, cloud.to_json())
    assert restored.epsilon() == cloud.epsilon()


def test_skellam_rounds_match_rdp_accountant() -> None:
    section = PrivacySection(mechanism="skellam", noise_multiplier=1.0, clip_norm=0.5, delta=1e-6)
    cloud = CloudAccountant(section, 1.0)
    cloud.record_round(sample_rate=1.0, clip_norm=0.5, scale=200.0, sparse_length=128)
    l2 = rounded_l2_bound(clip_norm=0.5, scale=200.0, dim=128, beta=ROUNDING_BETA)
    direct = RdpAccountant()
    direct.step_skellam(
        variance=(1.0 * 0.5 * 200.0) ** 2,
        l2_sensitivity=l2,
        l1_sensitivity=rounded_l1_bound(l2_bound=l2, dim=128),
        sample_rate=1.0,
    )
    assert cloud.epsilon() == pytest.approx(direct.get_epsilon(delta=1e-6), rel=1e-12)


def test_no_dp_reports_unbounded_and_zero_before_release() -> None:
    assert CloudAccountant(PrivacySection(mechanism="none"), 0.0).epsilon() is None
    assert CloudAccountant(PrivacySection(mechanism="gaussian", noise_multiplier=1.0), 1.0).epsilon() == 0.0


@pytest.mark.parametrize("mechanism", ["gaussian", "skellam"])
def test_calibrated_noise_meets_the_target_over_the_rounds(mechanism: str) -> None:
    section = PrivacySection(mechanism=mechanism, target_epsilon=4.0, delta=1e-5)
    z = resolve_noise_multiplier(section, rounds=5, scale=300.0, sparse_length=64)
    cloud = CloudAccountant(section, z)
    for _ in range(5):
        cloud.record_round(sample_rate=1.0, clip_norm=1.0, scale=300.0, sparse_length=64)
    epsilon = cloud.epsilon()
    assert epsilon is not None and 3.5 < epsilon <= 4.0


def test_sample_rate_is_conservative() -> None:
    assert sample_rate(selected=3, survivors=2, total_devices=10) == 0.3
    assert sample_rate(selected=0, survivors=4, total_devices=10) == 0.4
    assert sample_rate(selected=30, survivors=4, total_devices=10) == 1.0
    assert sample_rate(selected=3, survivors=2, total_devices=0) == 1.0
    assert math.isclose(
        resolve_noise_multiplier(
            PrivacySection(mechanism="gaussian", noise_multiplier=0.8), rounds=3, scale=1.0, sparse_length=1
        ),
        0.8,
    )
