"""RdpAccountant: composition, preview, persistence round trip, malformed state."""

from __future__ import annotations

import json
import math

import pytest

from fl_protocol.dp import rdp
from fl_protocol.dp.accountant import RdpAccountant
from fl_protocol.errors import ConfigError


def test_composition_equals_repeated_steps() -> None:
    once = RdpAccountant()
    once.step(noise_multiplier=1.2, sample_rate=0.02, steps=30)
    many = RdpAccountant()
    for _ in range(30):
        many.step(noise_multiplier=1.2, sample_rate=0.02)
    assert many.steps == 30 and len(many.events) == 1  # consecutive equal events merge
    assert many.get_epsilon(delta=1e-5) == pytest.approx(once.get_epsilon(delta=1e-5), rel=1e-12)


def test_mixed_events_add_rdp() -> None:
    acc = RdpAccountant()
    acc.step(noise_multiplier=1.0, sample_rate=0.1, steps=5)
    acc.step_skellam(variance=400.0, l1_sensitivity=20.0, l2_sensitivity=5.0, steps=2)
    orders = rdp.DEFAULT_ORDERS
    expected = 5 * rdp.subsampled_gaussian_rdp(noise_multiplier=1.0, sample_rate=0.1) + 2 * rdp.skellam_rdp(
        variance=400.0, l1_sensitivity=20.0, l2_sensitivity=5.0
    )
    eps, order = acc.get_privacy_spent(delta=1e-5)
    assert eps == pytest.approx(rdp.rdp_to_epsilon(expected, delta=1e-5, orders=orders)[0])
    assert float(order).is_integer()  # Skellam only has integer orders


def test_subsampled_skellam_is_amplified() -> None:
    full, sampled = RdpAccountant(), RdpAccountant()
    full.step_skellam(variance=900.0, l1_sensitivity=30.0, l2_sensitivity=6.0, steps=10)
    sampled.step_skellam(variance=900.0, l1_sensitivity=30.0, l2_sensitivity=6.0, sample_rate=0.05, steps=10)
    assert sampled.get_epsilon(delta=1e-5) < full.get_epsilon(delta=1e-5)


def test_epsilon_after_previews_without_recording() -> None:
    acc = RdpAccountant()
    acc.step(noise_multiplier=1.0, sample_rate=0.1, steps=3)
    before = acc.get_epsilon(delta=1e-5)
    preview = acc.epsilon_after(delta=1e-5, noise_multiplier=1.0, sample_rate=0.1)
    assert acc.steps == 3 and acc.get_epsilon(delta=1e-5) == before
    acc.step(noise_multiplier=1.0, sample_rate=0.1)
    assert acc.get_epsilon(delta=1e-5) == pytest.approx(preview) and preview > before


def test_empty_accountant_spends_nothing() -> None:
    assert RdpAccountant().get_epsilon(delta=1e-5) == 0.0


def test_state_round_trip_through_json() -> None:
    acc = RdpAccountant()
    acc.step(noise_multiplier=0.9, sample_rate=0.05, steps=7)
    acc.step_skellam(variance=250.0, l1_sensitivity=12.0, l2_sensitivity=4.0, sample_rate=0.5)
    restored = RdpAccountant.from_dict(json.loads(json.dumps(acc.to_dict())))
    assert restored.events == acc.events
    assert restored.get_epsilon(delta=1e-6) == acc.get_epsilon(delta=1e-6)


def _state() -> dict:
    acc = RdpAccountant(orders=(2.0, 4.0))
    acc.step(noise_multiplier=1.0, sample_rate=0.1)
    return acc.to_dict()


EVENT_KEYS = r"gaussian event needs exactly \['noise_multiplier', 'sample_rate'\] and count"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.update(format="other"), "missing or wrong 'format'"),
        (lambda s: s.update(version=99), "unsupported version 99"),
        (lambda s: s.update(extra=1), r"unknown keys \['extra'\]"),
        (lambda s: s.update(orders=[0.5]), "orders must be a non-empty sequence of finite numbers > 1"),
        (lambda s: s.update(orders="2,4"), "'orders' must be a list of numbers"),
        (lambda s: s.update(events={}), "'events' must be a list"),
        (lambda s: s["events"][0].update(mechanism="laplace"), "event without a known 'mechanism'"),
        (lambda s: s["events"][0].update(count=0), "steps must be an int >= 1, got 0"),
        (lambda s: s["events"][0].update(count=True), "steps must be an int >= 1, got True"),
        (lambda s: s["events"][0].update(noise_multiplier="1"), "gaussian event has a non-numeric field"),
        (
            lambda s: s["events"][0].update(noise_multiplier=-1.0),
            "noise_multiplier must be a finite number > 0",
        ),
        (lambda s: s["events"][0].update(sample_rate=math.nan), r"sample_rate must lie in \[0, 1\], got nan"),
        (lambda s: s["events"][0].update(unknown=1), EVENT_KEYS),
        (lambda s: s["events"][0].pop("sample_rate"), EVENT_KEYS),
    ],
)
def test_malformed_state_is_a_config_error(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    state = _state()
    mutate(state)
    with pytest.raises(ConfigError, match=message):
        RdpAccountant.from_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"noise_multiplier": 0.0, "sample_rate": 0.1}, "noise_multiplier must be a finite number > 0"),
        ({"noise_multiplier": math.inf, "sample_rate": 0.1}, "noise_multiplier must be a finite number > 0"),
        ({"noise_multiplier": 1.0, "sample_rate": -0.1}, r"sample_rate must lie in \[0, 1\]"),
        ({"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 0}, "steps must be an int >= 1"),
    ],
)
def test_step_validates(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RdpAccountant().step(**kwargs)


def test_privacy_parameters_are_keyword_only() -> None:
    with pytest.raises(TypeError, match="takes 1 positional argument"):
        RdpAccountant().step(1.0, 0.1)  # type: ignore[misc]
