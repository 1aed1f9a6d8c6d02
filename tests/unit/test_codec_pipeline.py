"""encode_update / decode_sum: order of steps, error feedback, integer noise, sizes and codec chain."""

from __future__ import annotations

import numpy as np
import pytest

from fl_protocol.codec import (
    CodecSettings,
    codec_chain,
    codec_chain_text,
    decode_sum,
    default_scale,
    encode_update,
    uplink_payload_bytes,
)
from fl_protocol.codec.clip import l2_clip
from fl_protocol.codec.quantize import ring_sum
from fl_protocol.codec.sparsify import index_set
from fl_protocol.errors import ConfigError, PrivacyError
from fl_protocol.wire.framing import FrameHeader

D = 2000


def settings(**overrides: object) -> CodecSettings:
    values: dict[str, object] = {
        "clip_norm": 1.0,
        "keep_fraction": 0.05,
        "index_seed": b"\x11" * 32,
        "rotate": False,
        "rotation_seed": b"\x22" * 32,
        "quant_bits": 12,
        "ring_bits": 24,
        "scale": default_scale(1.0, 12, 100, rotate=False),
        "error_feedback": True,
    }
    return CodecSettings(**{**values, **overrides})  # type: ignore[arg-type]


def test_error_feedback_residual_holds_exactly_the_off_support_mass() -> None:
    s = settings()
    delta = np.random.default_rng(0).normal(size=D).astype(np.float32)
    out = encode_update(delta, residual=None, settings=s, rng=np.random.default_rng(1))
    clipped, norm = l2_clip(delta, 1.0)
    support = index_set(s.index_seed, D, 100)
    assert out.clipped and out.input_norm == pytest.approx(norm)
    assert out.residual is not None and out.residual.dtype == np.float32
    assert not out.residual[support].any()
    off = np.setdiff1d(np.arange(D), support)
    assert np.allclose(out.residual[off], clipped[off], atol=1e-7)
    sent = decode_sum(out.ring_values, count=1, settings=s, dimension=D)
    assert np.allclose(sent + out.residual, clipped, atol=1 / s.scale)
    # The next round adds the residual before clipping.
    second = encode_update(
        np.zeros(D, np.float32), residual=out.residual, settings=s, rng=np.random.default_rng(2)
    )
    assert second.input_norm == pytest.approx(float(np.linalg.norm(out.residual)), rel=1e-6)


def test_no_residual_when_error_feedback_is_off() -> None:
    s = settings(error_feedback=False)
    out = encode_update(np.ones(D, np.float32), residual=None, settings=s, rng=np.random.default_rng(0))
    assert out.residual is None
    with pytest.raises(ValueError, match="a residual was passed but error_feedback is off"):
        encode_update(np.ones(D, np.float32), residual=np.zeros(D), settings=s, rng=np.random.default_rng(0))


def test_integer_noise_is_added_in_the_integer_domain() -> None:
    s = settings(error_feedback=False)
    delta = np.zeros(D, np.float32)
    out = encode_update(
        delta,
        residual=None,
        settings=s,
        rng=np.random.default_rng(0),
        integer_noise=lambda k: np.full(k, -3, np.int64),
        max_rounded_l2=1e9,
    )
    decoded = decode_sum(out.ring_values, count=1, settings=s, dimension=D)
    support = index_set(s.index_seed, D, 100)
    assert np.allclose(decoded[support], -3 / s.scale) and not np.delete(decoded, support).any()
    with pytest.raises(ValueError, match="integer_noise must return an int64 array of length k"):
        encode_update(
            delta,
            residual=None,
            settings=s,
            rng=np.random.default_rng(0),
            integer_noise=lambda k: np.zeros(k),
            max_rounded_l2=1e9,
        )
    with pytest.raises(ValueError, match="max_rounded_l2"):  # noise without the accounted sensitivity
        encode_update(
            delta,
            residual=None,
            settings=s,
            rng=np.random.default_rng(0),
            integer_noise=lambda k: np.full(k, -3, np.int64),
        )


def test_non_finite_update_is_a_privacy_error() -> None:
    delta = np.ones(D, np.float32)
    delta[5] = np.nan
    with pytest.raises(PrivacyError, match="update contains non-finite values"):
        encode_update(delta, residual=None, settings=settings(), rng=np.random.default_rng(0))


def test_decode_sum_checks_shape_and_ring_capacity() -> None:
    s = settings(quant_bits=12, ring_bits=16)
    with pytest.raises(ValueError, match="ring_sum must be a uint32 array of length k"):
        decode_sum(np.zeros(99, np.uint32), count=1, settings=s, dimension=D)
    with pytest.raises(ValueError, match="ring_sum must be a uint32 array of length k"):
        decode_sum(np.zeros(100, np.int64), count=1, settings=s, dimension=D)
    decode_sum(np.zeros(100, np.uint32), count=16, settings=s, dimension=D)  # 16 * 2047 < 2^15 fits
    with pytest.raises(ConfigError, match="ring_bits too small for this many summands"):
        decode_sum(np.zeros(100, np.uint32), count=17, settings=s, dimension=D)  # 17 * 2047 >= 2^15


def test_sum_of_two_updates_with_rotation() -> None:
    s = settings(rotate=True, scale=default_scale(1.0, 12, 100, rotate=True))
    rng = np.random.default_rng(3)
    deltas = [rng.normal(size=D).astype(np.float32) * 0.01 for _ in range(2)]
    encoded = [encode_update(d, residual=None, settings=s, rng=rng) for d in deltas]
    total = decode_sum(
        ring_sum(np.stack([e.ring_values for e in encoded]), 24), count=2, settings=s, dimension=D
    )
    support = index_set(s.index_seed, D, 100)
    expected = sum(l2_clip(d, 1.0)[0] for d in deltas)
    assert np.linalg.norm(total[support] - expected[support]) <= 2 * np.sqrt(100) / s.scale


def test_uplink_bytes_example_of_the_docs() -> None:
    s = settings(keep_fraction=0.01, ring_bits=16, quant_bits=8)
    size = uplink_payload_bytes(1_000_000, s)
    assert size.payload_bytes == 10_000 * 16 // 8 == 20_000
    assert size.dense_fp32_bytes == 4_000_000
    assert uplink_payload_bytes(1000, settings(ring_bits=13)).payload_bytes == 82  # ceil(50 * 13 / 8)


def test_codec_chain_is_carried_in_a_frame_header() -> None:
    s = settings(rotate=True)
    steps = [step["step"] for step in codec_chain(s)]
    assert steps == [
        "residual_add",
        "l2_clip",
        "random_k",
        "hadamard_rotation",
        "stochastic_round",
        "ring",
        "bit_pack",
    ]
    text = codec_chain_text(s)
    assert "ring_bits=24" in text and (b"\x11" * 32).hex() not in text
    assert f"random_k(sparsity_fraction={s.keep_fraction})" in text  # the wire key (WIRE_KEYS)
    FrameHeader("f", 1, "d", 14, 0, text)  # type: ignore[arg-type]


def test_conditional_rounding_keeps_the_accounted_l2_bound() -> None:
    """Skellam accounting assumes ||rounded update||_2 <= rounded_l2_bound (AKL21 §4): always enforced."""
    from fl_protocol.codec.quantize import from_ring
    from fl_protocol.codec.settings import CodecSettings, default_scale, sparse_count
    from fl_protocol.dp.mechanisms import ROUNDING_BETA, rounded_l2_bound
    from fl_protocol.errors import PrivacyError

    d, clip = 512, 1.0
    k = sparse_count(d, 1.0)
    settings = CodecSettings(
        clip_norm=clip,
        keep_fraction=1.0,
        index_seed=b"\x01" * 32,
        rotate=True,
        rotation_seed=b"\x02" * 32,
        quant_bits=12,
        ring_bits=24,
        scale=default_scale(clip, 12, k, rotate=True),
        error_feedback=False,
    )
    bound = rounded_l2_bound(clip_norm=clip, scale=settings.scale, dim=k, beta=ROUNDING_BETA)
    for seed in range(20):
        delta = np.random.default_rng(seed).normal(size=d).astype(np.float32)  # norm >> clip: clipped to C
        encoded = encode_update(
            delta, residual=None, settings=settings, rng=np.random.default_rng(seed), max_rounded_l2=bound
        )
        ints = from_ring(encoded.ring_values, settings.ring_bits).astype(np.float64)
        assert np.linalg.norm(ints) <= bound
    with pytest.raises(PrivacyError, match="conditional rounding"):
        encode_update(
            delta,
            residual=None,
            settings=settings,
            rng=np.random.default_rng(0),
            max_rounded_l2=0.5 * clip * settings.scale,
        )


def test_weighted_updates_carry_their_weight_inside_the_sum() -> None:
    """(w·Δ, w) per device: the decoded sums are Σ w·clip(Δ) and Σ w (docs/update-codec.md)."""
    from fl_protocol.codec import decode_weighted_sum, encoded_length
    from fl_protocol.codec.quantize import ring_sum
    from fl_protocol.codec.settings import CodecSettings, default_scale

    d, clip = 256, 1.0
    settings = CodecSettings(
        clip_norm=clip,
        keep_fraction=1.0,
        index_seed=b"\x03" * 32,
        rotate=False,
        rotation_seed=b"\x04" * 32,
        quant_bits=14,
        ring_bits=24,
        scale=default_scale(clip, 14, d, rotate=False),
        error_feedback=False,
    )
    rng = np.random.default_rng(7)
    deltas = [rng.normal(0, 0.02, d).astype(np.float32) for _ in range(5)]
    weights = [1.0, 0.5, 0.25, 0.8, 0.1]
    encoded = [
        encode_update(x, residual=None, settings=settings, rng=np.random.default_rng(i), weight=w)
        for i, (x, w) in enumerate(zip(deltas, weights, strict=True))
    ]
    assert all(e.ring_values.shape == (encoded_length(d, settings, weighted=True),) for e in encoded)
    total = ring_sum([e.ring_values for e in encoded], settings.ring_bits)
    vector_sum, weight_sum = decode_weighted_sum(total, count=5, settings=settings, dimension=d)
    assert weight_sum == pytest.approx(sum(weights), abs=5 / settings.max_quantized)
    expected = sum(w * x for w, x in zip(weights, deltas, strict=True))  # all within the clip norm
    np.testing.assert_allclose(vector_sum, expected, atol=5 * 2 / settings.scale)
    with pytest.raises(ValueError, match="weight must be in"):
        encode_update(deltas[0], residual=None, settings=settings, rng=rng, weight=1.5)
