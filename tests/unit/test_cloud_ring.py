"""The ring-width rule (aggregator_gateway/cloud/ring.py): a given ring must hold the cohort's sum plus its
summed DP noise, and `smallest_ring_bits` (what `[codec] ring_bits = 0` means) is the smallest that does."""

from __future__ import annotations

import math

import pytest

from aggregator_gateway.cloud.ring import check_ring_holds_noise, ring_need, smallest_ring_bits
from fl_protocol.errors import ConfigError


def _noise_bits(sigma: float) -> int:
    """ceil(log2(12 σ + 1)) + 1, 0 without noise (docs/update-codec.md, "Ring bits"), written out here."""
    return 0 if sigma == 0 else math.ceil(math.log2(12 * sigma + 1)) + 1


def test_ring_must_hold_the_noise() -> None:
    kw = {"quant_bits": 8, "min_survivors": 20, "noise_multiplier": 1.0, "clip_norm": 1.0, "scale": 4543.8}
    check_ring_holds_noise(ring_bits=32, max_clients=40, **kw)  # 8 + 6 + 18 bits
    with pytest.raises(ConfigError, match="bits of DP noise"):
        check_ring_holds_noise(ring_bits=20, max_clients=100, **kw)
    with pytest.raises(ConfigError, match="bits of DP noise"):  # 2^20 survivors: more noise, more values
        check_ring_holds_noise(ring_bits=32, max_clients=1 << 20, **kw)


@pytest.mark.parametrize(
    ("quant_bits", "clients", "expected"),
    [(7, 4, 9), (7, 100, 14), (7, 128, 14), (7, 129, 15), (8, 16_384, 22), (2, 2, 8), (3, 1, 8)],
)
def test_without_dp_the_smallest_ring_is_q_plus_log2_n(quant_bits: int, clients: int, expected: int) -> None:
    """max(8, q + ceil(log2 n)): the sum of n values in ±(2^(q-1) - 1) fits, and 8 is the narrowest ring."""
    bits = smallest_ring_bits(
        quant_bits=quant_bits,
        max_clients=clients,
        min_survivors=1,
        noise_multiplier=0.0,
        clip_norm=1.0,
        scale=63.0,
    )
    assert bits == expected == max(8, quant_bits + math.ceil(math.log2(clients)))


def test_skellam_noise_needs_more_bits_and_the_result_is_the_smallest_accepted() -> None:
    kw = {"quant_bits": 7, "max_clients": 16, "min_survivors": 2, "clip_norm": 1.0, "scale": 218.0}
    quiet = smallest_ring_bits(noise_multiplier=0.0, **kw)
    noisy = smallest_ring_bits(noise_multiplier=1.1, **kw)
    sigma = 1.1 * 1.0 * 218.0 * math.sqrt(16 / 2)
    assert quiet == 11 and noisy == 7 + 4 + _noise_bits(sigma) == 25
    need = ring_need(noise_multiplier=1.1, **kw)
    assert (need.clients, need.noise_bits, need.bits) == (16, _noise_bits(sigma), 25)
    assert need.noise_stddev == pytest.approx(sigma)
    check_ring_holds_noise(ring_bits=noisy, noise_multiplier=1.1, **kw)  # what the cloud's check accepts ...
    with pytest.raises(ConfigError, match=r"ring_bits=24 < 25 needed"):  # ... and one bit fewer it refuses
        check_ring_holds_noise(ring_bits=noisy - 1, noise_multiplier=1.1, **kw)


def test_fewer_clients_than_min_survivors_count_as_min_survivors() -> None:
    need = ring_need(
        quant_bits=7, max_clients=1, min_survivors=4, noise_multiplier=0.0, clip_norm=1.0, scale=63.0
    )
    assert (need.clients, need.bits) == (4, 9)


def test_no_ring_fits_is_a_one_line_config_error_naming_the_settings() -> None:
    with pytest.raises(
        ConfigError, match=r"no ring of at most 32 bits holds 16384 clients' 7-bit values"
    ) as info:
        smallest_ring_bits(
            quant_bits=7,
            max_clients=16_384,
            min_survivors=2,
            noise_multiplier=3.0,
            clip_norm=1.0,
            scale=63.0,
            remedy="set [cloud].total_devices",
        )
    message = str(info.value)
    assert "noise multiplier 3" in message and message.endswith("set [cloud].total_devices")
    assert "\n" not in message
    with pytest.raises(ConfigError, match="no ring of at most 32 bits"):  # no noise, but 30 + 4 bits
        smallest_ring_bits(
            quant_bits=30, max_clients=16, min_survivors=2, noise_multiplier=0.0, clip_norm=1.0, scale=1.0
        )
