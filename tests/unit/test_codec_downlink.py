"""The compressed downlink's codec and wire message (fl_protocol/codec/downlink.py, GlobalModelDelta):
bit-exact reconstruction, the rounding bound, every width, odd lengths, zeros, refused inputs and hostile
frames."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from fl_protocol.codec.compress import compress_bytes, vector_sha256
from fl_protocol.codec.downlink import apply_delta, pack_values, quantize_delta, unpack_values
from fl_protocol.codec.pack import pack_uint, packed_bytes, unpack_uint
from fl_protocol.errors import ConfigError, DecodeError
from fl_protocol.wire.envelope import decode_message
from fl_protocol.wire.messages import GlobalModelDelta
from tests import wire_samples as ws

RNG_SEED = 20261130


def _pair(d: int, seed: int = RNG_SEED, scale: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=d).astype(np.float32)
    return base, rng.normal(size=d) * scale


def _message(base: np.ndarray, delta: np.ndarray, bits: int = 8, chunk: int = 256) -> GlobalModelDelta:
    quantized = quantize_delta(delta, bits=bits, chunk=chunk)
    result = apply_delta(base, quantized)
    return GlobalModelDelta.from_quantized(
        quantized,
        model_version=5,
        base_version=4,
        base_sha256=vector_sha256(base),
        model_sha256=vector_sha256(result),
    )


def _reference(base: np.ndarray, scales: np.ndarray, values: np.ndarray, chunk: int) -> np.ndarray:
    """The docstring's evaluation order, one float32 scalar operation at a time (no numpy arrays)."""
    out = np.empty_like(base)
    for i in range(base.shape[0]):
        step = np.float32(scales[i // chunk]) * np.float32(int(values[i]))
        out[i] = np.float32(base[i]) + np.float32(step)
    return out


@pytest.mark.parametrize("bits", range(2, 9))
def test_the_decoder_rebuilds_the_encoders_vector_bit_for_bit(bits: int) -> None:
    base, delta = _pair(1000)  # 1000 = 3 chunks of 256 and one of 232
    message = _message(base, delta, bits=bits)
    frame = ws.raw_frame(GlobalModelDelta, message.to_fields())
    _header, decoded = decode_message(frame, GlobalModelDelta, verify_key=ws.verify_key)
    rebuilt = decoded.apply(base)
    cloud = apply_delta(base, quantize_delta(delta, bits=bits))
    assert rebuilt.dtype == np.float32 and rebuilt.tobytes() == cloud.tobytes()
    quantized = decoded.quantized()
    reference = _reference(base, quantized.scales, quantized.values, 256)
    assert reference.tobytes() == rebuilt.tobytes()
    assert vector_sha256(rebuilt) == message.model_sha256
    qmax = (1 << (bits - 1)) - 1
    assert int(np.abs(quantized.values.astype(np.int32)).max()) == qmax  # absmax maps to ±qmax
    assert quantized.scales.shape == (4,) and quantized.values.shape == (1000,)


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("chunk", [1, 7, 256, 4096])
def test_every_value_is_within_half_a_step_of_its_chunk(bits: int, chunk: int) -> None:
    rng = np.random.default_rng(bits * 100 + chunk)
    delta = rng.standard_t(2, size=3001) * 1e-2  # heavy tails: chunks with very different scales
    quantized = quantize_delta(delta, bits=bits, chunk=chunk)
    per_value = np.repeat(quantized.scales.astype(np.float64), chunk)[: delta.size]
    error = np.abs(delta - per_value * quantized.values.astype(np.float64))
    assert np.all(error <= per_value / 2 * (1 + 1e-12))
    chunks = -(-delta.size // chunk)
    absmax = np.abs(np.pad(delta, (0, chunks * chunk - delta.size))).reshape(chunks, chunk).max(axis=1)
    qmax = (1 << (bits - 1)) - 1
    np.testing.assert_allclose(quantized.scales, absmax / qmax, rtol=2**-23)


def test_an_all_zero_delta_has_zero_scales_and_leaves_the_base_unchanged() -> None:
    base = np.linspace(0.5, 2.0, 300, dtype=np.float32)
    message = _message(base, np.zeros(300))
    quantized = message.quantized()
    assert not quantized.scales.any() and not quantized.values.any()
    assert message.apply(base).tobytes() == base.tobytes() and message.model_sha256 == vector_sha256(base)


def test_a_tiny_chunk_keeps_the_bound_and_mixed_chunks_keep_their_own_scale() -> None:
    delta = np.zeros(512)
    delta[3] = 1e-45  # its scale underflows float32: the smallest subnormal is used instead
    delta[300] = 5.0
    quantized = quantize_delta(delta, bits=4)
    assert quantized.scales[0] > 0 and quantized.scales[1] == np.float32(5.0 / 7)
    assert (
        abs(delta[3] - float(quantized.scales[0]) * int(quantized.values[3]))
        <= float(quantized.scales[0]) / 2
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_deltas_are_refused(bad: float) -> None:
    delta = np.zeros(10)
    delta[4] = bad
    with pytest.raises(ValueError, match="non-finite value in the downlink delta"):
        quantize_delta(delta)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bits": 1}, r"downlink bits must be an int in \[2, 8\]"),
        ({"bits": 9}, r"downlink bits must be an int in \[2, 8\]"),
        ({"chunk": 0}, r"chunk must be an int in \[1, 1048576\]"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        quantize_delta(np.ones(4), **kwargs)


def test_a_delta_beyond_float32_scales_and_a_wrong_base_are_refused() -> None:
    with pytest.raises(ValueError, match="too large for float32 scales"):
        quantize_delta(np.array([1e300, 0.0]))
    quantized = quantize_delta(np.ones(8))
    with pytest.raises(ValueError, match="float32 vector of length 8"):
        apply_delta(np.ones(8, np.float64), quantized)


def test_pack_uint_round_trips_every_width_and_refuses_bad_padding() -> None:
    rng = np.random.default_rng(1)
    for bits in range(1, 33):
        values = rng.integers(0, 2**bits, size=37, dtype=np.uint64).astype(np.uint32)
        packed = pack_uint(values, bits)
        assert len(packed) == packed_bytes(37, bits)
        assert np.array_equal(unpack_uint(packed, 37, bits), values)
    with pytest.raises(DecodeError, match="invalid message"):
        unpack_uint(b"\xff", 2, 3)  # 6 bits used: the two padding bits must be zero
    with pytest.raises(ValueError, match="value does not fit"):
        pack_uint(np.array([4], np.uint32), 2)


def _fields(message: GlobalModelDelta, **changes: Any) -> dict[str, Any]:
    return {**message.to_fields(), **changes}


def _hostile_bodies(message: GlobalModelDelta) -> dict[str, dict[str, Any]]:
    packed = message.packed_values
    raw_for_999 = pack_uint(np.zeros(999, np.uint32), 8)
    declares_huge = bytearray(compress_bytes(bytes(2048)))
    return {
        "truncated values": _fields(message, packed_values=packed[:-5]),
        "values for another length": _fields(message, packed_values=compress_bytes(raw_for_999)),
        "raw, not zstd": _fields(message, packed_values=pack_uint(np.zeros(1000, np.uint32), 8)),
        "trailing byte": _fields(message, packed_values=packed + b"\x00"),
        "huge declared dimension": _fields(message, dimension=2**27 - 1, scales=np.zeros(2**19, np.float32)),
        "one scale too few": _fields(message, scales=message.scales[:-1]),
        "negative scale": _fields(message, scales=-message.scales),
        "nan scale": _fields(message, scales=np.full(4, np.nan, np.float32)),
        "bits 9": _fields(message, bits=9),
        "base not older": _fields(message, base_version=5),
        "zstd declaring 2 KiB": _fields(message, packed_values=bytes(declares_huge)),
    }


@pytest.mark.parametrize(
    "name",
    [
        "truncated values",
        "values for another length",
        "raw, not zstd",
        "trailing byte",
        "huge declared dimension",
        "one scale too few",
        "negative scale",
        "nan scale",
        "bits 9",
        "base not older",
        "zstd declaring 2 KiB",
    ],
)
def test_hostile_frames_are_decode_errors(name: str) -> None:
    base, delta = _pair(1000)
    message = _message(base, delta)
    frame = ws.raw_frame(GlobalModelDelta, _hostile_bodies(message)[name])
    with pytest.raises(DecodeError, match="invalid message"):
        _header, decoded = decode_message(frame, GlobalModelDelta, verify_key=ws.verify_key)
        decoded.apply(base)  # a body the schema accepts still fails when its values are read


def test_a_truncated_frame_and_out_of_range_values_are_decode_errors() -> None:
    base, delta = _pair(1000)
    frame = ws.raw_frame(GlobalModelDelta, _message(base, delta).to_fields())
    with pytest.raises(DecodeError, match="invalid message"):
        decode_message(frame[:-100], GlobalModelDelta, verify_key=ws.verify_key)
    with pytest.raises(DecodeError, match="invalid message"):  # 2 bits: offsets 0..2, 3 is no value
        unpack_values(compress_bytes(pack_uint(np.array([0, 3], np.uint32), 2)), count=2, bits=2)


def test_a_delta_applies_only_to_its_base_and_only_to_its_result() -> None:
    base, delta = _pair(1000)
    message = _message(base, delta)
    other = base.copy()
    other[0] += 1
    with pytest.raises(DecodeError, match="invalid message"):
        message.apply(other)
    with pytest.raises(DecodeError, match="invalid message"):
        message.apply(base[:-1])
    flipped = message.quantized()
    values = flipped.values.copy()
    values[0] = -values[0] if values[0] else 1
    tampered = dataclasses.replace(flipped, values=values)
    forged = dataclasses.replace(message, packed_values=pack_values(tampered))
    with pytest.raises(DecodeError, match="invalid message"):
        forged.apply(base)


def test_construction_checks_name_the_rule() -> None:
    base, delta = _pair(300)
    message = _message(base, delta)
    with pytest.raises(ConfigError, match="scales must hold one value per chunk"):
        dataclasses.replace(message, chunk=100)
