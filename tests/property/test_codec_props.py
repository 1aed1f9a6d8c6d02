"""Property tests of the update codec: error bounds, unbiasedness, norms, inverses, sums."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fl_protocol.codec import CodecSettings, decode_sum, default_scale, encode_update, sparse_count
from fl_protocol.codec.clip import l2_clip
from fl_protocol.codec.pack import pack_bits, unpack_bits
from fl_protocol.codec.quantize import dequantize, from_ring, ring_sum, stochastic_round, to_ring
from fl_protocol.codec.rotate import rotate, unrotate
from fl_protocol.codec.sparsify import index_set

FAST = settings(max_examples=100, deadline=None)
seeds = st.binary(min_size=32, max_size=32)
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False, width=32)


def vectors(max_size: int = 300) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.float32, st.integers(1, max_size), elements=finite)


@FAST
@given(vectors(), st.floats(0.01, 100.0))
def test_clip_bound_holds_and_clip_is_idempotent(x: np.ndarray, clip_norm: float) -> None:
    clipped, norm = l2_clip(x, clip_norm)
    assert np.linalg.norm(clipped) <= clip_norm
    again, again_norm = l2_clip(clipped, clip_norm)
    assert np.array_equal(again, clipped) and again_norm == np.linalg.norm(clipped)
    if norm <= clip_norm:
        assert np.array_equal(clipped, x.astype(np.float64))
    else:  # direction preserved
        assert np.allclose(clipped * (norm / clip_norm), x, rtol=1e-9, atol=1e-9 * norm)


@FAST
@given(vectors(3000), seeds)
def test_rotation_preserves_norm_and_inverts(x: np.ndarray, seed: bytes) -> None:
    y = rotate(x, seed)
    norm = float(np.linalg.norm(x.astype(np.float64)))
    assert y.shape == x.shape
    assert math.isclose(float(np.linalg.norm(y)), norm, rel_tol=1e-12, abs_tol=1e-9)
    assert np.allclose(unrotate(y, seed), x, rtol=0, atol=1e-12 * max(norm, 1.0))


@FAST
@given(
    hnp.arrays(np.float64, st.integers(1, 200), elements=st.floats(-50, 50)),
    st.floats(0.5, 50.0),
    st.integers(0, 2**32),
)
def test_stochastic_rounding_error_below_one_step(x: np.ndarray, scale: float, seed: int) -> None:
    quantized, clamped = stochastic_round(x, scale=scale, quant_bits=20, rng=np.random.default_rng(seed))
    assert clamped == 0  # |x * scale| <= 2500 < 2^19 - 1
    assert np.all(np.abs(dequantize(quantized, scale=scale) - x) < 1.0 / scale)


def test_stochastic_rounding_is_unbiased() -> None:
    # Each rounding is floor(v) + Bernoulli(frac(v)), variance frac(1 - frac) <= 1/4. The mean of N = 40_000
    # independent roundings has standard deviation <= 0.5 / sqrt(N) = 0.0025; 5 standard deviations (0.0125)
    # is exceeded with probability < 6e-7 per value, and the seed is fixed, so the test is deterministic.
    # A biased rounding (e.g. round-half-up, or floor) misses by >= 0.1 for these values.
    values = np.array([0.3, -1.7, 2.5, -0.05, 7.9, 0.0, -3.25])
    repeats = 40_000
    quantized, _ = stochastic_round(
        np.repeat(values, repeats), scale=1.0, quant_bits=8, rng=np.random.default_rng(20261124)
    )
    means = quantized.reshape(len(values), repeats).mean(axis=1)
    assert np.all(np.abs(means - values) < 5 * 0.5 / math.sqrt(repeats))


@FAST
@given(st.integers(8, 32), st.data())
def test_pack_round_trip_any_ring_width(ring_bits: int, data: st.DataObject) -> None:
    values = data.draw(hnp.arrays(np.uint32, st.integers(0, 200), elements=st.integers(0, 2**ring_bits - 1)))
    assert np.array_equal(unpack_bits(pack_bits(values, ring_bits), values.size, ring_bits), values)


@FAST
@given(st.integers(8, 32), st.data())
def test_ring_map_round_trip_on_the_centred_range(ring_bits: int, data: st.DataObject) -> None:
    half = 2 ** (ring_bits - 1)
    values = data.draw(hnp.arrays(np.int64, st.integers(1, 50), elements=st.integers(-half, half - 1)))
    ring = to_ring(values, ring_bits)
    assert ring.dtype == np.uint32 and int(ring.max()) < 2**ring_bits
    assert np.array_equal(from_ring(ring, ring_bits), values)


def _settings(rotate: bool, fraction: float, seed: bytes, k: int, clip_norm: float) -> CodecSettings:
    return CodecSettings(
        clip_norm=clip_norm,
        keep_fraction=fraction,
        index_seed=seed,
        rotate=rotate,
        rotation_seed=seed[::-1],
        quant_bits=12,
        ring_bits=20,  # 12 + ceil(log2 8) = 15 <= 20: no wrap for up to 8 clients
        scale=default_scale(clip_norm, 12, k, rotate=rotate),
        error_feedback=False,
    )


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 8),
    st.integers(1, 400),
    st.floats(0.02, 1.0),
    st.booleans(),
    seeds,
    st.floats(0.1, 10.0),
    st.integers(0, 2**32),
    st.data(),
)
def test_sum_of_encoded_updates_decodes_to_sum_of_clipped_sparse_inputs(
    n: int,
    d: int,
    fraction: float,
    rotate: bool,
    seed: bytes,
    clip_norm: float,
    rng_seed: int,
    data: st.DataObject,
) -> None:
    k = sparse_count(d, fraction)
    s = _settings(rotate, fraction, seed, k, clip_norm)
    rng = np.random.default_rng(rng_seed)
    deltas = [data.draw(hnp.arrays(np.float32, d, elements=finite)) for _ in range(n)]
    encoded = [encode_update(delta, residual=None, settings=s, rng=rng) for delta in deltas]
    total = decode_sum(
        ring_sum(np.stack([e.ring_values for e in encoded]), s.ring_bits), count=n, settings=s, dimension=d
    )
    support = index_set(seed, d, k)
    expected = np.zeros(d)
    for delta in deltas:
        expected[support] += l2_clip(delta, clip_norm)[0][support]
    assert not np.delete(total, support).any()
    if any(e.clamped_count for e in encoded):  # rotation tail event, probability <= 1e-6 per vector
        return
    # Each device's rounding error is < 1/scale per coordinate in the (rotated) quantization domain, so
    # its L2 norm is < sqrt(k)/scale; the rotation is orthogonal, and n devices add at most n times that.
    assert np.linalg.norm(total - expected) <= n * math.sqrt(k) / s.scale + 1e-9 * n * clip_norm
