"""Calibration: hits the target from below, and is close to the least noise that does."""

from __future__ import annotations

import pytest

from fl_protocol.dp import rdp
from fl_protocol.dp.calibrate import calibrate_noise_multiplier, calibrate_skellam_variance
from fl_protocol.errors import ConfigError, PrivacyError


def _gaussian_epsilon(z: float, q: float, rounds: int, delta: float) -> float:
    curve = rdp.subsampled_gaussian_rdp(noise_multiplier=z, sample_rate=q) * rounds
    return rdp.rdp_to_epsilon(curve, delta=delta)[0]


@pytest.mark.parametrize(("eps", "q", "rounds"), [(1.0, 0.01, 1000), (8.0, 0.1, 100), (3.0, 1.0, 20)])
def test_noise_multiplier_meets_target_and_is_nearly_least(eps: float, q: float, rounds: int) -> None:
    z = calibrate_noise_multiplier(target_epsilon=eps, delta=1e-5, sample_rate=q, rounds=rounds)
    assert _gaussian_epsilon(z, q, rounds, 1e-5) <= eps
    assert _gaussian_epsilon(z * (1 - 2e-3), q, rounds, 1e-5) > eps  # within the 1e-3 tolerance (+margin)


def test_known_value_full_participation() -> None:
    # q = 1, R rounds: ε(α) = R α / (2 z²); z for ε = 3 at δ = 1e-5 over 20 rounds, checked by brute force.
    z = calibrate_noise_multiplier(target_epsilon=3.0, delta=1e-5, sample_rate=1.0, rounds=20)
    grid = [x / 1000 for x in range(5000, 12000)]
    least = min(g for g in grid if _gaussian_epsilon(g, 1.0, 20, 1e-5) <= 3.0)
    assert least - 1e-3 <= z <= least * 1.001 + 1e-3


def test_skellam_variance_meets_target() -> None:
    var = calibrate_skellam_variance(
        target_epsilon=2.0, delta=1e-5, l1_sensitivity=400.0, l2_sensitivity=20.0, rounds=50
    )
    curve = rdp.skellam_rdp(variance=var, l1_sensitivity=400.0, l2_sensitivity=20.0) * 50
    assert rdp.rdp_to_epsilon(curve, delta=1e-5)[0] <= 2.0
    smaller = rdp.skellam_rdp(variance=var * 0.99, l1_sensitivity=400.0, l2_sensitivity=20.0) * 50
    assert rdp.rdp_to_epsilon(smaller, delta=1e-5)[0] > 2.0


def test_unreachable_target_raises() -> None:
    with pytest.raises(PrivacyError, match="is not reachable with noise"):
        calibrate_noise_multiplier(target_epsilon=1e-9, delta=1e-12, sample_rate=1.0, rounds=10**6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"target_epsilon": 0.0, "delta": 1e-5, "sample_rate": 0.1, "rounds": 10},
            "target_epsilon must be a finite number > 0",
        ),
        (
            {"target_epsilon": 1.0, "delta": 0.0, "sample_rate": 0.1, "rounds": 10},
            r"delta must lie in \(0, 1\)",
        ),
        (
            {"target_epsilon": 1.0, "delta": 1e-5, "sample_rate": 0.1, "rounds": 0},
            "rounds must be an int >= 1",
        ),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        calibrate_noise_multiplier(**kwargs)
