"""The cloud's downlink (aggregator_gateway/cloud/downlink.py): the published version is the delta's
reconstruction, and server-side error feedback keeps it on the exact sum of the server updates."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator_gateway.cloud.downlink import ServerDownlink
from fl_protocol.codec.compress import vector_sha256

D, ROUNDS = 1500, 300


def _run(bits: int, *, feedback: bool) -> tuple[list[float], list[float], list[np.ndarray]]:
    """(max |published − exact sum| per round, its per-round bound, residuals) over ROUNDS random server
    updates whose size changes from round to round."""
    rng = np.random.default_rng(5)
    published = rng.normal(size=D).astype(np.float32)
    exact = published.astype(np.float64)
    downlink = ServerDownlink(bits)
    gaps, bounds, residuals = [], [], []
    for _round in range(ROUNDS):
        update = rng.normal(size=D) * 10.0 ** rng.uniform(-4, -2)
        target = (published.astype(np.float64) + update).astype(np.float32)  # the optimizer's float32 output
        exact += target.astype(np.float64) - published.astype(np.float64)  # what the server asked for
        if not feedback:
            downlink = ServerDownlink(bits)  # forgets the residual every round
        step = downlink.step(published, target)
        downlink.adopt(step)
        published = step.vector
        assert step.quantized is not None and step.residual is not None
        half_step = np.repeat(step.quantized.scales.astype(np.float64), step.quantized.chunk)[:D] / 2
        bounds.append(float(np.max(half_step + np.spacing(np.abs(published)))))
        gaps.append(float(np.max(np.abs(published.astype(np.float64) - exact))))
        residuals.append(step.residual)
    return gaps, bounds, residuals


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_the_published_global_tracks_the_exact_sum_of_server_updates(bits: int) -> None:
    gaps, bounds, residuals = _run(bits, feedback=True)
    # published_n = exact_n − e_n: the gap is the last residual, within that round's half step (plus
    # float32 rounding) whatever happened before: bounded, not growing
    assert all(gap <= bound * (1 + 1e-9) for gap, bound in zip(gaps, bounds, strict=True))
    for gap, residual in zip(gaps, residuals, strict=True):
        assert gap == pytest.approx(float(np.max(np.abs(residual))), rel=1e-6, abs=1e-12)
    # Without feedback the dropped parts add up like a random walk, far beyond any one half-step.
    drift, _, _ = _run(bits, feedback=False)
    assert drift[-1] > 3 * max(gaps)


def test_bits_zero_publishes_the_target_itself() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=40).astype(np.float32)
    target = base + rng.normal(size=40).astype(np.float32)
    step = ServerDownlink(0).step(base, target)
    assert step.vector.tobytes() == target.tobytes()
    assert step.quantized is None and step.residual is None
    assert step.message(model_version=1, base_version=0) is None


def test_the_message_rebuilds_the_published_vector_from_the_base() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(size=700).astype(np.float32)
    downlink = ServerDownlink(8, residual=rng.normal(size=700) * 1e-5)
    step = downlink.step(base, base + rng.normal(size=700).astype(np.float32) * 1e-3)
    message = step.message(model_version=3, base_version=2)
    assert message is not None and (message.model_version, message.base_version) == (3, 2)
    assert message.base_sha256 == vector_sha256(base) and message.model_sha256 == vector_sha256(step.vector)
    assert message.apply(base).tobytes() == step.vector.tobytes()


def test_a_bad_target_or_residual_is_refused() -> None:
    base = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match="not finite"):
        ServerDownlink(8).step(base, np.full(8, np.nan))
    with pytest.raises(ValueError, match="another length"):
        ServerDownlink(8, residual=np.zeros(7)).step(base, base)
