"""Update codec pieces: settings rules, clip, index set, rotation, quantizer, ring map, packing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fl_protocol.codec.clip import l2_clip
from fl_protocol.codec.pack import pack_bits, packed_bytes, unpack_bits
from fl_protocol.codec.quantize import from_ring, ring_sum, stochastic_round, to_ring
from fl_protocol.codec.rotate import rotate, unrotate, walsh_hadamard
from fl_protocol.codec.settings import (
    CodecSettings,
    check_ring_bits,
    default_scale,
    required_ring_bits,
    sparse_count,
)
from fl_protocol.codec.sparsify import index_set
from fl_protocol.errors import ConfigError, DecodeError, PrivacyError

SEED_A = bytes(range(32))
SEED_B = bytes(range(1, 33))


def settings(**overrides: object) -> CodecSettings:
    values: dict[str, object] = {
        "clip_norm": 1.0,
        "keep_fraction": 0.1,
        "index_seed": SEED_A,
        "rotate": False,
        "rotation_seed": SEED_B,
        "quant_bits": 8,
        "ring_bits": 16,
        "scale": 127.0,
        "error_feedback": False,
    }
    return CodecSettings(**{**values, **overrides})  # type: ignore[arg-type]


def test_settings_validation_and_repr_hides_seeds() -> None:
    s = settings()
    assert SEED_A.hex() not in repr(s) and "index_seed" not in repr(s)
    assert CodecSettings.from_fields(s.to_fields()) == s
    for bad, message in (
        ({"clip_norm": 0.0}, "clip_norm must be > 0"),
        ({"clip_norm": math.inf}, "clip_norm must be a finite number"),
        ({"keep_fraction": 0.0}, r"keep_fraction must be in \(0, 1\]"),
        ({"keep_fraction": 1.5}, r"keep_fraction must be in \(0, 1\]"),
        ({"index_seed": b"short"}, "index_seed must be 32 bytes"),
        ({"ring_bits": 7}, r"ring_bits must be an int in \[8, 32\]"),
        ({"ring_bits": 33}, r"ring_bits must be an int in \[8, 32\]"),
        ({"quant_bits": 17}, r"quant_bits must be an int in \[2, ring_bits\]"),  # more than ring_bits
        ({"quant_bits": 1}, r"quant_bits must be an int in \[2, ring_bits\]"),
        ({"rotate": 1}, "rotate must be a bool"),
        ({"scale": -1.0}, "scale must be > 0"),
    ):
        with pytest.raises(ConfigError, match=message):
            settings(**bad)
    with pytest.raises(ConfigError, match="codec settings keys differ from the format"):
        CodecSettings.from_fields({**s.to_fields(), "extra": 1})


def test_keep_fraction_travels_under_its_legacy_wire_key() -> None:
    """The fraction kept keeps the wire key `sparsity_fraction` (docs/wire-format.md, "Legacy key names")."""
    s = settings(keep_fraction=0.25)
    wire = s.to_fields()
    assert wire["sparsity_fraction"] == 0.25 and "keep_fraction" not in wire
    assert CodecSettings.from_fields(wire) == s
    renamed = {("keep_fraction" if k == "sparsity_fraction" else k): v for k, v in wire.items()}
    with pytest.raises(ConfigError, match="keys differ from the format"):
        CodecSettings.from_fields(renamed)


def test_ring_bits_rule() -> None:
    assert required_ring_bits(8, 1, 0) == 8
    assert required_ring_bits(8, 100, 3) == 8 + 7 + 3
    assert required_ring_bits(8, 128, 0) == 15
    check_ring_bits(settings(ring_bits=16), max_clients=256, noise_headroom_bits=0)
    with pytest.raises(ConfigError, match="ring_bits=16 < 17 needed for quant_bits=8, 257 clients and"):
        check_ring_bits(settings(ring_bits=16), max_clients=257, noise_headroom_bits=0)


def test_sparse_count() -> None:
    assert sparse_count(1_000_000, 0.01) == 10_000
    assert sparse_count(10, 0.01) == 1
    assert sparse_count(10, 1.0) == 10


def test_default_scale_without_rotation_never_clamps() -> None:
    scale = default_scale(2.0, 8, 100, rotate=False)
    x = np.zeros(100)
    x[3] = -2.0  # all the norm on one coordinate: the worst case
    _, clamped = stochastic_round(x, scale=scale, quant_bits=8, rng=np.random.default_rng(0))
    assert clamped == 0


def test_default_scale_with_rotation_rarely_clamps() -> None:
    k = 1000
    scale = default_scale(1.0, 8, k, rotate=True, clamp_probability=1e-3)
    assert scale > default_scale(1.0, 8, k, rotate=False)
    rng = np.random.default_rng(1)
    clamped_vectors = 0
    for trial in range(50):
        x = np.zeros(k)
        x[trial] = 1.0  # spiky inputs are the hard case; the rotation must spread them
        _, clamped = stochastic_round(rotate(x, bytes([trial]) * 32), scale=scale, quant_bits=8, rng=rng)
        clamped_vectors += clamped > 0
    assert clamped_vectors == 0  # P(any clamp in 50 trials) <= 50 * 1e-3 by the union bound


def test_clip() -> None:
    x = np.array([3.0, 4.0])
    clipped, norm = l2_clip(x, 1.0)
    assert norm == 5.0 and np.linalg.norm(clipped) <= 1.0
    assert np.allclose(clipped, [0.6, 0.8])
    zero, zero_norm = l2_clip(np.zeros(4), 1.0)
    assert zero_norm == 0.0 and not zero.any()
    for bad in (np.array([np.nan, 1.0]), np.array([np.inf])):
        with pytest.raises(PrivacyError, match="update contains non-finite values"):
            l2_clip(bad, 1.0)
    with pytest.raises(PrivacyError, match="update norm overflows"):
        l2_clip(np.array([1e308, 1e308]), 1.0)  # norm overflows to inf


def test_index_set_is_shared_sorted_and_seed_dependent() -> None:
    a = index_set(SEED_A, 1000, 50)
    assert a.shape == (50,) and np.all(np.diff(a) > 0) and a[0] >= 0 and a[-1] < 1000
    assert np.array_equal(a, index_set(bytes(SEED_A), 1000, 50))
    assert not np.array_equal(a, index_set(SEED_B, 1000, 50))
    assert np.array_equal(index_set(SEED_A, 7, 7), np.arange(7))
    assert a.flags.writeable is False
    with pytest.raises(ValueError, match="need 1 <= k <= dimension"):
        index_set(SEED_A, 10, 11)


def test_index_set_is_uniform() -> None:
    # Each coordinate of d=200 is picked with probability k/d = 0.1 per seed; over 400 seeds the count is
    # Binomial(400, 0.1): mean 40, sd 6. All 200 counts within 40 +- 30 (5 sd) fails with prob < 1e-4.
    counts = np.zeros(200)
    for i in range(400):
        counts[index_set(i.to_bytes(32, "little"), 200, 20)] += 1
    assert np.all(np.abs(counts - 40) < 30)


def test_walsh_hadamard_matches_the_matrix_definition() -> None:
    n = 8
    h = np.array([[(-1) ** bin(i & j).count("1") for j in range(n)] for i in range(n)]) / math.sqrt(n)
    x = np.arange(n, dtype=np.float64)
    assert np.allclose(walsh_hadamard(x), h @ x)
    with pytest.raises(ValueError, match="length must be a power of two"):
        walsh_hadamard(np.zeros(6))


def test_rotation_spreads_a_spike() -> None:
    x = np.zeros(1000)
    x[0] = 1.0
    y = rotate(x, SEED_B)
    assert np.max(np.abs(y)) <= 1.0 / math.sqrt(512) * 1.0000001
    assert np.allclose(unrotate(y, SEED_B), x)


def test_ring_map_centres() -> None:
    values = np.array([-3, -1, 0, 1, 2**15 - 1, -(2**15)])
    ring = to_ring(values, 16)
    assert ring.dtype == np.uint32 and ring.max() < 2**16
    assert np.array_equal(from_ring(ring, 16), values)
    assert np.array_equal(from_ring(ring_sum(np.stack([ring, ring]), 16), 16)[:3], [-6, -2, 0])
    assert np.array_equal(from_ring(to_ring(values, 32), 32), values)


@pytest.mark.parametrize("ring_bits", range(8, 33))
def test_pack_round_trip_every_ring_width(ring_bits: int) -> None:
    rng = np.random.default_rng(ring_bits)
    for count in (0, 1, 7, 100):
        values = rng.integers(0, 2**ring_bits, size=count, dtype=np.uint64).astype(np.uint32)
        if count:
            values[0] = 2**ring_bits - 1  # the all-ones extreme
        packed = pack_bits(values, ring_bits)
        assert len(packed) == packed_bytes(count, ring_bits) == math.ceil(count * ring_bits / 8)
        assert np.array_equal(unpack_bits(packed, count, ring_bits), values)


def test_pack_rejects_and_unpack_is_strict() -> None:
    with pytest.raises(ValueError, match="value does not fit in ring_bits"):
        pack_bits(np.array([256], dtype=np.uint32), 8)
    with pytest.raises(ValueError, match="pack_bits expects a 1-D uint32 array"):
        pack_bits(np.array([1], dtype=np.int64), 8)
    packed = pack_bits(np.array([1, 2, 3], dtype=np.uint32), 12)
    with pytest.raises(DecodeError, match="invalid message"):
        unpack_bits(packed + b"\x00", 3, 12)
    with pytest.raises(DecodeError, match="invalid message"):
        unpack_bits(packed[:-1], 3, 12)
    padded = packed[:-1] + bytes([packed[-1] | 0x80])  # 36 bits used of 40: high padding bits must be 0
    with pytest.raises(DecodeError, match="invalid message"):
        unpack_bits(padded, 3, 12)
