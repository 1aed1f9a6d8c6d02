"""The device's privacy ledger: per-tier ε spent, persisted atomically, checked before every round.

The device, not the operator, is the last line of defence for its users' data. Before it trains on a tier
it checks the round's clip and noise settings against the tier's minimums and the ε the round would add
against the tier's budget, and refuses with a reason otherwise. The charge is written to disk (atomic
rename, fsynced) BEFORE the masked update leaves the device: a crash between the write and the publish
over-counts ε, never under-counts it. Charging is idempotent per round, so a restarted device that
resumes a round does not pay twice.

Accounting: each round a device takes part in is one release of the Gaussian mechanism on its clipped
update with the cohort sum's noise multiplier (the noise every surviving device's share adds up to,
guaranteed when at least `min_survivors` remain). The device does not know the cloud's sampling, so it
assumes it was sampled with probability 1 (no amplification): its own ε is an upper bound of the cloud's.
Rounds compose under RDP per tier.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fl_protocol.atomic_file import write_atomic
from fl_protocol.dp.accountant import RdpAccountant
from fl_protocol.dp.tiers import TierConfig, check_round_against_tier
from fl_protocol.errors import ConfigError, PrivacyError

logger = logging.getLogger(__name__)

LEDGER_FORMAT = "fedlora-privacy-ledger"
LEDGER_VERSION = 1
DEVICE_SAMPLE_RATE = 1.0  # see module docstring: no amplification is claimed on the device


@dataclass(frozen=True)
class RoundCharge:
    """What one round cost a tier, as recorded on disk."""

    round_id: int
    tier: str
    clip_norm: float
    noise_multiplier: float
    round_epsilon: float
    epsilon_after: float
    charged_at_s: float


class PrivacyLedger:
    """Per-tier accountants plus the rounds already charged, stored in one JSON file."""

    def __init__(self, path: Path, tiers: TierConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._path = Path(path)
        self._tiers = tiers
        self._clock = clock
        self._accountants: dict[str, RdpAccountant] = {}
        self._charges: dict[int, RoundCharge] = {}
        self._unbounded: set[str] = set()  # tiers that released a round without noise: ε is infinite
        if self._path.exists():
            self._load()

    def _accountant(self, tier: str) -> RdpAccountant:
        self._tiers.policy(tier)  # unknown tier -> ConfigError
        return self._accountants.setdefault(tier, RdpAccountant())

    def spent_epsilon(self, tier: str) -> float:
        """ε the tier has spent so far at its own δ (0 before the first round)."""
        accountant = self._accountant(tier)
        if tier in self._unbounded:
            return float("inf")
        if accountant.steps == 0:
            return 0.0
        return accountant.get_epsilon(delta=self._tiers.policy(tier).delta)

    def charge_for(self, round_id: int) -> RoundCharge | None:
        """The recorded charge of `round_id`, if this device already paid for it."""
        return self._charges.get(int(round_id))

    def check(self, *, tier: str, clip_norm: float, noise_multiplier: float) -> tuple[float, float]:
        """Return (round ε, ε after) for a prospective round, or raise PrivacyError saying why not."""
        policy = self._tiers.policy(tier)
        spent = self.spent_epsilon(tier)
        if noise_multiplier <= 0 or spent == float("inf"):
            after = float("inf")
        else:
            after = self._accountant(tier).epsilon_after(
                delta=policy.delta, noise_multiplier=noise_multiplier, sample_rate=DEVICE_SAMPLE_RATE
            )
        check_round_against_tier(
            policy,
            clip_norm=clip_norm,
            noise_multiplier=noise_multiplier,
            round_epsilon=_finite(after - spent if after != spent else 0.0),
            spent_epsilon=_finite(spent),
        )
        return after - spent if after != spent else 0.0, after

    def charge(self, round_id: int, *, tier: str, clip_norm: float, noise_multiplier: float) -> RoundCharge:
        """Check and record the round, durably, before its update is released. Idempotent per round."""
        existing = self._charges.get(int(round_id))
        if existing is not None:
            if existing.tier != tier:
                raise PrivacyError(
                    f"round {round_id} was already charged to tier '{existing.tier}', not '{tier}'"
                )
            return existing
        round_epsilon, after = self.check(tier=tier, clip_norm=clip_norm, noise_multiplier=noise_multiplier)
        if noise_multiplier > 0:
            self._accountant(tier).step(noise_multiplier=noise_multiplier, sample_rate=DEVICE_SAMPLE_RATE)
        else:
            self._unbounded.add(tier)
        charge = RoundCharge(
            int(round_id),
            tier,
            float(clip_norm),
            float(noise_multiplier),
            float(round_epsilon),
            float(after),
            float(self._clock()),
        )
        self._charges[charge.round_id] = charge
        self._save()
        logger.info("privacy ledger: round %d charged to tier %s (epsilon now %.4f)", round_id, tier, after)
        return charge

    def summary(self) -> dict[str, dict[str, float]]:
        """Per-tier spent ε and budget, for the device's status message and `fedlora diag`."""
        out = {}
        for name in sorted(self._accountants):
            policy = self._tiers.policy(name)
            out[name] = {
                "epsilon_spent": self.spent_epsilon(name),
                "epsilon_budget": policy.epsilon_budget,
                "delta": policy.delta,
            }
        return out

    def _state(self) -> dict[str, Any]:
        return {
            "format": LEDGER_FORMAT,
            "version": LEDGER_VERSION,
            "accountants": {tier: acc.to_dict() for tier, acc in sorted(self._accountants.items())},
            "charges": [asdict(c) for _, c in sorted(self._charges.items())],
            "unbounded_tiers": sorted(self._unbounded),
        }

    def _save(self) -> None:
        data = json.dumps(self._state(), indent=1, sort_keys=True).encode()
        write_atomic(self._path, data)

    def _load(self) -> None:
        try:
            state = json.loads(self._path.read_text())
            if state.get("format") != LEDGER_FORMAT or state.get("version") != LEDGER_VERSION:
                raise ValueError("unknown ledger format")
            self._accountants = {t: RdpAccountant.from_dict(a) for t, a in state["accountants"].items()}
            self._charges = {int(c["round_id"]): RoundCharge(**c) for c in state["charges"]}
            self._unbounded = set(state.get("unbounded_tiers", []))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A ledger we cannot read must stop training: guessing "nothing spent" would under-count.
            raise ConfigError(
                f"privacy ledger {self._path} is unreadable ({exc}); refusing to train"
            ) from exc


def _finite(value: float) -> float:
    """Stand-in for ∞ in the tier check, which rejects non-finite inputs; only ∞ budgets admit it."""
    return value if value != float("inf") else 1e300
