"""The device's privacy ledger: per-tier ε spent, sealed against tampering, checked before every round.

The device, not the operator, is the last line of defence for its users' data. Before it trains on a tier
it checks the round's clip and noise settings against the tier's minimums and the ε the round would add
against the tier's budget, and refuses with a reason otherwise. The charge is written to disk (atomic
rename, fsynced) BEFORE the masked update leaves the device: a crash between the write and the publish
over-counts ε, never under-counts it.

What is charged: the round's own mechanism, `fl_protocol.dp.rounds.round_privacy_event` of the task's DP
and codec settings (Skellam at the codec's scale and sparse length, distributed discrete Gaussian, ...),
the very event the cloud's accountant records, so the device's ε for a tier equals the cloud's for the same
rounds. No sampling amplification is claimed (sample rate 1). Rounds compose under RDP per tier.

Keys: a charge is keyed by the release it pays for, `RoundRef`: the federation (fleet and the cloud that
signed the task), the round id and the SHA-256 of the task's fields. Resuming the same task after a restart
does not pay twice; another federation that reuses round ids, or a retried attempt of a round (fresh seeds,
a second release), pays again.

Tamper evidence: `edge_runtime.ledger_seal` (MAC + separate monotonic marker). A missing, altered or
rolled-back ledger raises `LedgerTamperedError` and the device stops until `fedlora device ledger-reset`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_runtime.ledger_seal import (
    RESET_HINT,
    LedgerSeal,
    LedgerTamperedError,
    Marker,
    canonical,
    ledger_mac_key,
)
from fl_protocol.atomic_file import write_atomic
from fl_protocol.codec.settings import sparse_count
from fl_protocol.config import load_signing_key
from fl_protocol.dp.accountant import PrivacyEvent, RdpAccountant
from fl_protocol.dp.rounds import round_privacy_event
from fl_protocol.dp.tiers import TierConfig, check_round_against_tier
from fl_protocol.errors import ConfigError, PrivacyError
from fl_protocol.wire.messages import RoundTask

logger = logging.getLogger(__name__)

LEDGER_FORMAT = "fedlora-privacy-ledger"
LEDGER_VERSION = 2  # 2: sealed, charges keyed by RoundRef, mechanism-exact events
LEDGER_FILE = "ledger.json"


@dataclass(frozen=True)
class RoundRef:
    """One release a device pays for: federation (fleet, cloud_id), round id, SHA-256 of the task."""

    fleet: str
    cloud_id: str
    round_id: int
    task_sha256: str

    @property
    def key(self) -> str:
        """Stable text key of the charge."""
        return f"{self.fleet}/{self.cloud_id}/{self.round_id}/{self.task_sha256}"


def task_sha256(task: RoundTask) -> str:
    """SHA-256 (hex) of the task's fields in canonical JSON (bytes as hex)."""

    def plain(value: Any) -> Any:
        if isinstance(value, bytes):
            return value.hex()
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    return hashlib.sha256(canonical(plain(task.to_fields()))).hexdigest()


def round_ref(task: RoundTask, *, fleet: str, cloud_id: str) -> RoundRef:
    """The RoundRef of `task` in the federation (fleet, cloud_id)."""
    return RoundRef(fleet, cloud_id, int(task.round_id), task_sha256(task))


def task_event(task: RoundTask) -> PrivacyEvent | None:
    """The privacy event of one release of `task` (None: mechanism 'none', unbounded ε)."""
    return round_privacy_event(
        mechanism=task.dp.mechanism,
        noise_multiplier=task.dp.noise_multiplier,
        clip_norm=task.dp.clip_norm,
        min_survivors=task.dp.min_survivors,
        scale=task.codec.scale,
        sparse_length=sparse_count(task.model_dimension, task.codec.keep_fraction),
    )


@dataclass(frozen=True)
class RoundCharge:
    """What one release cost a tier, as recorded on disk (`mechanism` and `event` name what was run)."""

    key: str
    round_id: int
    tier: str
    mechanism: str
    clip_norm: float
    noise_multiplier: float
    event: dict[str, Any] | None
    round_epsilon: float
    epsilon_after: float
    charged_at_s: float


class PrivacyLedger:
    """Per-tier accountants plus the releases already charged, in one sealed JSON file."""

    def __init__(
        self, path: Path, tiers: TierConfig, *, seal: LedgerSeal, clock: Callable[[], float] = time.time
    ) -> None:
        self._path, self._tiers, self._seal, self._clock = Path(path), tiers, seal, clock
        self._accountants: dict[str, RdpAccountant] = {}
        self._charges: dict[str, RoundCharge] = {}
        self._unbounded: set[str] = set()  # tiers that released a round without noise: ε is infinite
        self._resets: list[dict[str, Any]] = []
        self._sequence = 0
        self._digest: str | None = None
        self._load()

    @property
    def sequence(self) -> int:
        """Number of writes this ledger has had (monotonic across resets)."""
        return self._sequence

    @classmethod
    def reset(
        cls,
        path: Path,
        tiers: TierConfig,
        *,
        seal: LedgerSeal,
        reason: str,
        clock: Callable[[], float] = time.time,
    ) -> tuple[PrivacyLedger, Path | None]:
        """Operator reset (`fedlora device ledger-reset`): move the old ledger aside (returned path, kept
        for audit), start a fresh sealed ledger whose sequence continues the old one and which records the
        reset (time, reason, old digest). Every tier starts from ε = 0 again: the operator takes that
        responsibility, which is why the command demands a reason and logs it."""
        if not reason.strip():
            raise ConfigError("a ledger reset needs a non-empty reason")
        path = Path(path)
        raw = path.read_bytes() if path.exists() else None
        previous_sequence = _best_effort_sequence(raw)
        try:
            marker = seal.read_marker()
            previous_sequence = max(previous_sequence, marker.sequence if marker else 0)
        except LedgerTamperedError:
            pass
        archived = None
        if raw is not None:
            archived = path.with_name(f"{path.name}.reset-{int(clock())}")
            path.replace(archived)
        ledger = cls.__new__(cls)
        ledger._path, ledger._tiers, ledger._seal, ledger._clock = path, tiers, seal, clock
        ledger._accountants, ledger._charges, ledger._unbounded = {}, {}, set()
        ledger._sequence, ledger._digest = previous_sequence, None
        ledger._resets = [
            {
                "at_s": float(clock()),
                "reason": reason,
                "previous_sequence": previous_sequence,
                "previous_sha256": None if raw is None else hashlib.sha256(raw).hexdigest(),
                "archived_as": None if archived is None else archived.name,
            }
        ]
        ledger._save()
        logger.warning(
            "privacy ledger %s RESET by operator (reason: %s); previous ledger archived as %s",
            path,
            reason,
            archived,
        )
        return ledger, archived

    def _accountant(self, tier: str) -> RdpAccountant:
        self._tiers.policy(tier)  # unknown tier -> ConfigError
        return self._accountants.setdefault(tier, RdpAccountant())

    def spent_epsilon(self, tier: str) -> float:
        """ε the tier has spent so far at its own δ (0 before the first round)."""
        accountant = self._accountant(tier)
        if tier in self._unbounded:
            return math.inf
        if accountant.steps == 0:
            return 0.0
        return accountant.get_epsilon(delta=self._tiers.policy(tier).delta)

    def charge_for(self, ref: RoundRef) -> RoundCharge | None:
        """The recorded charge of this release, if this device already paid for it."""
        return self._charges.get(ref.key)

    def check(self, task: RoundTask, ref: RoundRef | None = None) -> tuple[float, float]:
        """(round ε, ε after) for a prospective release of `task`, or PrivacyError saying why not.

        A release already charged under `ref` costs 0 more."""
        if ref is not None and ref.key in self._charges:
            existing = self._charges[ref.key]
            return 0.0, existing.epsilon_after
        policy = self._tiers.policy(task.tier)
        spent = self.spent_epsilon(task.tier)
        event = task_event(task)
        if event is None or spent == math.inf:
            after = math.inf
        else:
            after = self._accountant(task.tier).epsilon_after_event(event, delta=policy.delta)
        round_epsilon = after - spent if after != spent else 0.0
        check_round_against_tier(
            policy,
            clip_norm=task.dp.clip_norm,
            noise_multiplier=task.dp.noise_multiplier,
            round_epsilon=_finite(round_epsilon),
            spent_epsilon=_finite(spent),
        )
        return round_epsilon, after

    def charge(self, ref: RoundRef, task: RoundTask) -> RoundCharge:
        """Check and record the release, durably, before its update leaves the device. Idempotent per ref."""
        existing = self._charges.get(ref.key)
        if existing is not None:
            if existing.tier != task.tier:
                raise PrivacyError(
                    f"{ref.key} was already charged to tier '{existing.tier}', not '{task.tier}'"
                )
            return existing
        round_epsilon, after = self.check(task)
        event = task_event(task)
        if event is not None:
            self._accountant(task.tier).record(event)
        else:
            self._accountant(task.tier)
            self._unbounded.add(task.tier)
        recorded = None
        if event is not None:
            recorded = RdpAccountant()
            recorded.record(event)
        charge = RoundCharge(
            ref.key,
            ref.round_id,
            task.tier,
            task.dp.mechanism,
            float(task.dp.clip_norm),
            float(task.dp.noise_multiplier),
            None if recorded is None else recorded.to_dict()["events"][0],
            float(round_epsilon),
            float(after),
            float(self._clock()),
        )
        self._charges[ref.key] = charge
        self._save()
        logger.info("privacy ledger: %s charged to tier %s (epsilon now %.4f)", ref.key, task.tier, after)
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

    def _body(self, sequence: int) -> dict[str, Any]:
        return {
            "format": LEDGER_FORMAT,
            "version": LEDGER_VERSION,
            "sequence": sequence,
            "accountants": {tier: acc.to_dict() for tier, acc in sorted(self._accountants.items())},
            "charges": [asdict(c) for _, c in sorted(self._charges.items())],
            "unbounded_tiers": sorted(self._unbounded),
            "resets": list(self._resets),
        }

    def _save(self) -> None:
        body = self._body(self._sequence + 1)
        data = json.dumps({**body, "mac": self._seal.body_mac(body)}, indent=1, sort_keys=True).encode()
        digest = hashlib.sha256(data).hexdigest()
        self._seal.write_marker(Marker(self._sequence + 1, digest, self._digest))
        write_atomic(self._path, data)
        self._sequence, self._digest = self._sequence + 1, digest

    def _load(self) -> None:
        raw = self._path.read_bytes() if self._path.exists() else None
        body = None if raw is None else self._verified_body(raw)
        sequence = None if body is None else body["sequence"]
        consistent = self._seal.check_consistent(self._path, raw, sequence)
        if body is None:
            return
        assert raw is not None
        self._sequence, self._digest = int(body["sequence"]), hashlib.sha256(raw).hexdigest()
        try:
            self._accountants = {t: RdpAccountant.from_dict(a) for t, a in body["accountants"].items()}
            charges = [RoundCharge(**c) for c in body["charges"]]
            self._charges = {c.key: c for c in charges}
            self._unbounded = set(body["unbounded_tiers"])
            self._resets = list(body["resets"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LedgerTamperedError(
                f"privacy ledger {self._path} is malformed ({exc}); {RESET_HINT}"
            ) from exc
        if not consistent:  # crash between marker and ledger writes: the marker is one ahead; undo it
            self._seal.write_marker(Marker(self._sequence, self._digest, None))

    def _verified_body(self, raw: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict):
                raise ValueError(f"a ledger is a JSON object, not {type(doc).__name__}")
            if doc.get("format") != LEDGER_FORMAT:
                raise ValueError("not a privacy ledger")
            if doc.get("version") != LEDGER_VERSION:
                raise ValueError(f"ledger version {doc.get('version')!r} is not {LEDGER_VERSION} (unsealed)")
            body = {k: v for k, v in doc.items() if k != "mac"}
            if not isinstance(doc.get("mac"), str) or doc["mac"] != self._seal.body_mac(body):
                raise ValueError("MAC does not verify: the ledger was altered")
            if isinstance(body.get("sequence"), bool) or not isinstance(body.get("sequence"), int):
                raise ValueError("sequence must be an int")
        except ValueError as exc:
            raise LedgerTamperedError(f"privacy ledger {self._path} refused ({exc}); {RESET_HINT}") from exc
        return body


def _best_effort_sequence(raw: bytes | None) -> int:
    """The sequence an (unverified) old ledger claims, 0 if none can be read."""
    try:
        doc = json.loads(raw) if raw is not None else None
        value = doc.get("sequence") if isinstance(doc, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
    except ValueError:
        return 0


def _finite(value: float) -> float:
    """Stand-in for ∞ in the tier check, which rejects non-finite inputs; only ∞ budgets admit it."""
    return value if value != math.inf else 1e300


def marker_path_for(signing_key_file: Path) -> Path:
    """Marker location: beside the identity key (outside the state directory), named after the key file,
    so two nodes whose keys share a directory never share a marker."""
    key = Path(signing_key_file)
    return key.with_name(f"{key.name}.ledger-marker")


def device_seal(signing_key_file: Path) -> LedgerSeal:
    """The device's ledger seal: MAC key from its identity key, marker beside that key."""
    key = ledger_mac_key(load_signing_key(signing_key_file))
    return LedgerSeal(key, marker_path_for(signing_key_file))


def open_device_ledger(
    state_dir: Path, signing_key_file: Path, tiers: TierConfig, *, clock: Callable[[], float] = time.time
) -> PrivacyLedger:
    """The device's ledger at `state_dir`/ledger.json, sealed with its identity key."""
    return PrivacyLedger(
        Path(state_dir) / LEDGER_FILE, tiers, seal=device_seal(signing_key_file), clock=clock
    )


__all__ = [
    "LEDGER_FILE",
    "device_seal",
    "LedgerTamperedError",
    "PrivacyLedger",
    "RoundCharge",
    "RoundRef",
    "open_device_ledger",
    "round_ref",
    "task_event",
    "task_sha256",
]
