"""Sensitivity tiers: the privacy rules a device applies to the data of each tier (docs/privacy.md §8).

Each local record carries a tier name. A tier's policy fixes what a device accepts for rounds that train
on that tier's data: the largest clip norm (a larger clip lets one device move the model further), the
smallest noise multiplier, and the tier's own (ε, δ) budget. The device ledger calls
`check_round_against_tier` before training and refuses the round with the reason it raises.

TOML shape (the `[privacy.tiers]` table of device.toml, already parsed with tomllib):

    [privacy.tiers.health]
    max_clip_norm = 0.5
    min_noise_multiplier = 6.0
    epsilon_budget = 3.0
    delta = 1e-6

A table for a built-in tier ('public', 'personal', 'health') overrides only the fields it names; a new
tier must name all four. Unknown keys are a ConfigError.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fl_protocol.errors import ConfigError, PrivacyError

_POLICY_FIELDS = ("max_clip_norm", "min_noise_multiplier", "epsilon_budget", "delta")


@dataclass(frozen=True, kw_only=True)
class TierPolicy:
    """Privacy rules of one sensitivity tier.

    max_clip_norm: a device refuses a round whose L2 clip norm is larger.
    min_noise_multiplier: a device refuses a round whose noise multiplier (summed noise std / clip) is
        smaller.
    epsilon_budget: total ε the tier's data may ever spend, at `delta` (inf: no limit, e.g. public data).
    delta: the δ at which this tier's ε is accounted.
    """

    name: str
    max_clip_norm: float
    min_noise_multiplier: float
    epsilon_budget: float
    delta: float

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("tier name must be a non-empty string")
        for key in _POLICY_FIELDS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise ConfigError(f"tier '{self.name}': {key} must be a number, got {value!r}")
        if not self.max_clip_norm > 0:
            raise ConfigError(f"tier '{self.name}': max_clip_norm must be > 0, got {self.max_clip_norm}")
        if not (math.isfinite(self.min_noise_multiplier) and self.min_noise_multiplier >= 0):
            raise ConfigError(
                f"tier '{self.name}': min_noise_multiplier must be finite and >= 0, "
                f"got {self.min_noise_multiplier}"
            )
        if not self.epsilon_budget >= 0:
            raise ConfigError(f"tier '{self.name}': epsilon_budget must be >= 0, got {self.epsilon_budget}")
        if not 0.0 < self.delta < 1.0:
            raise ConfigError(f"tier '{self.name}': delta must lie in (0, 1), got {self.delta}")


#: Built-in tiers. Each budget allows a useful number of rounds at the tier's own minimum noise (issue 11
#: finding 10: 'health' used to exceed its budget in one round at its minimum noise). Rounds allowed at
#: the minimum noise, either mechanism, default codec (8-bit, rotation, k = 65,536; `tests/unit/
#: test_dp_tiers.py` checks them): personal 22 (z 3, ε 8, δ 1e-5), health 13 (z 6, ε 3, δ 1e-6);
#: with a coarse 4-bit codec at k = 4,096, Skellam allows 17 and 10. Twice the noise allows ~4× the rounds.
DEFAULT_TIERS: tuple[TierPolicy, ...] = (
    TierPolicy(
        name="public", max_clip_norm=10.0, min_noise_multiplier=0.0, epsilon_budget=math.inf, delta=1e-5
    ),
    TierPolicy(name="personal", max_clip_norm=1.0, min_noise_multiplier=3.0, epsilon_budget=8.0, delta=1e-5),
    TierPolicy(name="health", max_clip_norm=0.5, min_noise_multiplier=6.0, epsilon_budget=3.0, delta=1e-6),
)


@dataclass(frozen=True, kw_only=True)
class TierConfig:
    """Tier name → policy. `TierConfig()` holds the defaults for 'public', 'personal' and 'health'."""

    policies: Mapping[str, TierPolicy] = field(default_factory=lambda: {p.name: p for p in DEFAULT_TIERS})

    def __post_init__(self) -> None:
        for name, policy in self.policies.items():
            if policy.name != name:
                raise ConfigError(f"tier key '{name}' does not match policy name '{policy.name}'")
        object.__setattr__(self, "policies", dict(self.policies))

    def policy(self, name: str) -> TierPolicy:
        """The policy of tier `name`; ConfigError if the tier is not configured."""
        try:
            return self.policies[name]
        except KeyError:
            raise ConfigError(f"unknown sensitivity tier '{name}' (known: {sorted(self.policies)})") from None

    @classmethod
    def from_toml_dict(cls, tiers: Mapping[str, Any]) -> TierConfig:
        """Build from the parsed `[privacy.tiers]` table, starting from the defaults (see module doc)."""
        if not isinstance(tiers, Mapping):
            raise ConfigError("privacy.tiers must be a table")
        policies = {p.name: p for p in DEFAULT_TIERS}
        for name, table in tiers.items():
            if not isinstance(table, Mapping):
                raise ConfigError(f"privacy.tiers.{name} must be a table")
            unknown = sorted(set(table) - set(_POLICY_FIELDS))
            if unknown:
                raise ConfigError(
                    f"privacy.tiers.{name}: unknown keys {unknown} (allowed: {list(_POLICY_FIELDS)})"
                )
            if name in policies:
                policies[name] = dataclasses.replace(policies[name], **dict(table))
            else:
                missing = sorted(set(_POLICY_FIELDS) - set(table))
                if missing:
                    raise ConfigError(f"privacy.tiers.{name}: new tier must set {missing}")
                policies[name] = TierPolicy(name=name, **dict(table))
        return cls(policies=policies)


def check_round_against_tier(
    policy: TierPolicy,
    *,
    clip_norm: float,
    noise_multiplier: float,
    round_epsilon: float,
    spent_epsilon: float,
) -> None:
    """Refuse (raise PrivacyError) a round that would break `policy`; return None if it is acceptable.

    `round_epsilon` is what this round adds to the tier's ε at `policy.delta` (the device ledger computes
    it with its accountant as ε_after − ε_before, or a per-round ε for basic composition); `spent_epsilon`
    is what the tier has spent so far. Every broken rule is named in the message, with the tier.
    """
    values = {
        "clip_norm": clip_norm,
        "noise_multiplier": noise_multiplier,
        "round_epsilon": round_epsilon,
        "spent_epsilon": spent_epsilon,
    }
    bad = [name for name, value in values.items() if not (math.isfinite(value) and value >= 0)]
    if bad:
        raise PrivacyError(f"tier '{policy.name}': refused, {', '.join(bad)} must be finite and >= 0")
    reasons = []
    if clip_norm > policy.max_clip_norm:
        reasons.append(
            f"clip_norm {clip_norm:g} exceeds the tier maximum max_clip_norm={policy.max_clip_norm:g}"
        )
    if noise_multiplier < policy.min_noise_multiplier:
        reasons.append(
            f"noise_multiplier {noise_multiplier:g} is below the tier minimum "
            f"min_noise_multiplier={policy.min_noise_multiplier:g}"
        )
    if spent_epsilon + round_epsilon > policy.epsilon_budget:
        reasons.append(
            f"epsilon budget: spent {spent_epsilon:.4g} + this round {round_epsilon:.4g} would exceed "
            f"epsilon_budget={policy.epsilon_budget:g} at delta={policy.delta:g}"
        )
    if reasons:
        raise PrivacyError(f"tier '{policy.name}': refused, " + "; ".join(reasons))
