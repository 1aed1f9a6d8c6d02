"""Noise shares: distribution, variance at a fixed seed, settings → Skellam parameter, sensitivity bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fl_protocol.dp import mechanisms as mech
from fl_protocol.errors import ConfigError

N_SAMPLES = 200_000


def _variance_tolerance(variance: float, excess_kurtosis: float, n: int = N_SAMPLES) -> float:
    """6 standard errors of the sample variance: Var(s²) ≈ σ⁴ (2 + κ) / n, κ the excess kurtosis."""
    return 6.0 * variance * math.sqrt((2.0 + excess_kurtosis) / n)


@pytest.mark.parametrize("variance", [0.5, 3.0, 250.0, 1e6])
def test_skellam_noise_variance_and_dtype(variance: float) -> None:
    noise = mech.skellam_noise(N_SAMPLES, variance=variance, rng=np.random.default_rng(7))
    assert noise.dtype == np.int64 and noise.shape == (N_SAMPLES,)
    # Skellam(μ) has excess kurtosis 1/μ
    assert abs(noise.var() - variance) <= _variance_tolerance(variance, 1.0 / variance)
    assert abs(noise.mean()) <= 6.0 * math.sqrt(variance / N_SAMPLES)


@pytest.mark.parametrize("central_variance", [40.0, 1e4, 4e6])
def test_discrete_gaussian_share_variance_and_dtype(central_variance: float) -> None:
    share = mech.distributed_discrete_gaussian_share(
        N_SAMPLES, central_variance=central_variance, min_survivors=4, rng=np.random.default_rng(3)
    )
    target = central_variance / 4
    assert share.dtype == np.int64 and share.shape == (N_SAMPLES,)
    assert abs(share.var() - target) <= _variance_tolerance(target, 0.0)
    assert abs(share.mean()) <= 6.0 * math.sqrt(target / N_SAMPLES)


def test_discrete_gaussian_matches_its_pmf_at_small_sigma() -> None:
    sigma, n = 1.3, 200_000
    noise = mech.discrete_gaussian_noise(n, stddev=sigma, rng=np.random.default_rng(4))
    support = np.arange(-12, 13)
    pmf = np.exp(-(support**2) / (2 * sigma**2))
    pmf /= pmf.sum()
    for value, p in zip(support[8:17], pmf[8:17], strict=True):
        observed = float(np.mean(noise == value))
        assert abs(observed - p) <= 5 * math.sqrt(p * (1 - p) / n), value


def test_skellam_matches_exact_pmf_at_small_variance() -> None:
    # chi-square style check of the first few probabilities against e^{-μ} I_|k|(μ), computed by series
    variance = 2.0
    noise = mech.skellam_noise(N_SAMPLES, variance=variance, rng=np.random.default_rng(11))
    for k in range(-3, 4):
        pmf = math.exp(-variance) * sum(
            (variance / 2) ** (2 * m + abs(k)) / (math.factorial(m) * math.factorial(m + abs(k)))
            for m in range(60)
        )
        freq = float(np.mean(noise == k))
        assert abs(freq - pmf) <= 6.0 * math.sqrt(pmf * (1 - pmf) / N_SAMPLES)


def test_settings_to_device_skellam_variance() -> None:
    central = mech.skellam_central_variance(noise_multiplier=1.0, clip_norm=0.5, scale=2.0**10)
    assert central == pytest.approx((0.5 * 1024) ** 2)
    device = mech.skellam_device_variance(noise_multiplier=1.0, clip_norm=0.5, scale=2.0**10, min_survivors=8)
    assert device == pytest.approx(central / 8)


def test_rounded_bounds() -> None:
    # probabilistic bound with sqrt(2 log(1/β)) = 1
    c, d = 100.0 * 1.0, 64
    l2 = mech.rounded_l2_bound(clip_norm=1.0, scale=100.0, dim=d, beta=math.exp(-0.5))
    assert l2 == pytest.approx(math.sqrt(c * c + d / 4 + 1.0 * (c + math.sqrt(d) / 2)))
    # few coordinates and tiny β: the deterministic c + sqrt(d) is smaller and wins
    assert mech.rounded_l2_bound(clip_norm=10.0, scale=1.0, dim=1, beta=1e-9) == pytest.approx(11.0)
    assert mech.rounded_l1_bound(l2_bound=3.0, dim=100) == 9.0  # Δ2² < sqrt(d) Δ2
    assert mech.rounded_l1_bound(l2_bound=30.0, dim=4) == 60.0  # sqrt(d) Δ2 < Δ2²


def test_rounded_l2_bound_holds_for_stochastic_rounding() -> None:
    # empirical: conditional rounding would rarely (≤ β) need a retry
    rng = np.random.default_rng(5)
    dim, scale, beta = 256, 50.0, 1e-3
    bound = mech.rounded_l2_bound(clip_norm=1.0, scale=scale, dim=dim, beta=beta)
    x = rng.normal(size=dim)
    x *= scale / np.linalg.norm(x)
    norms = []
    for _ in range(2000):
        floor = np.floor(x)
        rounded = floor + (rng.random(dim) < (x - floor))
        norms.append(np.linalg.norm(rounded))
    assert np.mean(np.array(norms) > bound) <= 5 * beta


def test_secure_generator_is_fresh() -> None:
    a, b = mech.secure_generator(), mech.secure_generator()
    assert isinstance(a, np.random.Generator)
    assert not np.array_equal(a.integers(0, 2**62, 4), b.integers(0, 2**62, 4))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda rng: mech.skellam_noise(-1, variance=1.0, rng=rng), "size must be an int >= 0"),
        (lambda rng: mech.skellam_noise(3, variance=-1.0, rng=rng), "variance must be a finite number >= 0"),
        (
            lambda rng: mech.skellam_noise(3, variance=math.inf, rng=rng),
            "variance must be a finite number >= 0",
        ),
        (lambda rng: mech.skellam_noise(3, variance=1e17, rng=rng), "too large to sample exactly"),
        (
            lambda rng: mech.distributed_skellam_share(3, central_variance=1.0, min_survivors=0, rng=rng),
            "min_survivors must be an int >= 1",
        ),
        (
            lambda rng: mech.distributed_discrete_gaussian_share(
                3, central_variance=-1.0, min_survivors=2, rng=rng
            ),
            "central_variance must be a finite number >= 0",
        ),
        (
            lambda rng: mech.discrete_gaussian_noise(3, stddev=math.nan, rng=rng),
            "stddev must be a finite number",
        ),
    ],
)
def test_invalid_inputs(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=message):
        call(np.random.default_rng(0))
