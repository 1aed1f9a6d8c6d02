"""Property tests for fl_protocol.dp: calibration never overshoots, accounting is monotone, noise shares
carry the target variance."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fl_protocol.dp import mechanisms as mech
from fl_protocol.dp import rdp
from fl_protocol.dp.accountant import RdpAccountant
from fl_protocol.dp.calibrate import calibrate_noise_multiplier, calibrate_skellam_variance

SEED = 20240611
N_SAMPLES = 100_000
deltas = st.sampled_from([1e-3, 1e-5, 1e-6, 1e-8])
rates = st.one_of(st.just(1.0), st.floats(1e-4, 1.0))


def _variance_tolerance(variance: float, excess_kurtosis: float, n: int) -> float:
    # 6 standard errors of the sample variance (Var(s²) ≈ σ⁴(2 + κ)/n); false alarm ≈ 2e-9 per draw.
    return 6.0 * variance * math.sqrt((2.0 + excess_kurtosis) / n)


@settings(max_examples=25, deadline=None)
@given(
    target=st.floats(0.2, 30.0),
    delta=deltas,
    sample_rate=rates,
    rounds=st.integers(1, 3000),
)
def test_calibrated_noise_never_overshoots(
    target: float, delta: float, sample_rate: float, rounds: int
) -> None:
    z = calibrate_noise_multiplier(target_epsilon=target, delta=delta, sample_rate=sample_rate, rounds=rounds)
    acc = RdpAccountant()
    acc.step(noise_multiplier=z, sample_rate=sample_rate, steps=rounds)
    assert acc.get_epsilon(delta=delta) <= target


@settings(max_examples=15, deadline=None)
@given(
    target=st.floats(0.2, 20.0),
    delta=deltas,
    l2=st.floats(1.0, 200.0),
    rounds=st.integers(1, 500),
)
def test_calibrated_skellam_never_overshoots(target: float, delta: float, l2: float, rounds: int) -> None:
    l1 = l2 * l2
    variance = calibrate_skellam_variance(
        target_epsilon=target, delta=delta, l1_sensitivity=l1, l2_sensitivity=l2, rounds=rounds
    )
    acc = RdpAccountant()
    acc.step_skellam(variance=variance, l1_sensitivity=l1, l2_sensitivity=l2, steps=rounds)
    assert acc.get_epsilon(delta=delta) <= target


@settings(max_examples=30, deadline=None)
@given(
    noise=st.floats(0.3, 20.0),
    sample_rate=rates,
    steps=st.integers(1, 2000),
    extra=st.integers(1, 2000),
    delta=deltas,
)
def test_accountant_monotone_in_steps(
    noise: float, sample_rate: float, steps: int, extra: int, delta: float
) -> None:
    acc = RdpAccountant()
    acc.step(noise_multiplier=noise, sample_rate=sample_rate, steps=steps)
    before = acc.get_epsilon(delta=delta)
    acc.step(noise_multiplier=noise, sample_rate=sample_rate, steps=extra)
    assert acc.get_epsilon(delta=delta) >= before


@settings(max_examples=30, deadline=None)
@given(
    noise=st.floats(0.3, 20.0),
    more=st.floats(1.0, 3.0),
    sample_rate=rates,
    order=st.sampled_from(rdp.DEFAULT_ORDERS),
)
def test_rdp_decreases_with_noise_and_increases_with_rate(
    noise: float, more: float, sample_rate: float, order: float
) -> None:
    low = rdp.subsampled_gaussian_rdp(
        noise_multiplier=noise * more, sample_rate=sample_rate, orders=(order,)
    )[0]
    high = rdp.subsampled_gaussian_rdp(noise_multiplier=noise, sample_rate=sample_rate, orders=(order,))[0]
    assert low <= high * (1 + 1e-9)
    assert high <= rdp.gaussian_rdp(noise_multiplier=noise, orders=(order,))[0] * (1 + 1e-9)


@settings(max_examples=20, deadline=None)
@given(variance=st.floats(0.05, 1e7))
def test_skellam_empirical_variance(variance: float) -> None:
    noise = mech.skellam_noise(N_SAMPLES, variance=variance, rng=np.random.default_rng(SEED))
    assert abs(float(noise.var()) - variance) <= _variance_tolerance(variance, 1.0 / variance, N_SAMPLES)


@settings(max_examples=20, deadline=None)
@given(
    noise_multiplier=st.floats(0.1, 5.0),
    clip_norm=st.floats(0.01, 10.0),
    min_survivors=st.integers(1, 64),
)
def test_gaussian_share_empirical_variance(
    noise_multiplier: float, clip_norm: float, min_survivors: int
) -> None:
    scale = 100.0  # integer units per float unit, as the codec's scale
    central = (noise_multiplier * clip_norm * scale) ** 2
    assume(central / min_survivors >= 1.0)  # below σ = 1 the discrete Gaussian's variance is < σ²
    share = mech.distributed_discrete_gaussian_share(
        N_SAMPLES, central_variance=central, min_survivors=min_survivors, rng=np.random.default_rng(SEED)
    )
    target = central / min_survivors
    assert abs(float(share.var()) - target) <= _variance_tolerance(target, 0.0, N_SAMPLES)


@settings(max_examples=20, deadline=None)
@given(
    noise_multiplier=st.floats(0.3, 3.0),
    clip_norm=st.floats(0.05, 2.0),
    log2_scale=st.integers(0, 14),
    min_survivors=st.integers(1, 24),
    extra_survivors=st.integers(0, 8),
)
def test_distributed_skellam_sum_carries_target_variance(
    noise_multiplier: float, clip_norm: float, log2_scale: int, min_survivors: int, extra_survivors: int
) -> None:
    scale = float(2**log2_scale)
    target = mech.skellam_central_variance(
        noise_multiplier=noise_multiplier, clip_norm=clip_norm, scale=scale
    )
    per_device = mech.skellam_device_variance(
        noise_multiplier=noise_multiplier, clip_norm=clip_norm, scale=scale, min_survivors=min_survivors
    )
    survivors = min_survivors + extra_survivors
    assert survivors * per_device >= target * (1 - 1e-12)  # exact: Skellam variances add
    rng = np.random.default_rng(SEED)
    n = 20_000
    total = sum(
        mech.distributed_skellam_share(n, central_variance=target, min_survivors=min_survivors, rng=rng)
        for _ in range(survivors)
    )
    assert total.dtype == np.int64
    summed = survivors * per_device
    # at least the target, up to sampling error of the summed Skellam (excess kurtosis 1/variance)
    assert float(total.var()) >= target - _variance_tolerance(summed, 1.0 / max(summed, 1e-9), n)


@settings(max_examples=20, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.floats(0.3, 10.0), st.floats(0.0, 1.0), st.integers(1, 100), st.booleans()),
        min_size=0,
        max_size=6,
    )
)
def test_state_round_trip(events: list[tuple[float, float, int, bool]]) -> None:
    acc = RdpAccountant()
    for noise, rate, steps, skellam in events:
        if skellam:
            acc.step_skellam(
                variance=noise * 100, l1_sensitivity=9.0, l2_sensitivity=3.0, sample_rate=rate, steps=steps
            )
        else:
            acc.step(noise_multiplier=noise, sample_rate=rate, steps=steps)
    restored = RdpAccountant.from_dict(acc.to_dict())
    assert restored.events == acc.events
    assert restored.get_epsilon(delta=1e-5) == acc.get_epsilon(delta=1e-5)
