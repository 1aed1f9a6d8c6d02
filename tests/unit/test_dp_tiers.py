"""Sensitivity tiers: defaults, TOML loading, device-side refusal with a reason."""

from __future__ import annotations

import math

import pytest

from fl_protocol.dp.tiers import TierConfig, TierPolicy, check_round_against_tier
from fl_protocol.errors import ConfigError, PrivacyError

HEALTH = TierPolicy(
    name="health", max_clip_norm=0.5, min_noise_multiplier=1.0, epsilon_budget=3.0, delta=1e-6
)


def test_defaults_cover_three_tiers_and_are_ordered() -> None:
    cfg = TierConfig()
    public, personal, health = (cfg.policy(n) for n in ("public", "personal", "health"))
    assert public.max_clip_norm >= personal.max_clip_norm >= health.max_clip_norm
    assert public.min_noise_multiplier <= personal.min_noise_multiplier <= health.min_noise_multiplier
    assert public.epsilon_budget >= personal.epsilon_budget >= health.epsilon_budget


def test_acceptable_round_passes() -> None:
    check_round_against_tier(
        HEALTH, clip_norm=0.5, noise_multiplier=1.0, round_epsilon=0.5, spent_epsilon=2.5
    )


def test_clip_above_maximum_is_refused_with_reason() -> None:
    with pytest.raises(PrivacyError, match=r"tier 'health'.*clip_norm 0\.8 exceeds .*max_clip_norm=0\.5"):
        check_round_against_tier(
            HEALTH, clip_norm=0.8, noise_multiplier=1.2, round_epsilon=0.1, spent_epsilon=0
        )


def test_noise_below_minimum_is_refused_with_reason() -> None:
    with pytest.raises(
        PrivacyError, match=r"tier 'health'.*noise_multiplier 0\.7 is below .*min_noise_multiplier=1"
    ):
        check_round_against_tier(
            HEALTH, clip_norm=0.1, noise_multiplier=0.7, round_epsilon=0.1, spent_epsilon=0
        )


def test_budget_overrun_is_refused_with_reason() -> None:
    with pytest.raises(PrivacyError, match=r"tier 'health'.*epsilon budget.*epsilon_budget=3"):
        check_round_against_tier(
            HEALTH, clip_norm=0.5, noise_multiplier=1.0, round_epsilon=0.6, spent_epsilon=2.5
        )


def test_all_broken_rules_are_named() -> None:
    with pytest.raises(PrivacyError, match="tier 'health': refused, clip_norm 1 exceeds the tier") as info:
        check_round_against_tier(
            HEALTH, clip_norm=1.0, noise_multiplier=0.1, round_epsilon=9.0, spent_epsilon=0
        )
    message = str(info.value)
    assert "max_clip_norm" in message and "min_noise_multiplier" in message and "epsilon_budget" in message


@pytest.mark.parametrize("value", [math.nan, -1.0, math.inf])
def test_non_finite_or_negative_settings_are_refused(value: float) -> None:
    with pytest.raises(PrivacyError, match="tier 'health'"):
        check_round_against_tier(
            HEALTH, clip_norm=0.1, noise_multiplier=1.0, round_epsilon=value, spent_epsilon=0
        )


def test_public_tier_has_no_budget() -> None:
    public = TierConfig().policy("public")
    check_round_against_tier(
        public, clip_norm=1.0, noise_multiplier=0.0, round_epsilon=1e6, spent_epsilon=1e9
    )


def test_load_from_toml_overrides_and_adds() -> None:
    tomllib = pytest.importorskip("tomllib")  # stdlib from Python 3.11
    text = """
    [tiers.health]
    epsilon_budget = 1.5

    [tiers.finance]
    max_clip_norm = 0.3
    min_noise_multiplier = 1.5
    epsilon_budget = 2.0
    delta = 1e-7
    """
    cfg = TierConfig.from_toml_dict(tomllib.loads(text)["tiers"])
    assert cfg.policy("health").epsilon_budget == 1.5
    assert cfg.policy("health").max_clip_norm == TierConfig().policy("health").max_clip_norm
    assert cfg.policy("finance") == TierPolicy(
        name="finance", max_clip_norm=0.3, min_noise_multiplier=1.5, epsilon_budget=2.0, delta=1e-7
    )
    assert cfg.policy("public") == TierConfig().policy("public")


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ({"health": {"max_clip": 1.0}}, r"health: unknown keys \['max_clip'\]"),
        ({"health": {"epsilon_budget": 1.0, "name": "x"}}, r"health: unknown keys \['name'\]"),
        ({"finance": {"max_clip_norm": 1.0}}, "finance: new tier must set"),  # missing fields
        ({"health": 3}, "privacy.tiers.health must be a table"),
        ({"health": {"delta": 2.0}}, r"delta must lie in \(0, 1\)"),
        ({"health": {"max_clip_norm": -1.0}}, "max_clip_norm must be > 0"),
        ({"health": {"min_noise_multiplier": "1"}}, "min_noise_multiplier must be a number"),
        ({"health": {"epsilon_budget": True}}, "epsilon_budget must be a number"),
    ],
)
def test_bad_toml_is_config_error(tiers: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TierConfig.from_toml_dict(tiers)


def test_unknown_tier_and_frozen_policy() -> None:
    with pytest.raises(ConfigError, match="unknown sensitivity tier"):
        TierConfig().policy("secret")
    with pytest.raises(AttributeError, match="cannot assign to field 'max_clip_norm'"):
        HEALTH.max_clip_norm = 9.0  # type: ignore[misc]


def _rounds_allowed(policy: TierPolicy, mechanism: str, *, quant_bits: int, k: int) -> int:
    """Rounds a fresh ledger accepts for `policy` at its own minimum noise and maximum clip."""
    from fl_protocol.codec.settings import default_scale
    from fl_protocol.dp import RdpAccountant
    from fl_protocol.dp.rounds import round_privacy_event

    scale = default_scale(policy.max_clip_norm, quant_bits, k, rotate=True)
    event = round_privacy_event(
        mechanism=mechanism,
        noise_multiplier=policy.min_noise_multiplier,
        clip_norm=policy.max_clip_norm,
        min_survivors=2,
        scale=scale,
        sparse_length=k,
    )
    assert event is not None
    accountant, rounds = RdpAccountant(), 0
    while True:
        accountant.record(event)
        if accountant.get_epsilon(delta=policy.delta) > policy.epsilon_budget:
            return rounds
        rounds += 1


@pytest.mark.parametrize("mechanism", ["gaussian", "skellam"])
def test_default_tiers_allow_the_documented_rounds_at_their_own_minimum_noise(mechanism: str) -> None:
    """Issue 11 finding 10: one round at 'health's minimum noise (z 1) cost ε 5.22 > its budget 3."""
    tiers = TierConfig()
    assert _rounds_allowed(tiers.policy("personal"), mechanism, quant_bits=8, k=65_536) == 22
    assert _rounds_allowed(tiers.policy("health"), mechanism, quant_bits=8, k=65_536) == 13
    if mechanism == "skellam":  # a coarse codec costs more: still usable
        assert _rounds_allowed(tiers.policy("personal"), mechanism, quant_bits=4, k=4096) == 17
        assert _rounds_allowed(tiers.policy("health"), mechanism, quant_bits=4, k=4096) == 10
