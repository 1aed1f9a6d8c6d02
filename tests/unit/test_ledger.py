"""Privacy ledger: refuses rounds that break a tier, persists across restarts, never under-counts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from edge_runtime.ledger import PrivacyLedger
from fl_protocol.dp.tiers import TierConfig, TierPolicy
from fl_protocol.errors import ConfigError, PrivacyError

TIERS = TierConfig(
    {
        "public": TierPolicy(
            "public", max_clip_norm=10.0, min_noise_multiplier=0.0, epsilon_budget=math.inf, delta=1e-5
        ),
        "health": TierPolicy(
            "health", max_clip_norm=0.5, min_noise_multiplier=1.0, epsilon_budget=3.0, delta=1e-6
        ),
    }
)


def _ledger(path: Path) -> PrivacyLedger:
    return PrivacyLedger(path, TIERS, clock=lambda: 1000.0)


def test_charges_persist_across_restart(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    ledger = _ledger(path)
    first = ledger.charge(1, tier="health", clip_norm=0.5, noise_multiplier=2.0)
    assert first.round_epsilon > 0
    spent = ledger.spent_epsilon("health")
    reopened = _ledger(path)
    assert reopened.spent_epsilon("health") == pytest.approx(spent)
    assert reopened.charge_for(1) == first
    assert path.stat().st_mode & 0o777 == 0o600


def test_charge_is_idempotent_per_round(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "ledger.json")
    ledger.charge(7, tier="health", clip_norm=0.5, noise_multiplier=2.0)
    spent = ledger.spent_epsilon("health")
    # A restarted device resuming round 7 must not pay twice.
    again = _ledger(tmp_path / "ledger.json")
    again.charge(7, tier="health", clip_norm=0.5, noise_multiplier=2.0)
    assert again.spent_epsilon("health") == pytest.approx(spent)
    with pytest.raises(PrivacyError, match="already charged"):
        again.charge(7, tier="public", clip_norm=0.5, noise_multiplier=2.0)


def test_refuses_weaker_settings_than_tier_minimums(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "ledger.json")
    with pytest.raises(PrivacyError, match="health.*clip_norm 1 exceeds"):
        ledger.charge(1, tier="health", clip_norm=1.0, noise_multiplier=2.0)
    with pytest.raises(PrivacyError, match="noise_multiplier 0.5 is below"):
        ledger.charge(1, tier="health", clip_norm=0.5, noise_multiplier=0.5)
    assert ledger.charge_for(1) is None
    assert not (tmp_path / "ledger.json").exists()  # refused rounds write nothing


def test_refuses_round_that_would_exceed_budget(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "ledger.json")
    accepted = 0
    with pytest.raises(PrivacyError, match="epsilon budget"):
        for round_id in range(1, 500):
            ledger.charge(round_id, tier="health", clip_norm=0.5, noise_multiplier=4.0)
            accepted += 1
    assert accepted >= 1
    assert ledger.spent_epsilon("health") <= 3.0
    assert ledger.charge_for(accepted + 1) is None


def test_public_tier_without_noise_is_unbounded_but_allowed(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "ledger.json")
    ledger.charge(1, tier="public", clip_norm=5.0, noise_multiplier=0.0)
    assert ledger.spent_epsilon("public") == math.inf
    assert _ledger(tmp_path / "ledger.json").spent_epsilon("public") == math.inf


def test_crash_between_write_and_publish_never_undercounts(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    ledger = _ledger(path)
    ledger.charge(3, tier="health", clip_norm=0.5, noise_multiplier=2.0)
    # The process dies here, before publishing. On restart the round is still paid for.
    assert _ledger(path).charge_for(3) is not None
    # A torn write leaves the temp file, never a half-written ledger.
    (tmp_path / ".ledger.json.tmp").write_bytes(b"{garbage")
    assert _ledger(path).spent_epsilon("health") > 0


def test_unreadable_ledger_stops_training(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ConfigError, match="unreadable"):
        _ledger(path)
