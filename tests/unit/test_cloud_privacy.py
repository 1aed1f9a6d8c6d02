"""The cloud's accountant charges the round event the devices charge; calibration meets the target; no
sampling amplification is claimed (issue 11 finding 9). The ring rule: test_cloud_ring.py."""

from __future__ import annotations

import math

import pytest

from aggregator_gateway.cloud.config import PrivacySection
from aggregator_gateway.cloud.privacy import CloudAccountant, resolve_noise_multiplier
from fl_protocol.dp import RdpAccountant, rounded_l1_bound, rounded_l2_bound
from fl_protocol.dp.mechanisms import ROUNDING_BETA


def test_gaussian_rounds_are_the_distributed_discrete_gaussian() -> None:
    section = PrivacySection(mechanism="gaussian", noise_multiplier=1.1, delta=1e-5, min_survivors=4)
    cloud = CloudAccountant(section, 1.1)
    direct = RdpAccountant()
    l2 = rounded_l2_bound(clip_norm=1.0, scale=100.0, dim=64, beta=ROUNDING_BETA)
    for _ in range(3):
        cloud.record_round(clip_norm=1.0, scale=100.0, sparse_length=64)
        direct.step_discrete_gaussian(
            local_stddev=1.1 * 100.0 / 2.0, min_summands=4, l2_sensitivity=l2, dim=64
        )
    assert cloud.epsilon() == pytest.approx(direct.get_epsilon(delta=1e-5), rel=1e-12)
    restored = CloudAccountant(section, 1.1, cloud.to_json())
    assert restored.epsilon() == cloud.epsilon()


def test_skellam_rounds_match_rdp_accountant() -> None:
    section = PrivacySection(mechanism="skellam", noise_multiplier=1.0, clip_norm=0.5, delta=1e-6)
    cloud = CloudAccountant(section, 1.0)
    cloud.record_round(clip_norm=0.5, scale=200.0, sparse_length=128)
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
        cloud.record_round(clip_norm=1.0, scale=300.0, sparse_length=64)
    epsilon = cloud.epsilon()
    assert epsilon is not None and 3.5 < epsilon <= 4.0
    assert math.isclose(
        resolve_noise_multiplier(
            PrivacySection(mechanism="gaussian", noise_multiplier=0.8), rounds=3, scale=1.0, sparse_length=1
        ),
        0.8,
    )


def test_docs_cloud_example_is_not_amplified() -> None:
    """Issue 11 finding 9: docs/cloud.md's example (60 of 100 devices) reported ε 19.4 instead of 30.1:
    the cloud claimed Poisson amplification (q = selected / total_devices) that nothing performed. The
    accountant has no sample-rate input any more; ε equals the un-sampled mechanism's."""
    section = PrivacySection(mechanism="gaussian", noise_multiplier=0.7, delta=1e-5, min_survivors=2)
    cloud = CloudAccountant(section, 0.7)
    direct = RdpAccountant()
    l2 = rounded_l2_bound(clip_norm=1.0, scale=4000.0, dim=4096, beta=ROUNDING_BETA)
    for _ in range(10):
        cloud.record_round(clip_norm=1.0, scale=4000.0, sparse_length=4096)
        direct.step_discrete_gaussian(
            local_stddev=0.7 * 4000.0 / math.sqrt(2), min_summands=2, l2_sensitivity=l2, dim=4096
        )
    unsampled = RdpAccountant()
    unsampled.step(noise_multiplier=0.7, sample_rate=1.0, steps=10)
    epsilon = cloud.epsilon()
    assert epsilon == pytest.approx(direct.get_epsilon(delta=1e-5), rel=1e-12)
    assert epsilon is not None and epsilon >= unsampled.get_epsilon(delta=1e-5)
