"""The noise of every released sum is the noise the accountant charged for (issue 11, findings 1 and 3).

The statistical test runs the real device encoder (`encode_for_task`) for a cohort, sums the ring values
as SecAgg+ unmasking yields them (`ring_sum`), decodes like the gateway (`decode_sum`) and compares the
empirical per-coordinate noise variance of the released sum with the variance the accountant assumes,
(z C)² in float units, for both mechanisms and for every survivor count down to the floor min_survivors.

Confidence bound: with N independent coordinates the sample variance of Gaussian-like noise satisfies
N·S²/σ² ~ χ²_N, so the one-sided 99.9% lower confidence bound on the true ratio σ²/assumed is
ratio_hat · N / χ²_{N, 0.999}. The test requires that bound ≥ 0.95 (N = 6 rounds × 4,096 coordinates =
24,576 per survivor count, so the bound sits ~2.8% below the point estimate; N = 65,536 for the one-device
test). Seeds are fixed; the test is deterministic.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from edge_runtime.agent.encode import encode_for_task
from fl_protocol.codec.pipeline import decode_sum
from fl_protocol.codec.quantize import ring_sum
from fl_protocol.dp.accountant import DiscreteGaussianEvent, SkellamEvent
from fl_protocol.dp.rounds import round_privacy_event
from fl_protocol.wire.messages import RoundTask
from tests.kit.tasks import dp_task

CONFIDENCE = 0.999
MIN_RATIO = 0.95


def released_sum(task: RoundTask, deltas: list[np.ndarray], seed: int) -> np.ndarray:
    """Encode each device's delta with its own noise, sum mod 2^b, decode as the gateway does."""
    rings = []
    for i, delta in enumerate(deltas):
        rounding, noise = np.random.default_rng([seed, i, 0]), np.random.default_rng([seed, i, 1])
        out = encode_for_task(delta, residual=None, task=task, rounding_rng=rounding, noise_rng=noise)
        rings.append(out.ring_values)
    total = ring_sum(np.stack(rings), task.codec.ring_bits)
    return decode_sum(total, count=len(deltas), settings=task.codec, dimension=task.model_dimension)


def lower_confidence_ratio(residual: np.ndarray, assumed_variance: float) -> tuple[float, float]:
    """(point estimate, one-sided CONFIDENCE lower bound) of true variance / assumed (mean known 0)."""
    n = residual.size
    ratio = float(np.mean(residual**2)) / assumed_variance
    return ratio, ratio * n / float(stats.chi2.ppf(CONFIDENCE, n))


@pytest.mark.parametrize("mechanism", ["gaussian", "skellam"])
def test_one_device_noise_share_survives_the_codec(mechanism: str) -> None:
    """Issue 11 finding 1: q = 8, k = 65,536, z = 1, C = 1, min_survivors 20. One device's decoded noise
    variance × 20 was 0.0146 of (z C)² for 'gaussian' (noise added before the q-bit clamp)."""
    task = dp_task(mechanism=mechanism, dimension=65_536)
    decoded = released_sum(task, [np.zeros(65_536, np.float32)], seed=11)
    ratio, lower = lower_confidence_ratio(decoded * np.sqrt(20), 1.0)
    assert lower >= MIN_RATIO, (ratio, lower)


def test_twenty_devices_at_the_floor_carry_the_assumed_variance_and_nothing_is_clamped() -> None:
    """Issue 11 finding 1: 20 devices, k = 4,096: the decoded sum carried 0.168 of the assumed variance
    and 63.5% of coordinates were clamped (the clamp now only ever sees the signal)."""
    task = dp_task(mechanism="gaussian", dimension=4096)
    rng = np.random.default_rng(5)
    residuals = []
    for trial in range(6):
        deltas = [rng.normal(size=4096).astype(np.float32) for _ in range(20)]
        clipped = [d * min(1.0, 1.0 / float(np.linalg.norm(d))) for d in deltas]
        residuals.append(released_sum(task, deltas, seed=trial) - np.sum(clipped, axis=0))
    ratio, lower = lower_confidence_ratio(np.concatenate(residuals), 1.0)
    assert lower >= MIN_RATIO, (ratio, lower)
    out = encode_for_task(
        deltas[0], residual=None, task=task, rounding_rng=rng, noise_rng=np.random.default_rng(0)
    )
    assert out.clamped_count == 0


@pytest.mark.parametrize("mechanism", ["gaussian", "skellam"])
def test_every_released_sum_carries_at_least_the_accounted_variance(mechanism: str) -> None:
    """Cohort 26, floor 20: every survivor count from 26 down to 20, 6 rounds each with full-norm updates.
    The variance of (released sum − true clipped sum) must be ≥ 0.95 (z C)² at 99.9% confidence."""
    dim, min_survivors, cohort = 4096, 20, 26
    task = dp_task(
        mechanism=mechanism,
        dimension=dim,
        quant_bits=8,
        noise_multiplier=0.8,
        clip_norm=0.5,
        min_survivors=min_survivors,
    )
    assumed = (0.8 * 0.5) ** 2
    rng = np.random.default_rng(2026)
    for survivors in range(cohort, min_survivors - 1, -1):
        residuals = []
        for trial in range(6):
            deltas = [rng.normal(size=dim).astype(np.float32) for _ in range(survivors)]
            clipped = [d * min(1.0, 0.5 / float(np.linalg.norm(d))) for d in deltas]
            decoded = released_sum(task, deltas, seed=1000 * survivors + trial)
            residuals.append(decoded - np.sum(clipped, axis=0))
        ratio, lower = lower_confidence_ratio(np.concatenate(residuals), assumed)
        assert lower >= MIN_RATIO, (mechanism, survivors, ratio, lower)


@pytest.mark.parametrize("mechanism", ["gaussian", "skellam"])
def test_the_charged_event_is_the_mechanism_that_runs(mechanism: str) -> None:
    """The event both the cloud and the ledger charge names the integer-domain mechanism with the noise
    the encoder adds: central variance (z C s)² and the encoder's own rounding bound."""
    task = dp_task(mechanism=mechanism, dimension=4096)
    event = round_privacy_event(
        mechanism=mechanism,
        noise_multiplier=1.0,
        clip_norm=1.0,
        min_survivors=20,
        scale=task.codec.scale,
        sparse_length=4096,
    )
    central = (task.codec.scale * 1.0) ** 2
    if mechanism == "skellam":
        assert isinstance(event, SkellamEvent) and event.variance == pytest.approx(central)
    else:
        assert isinstance(event, DiscreteGaussianEvent)
        assert event.local_stddev**2 * 20 == pytest.approx(central)
