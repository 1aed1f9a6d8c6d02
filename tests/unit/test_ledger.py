"""Privacy ledger: refuses rounds that break a tier, charges the mechanism that runs, keys charges by
federation and round, never under-counts, and fails closed when tampered with (issue 11, findings 3-5)."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest

from aggregator_gateway.cloud.config import PrivacySection
from aggregator_gateway.cloud.privacy import CloudAccountant
from edge_runtime.ledger import LedgerTamperedError, PrivacyLedger, RoundRef, round_ref
from edge_runtime.ledger_seal import LedgerSeal, Marker
from fl_protocol.dp.tiers import TierConfig, TierPolicy
from fl_protocol.errors import ConfigError, PrivacyError
from tests.kit.tasks import dp_task

TIERS = TierConfig(
    policies={
        "public": TierPolicy(
            name="public", max_clip_norm=10.0, min_noise_multiplier=0.0, epsilon_budget=math.inf, delta=1e-5
        ),
        "personal": TierPolicy(
            name="personal", max_clip_norm=1.0, min_noise_multiplier=0.7, epsilon_budget=8.0, delta=1e-5
        ),
        "health": TierPolicy(
            name="health", max_clip_norm=0.5, min_noise_multiplier=1.0, epsilon_budget=3.0, delta=1e-6
        ),
    }
)
KEY = bytes(range(32))


def _seal(tmp: Path) -> LedgerSeal:
    return LedgerSeal(KEY, tmp / "identity" / "ledger.marker")


def _ledger(tmp: Path) -> PrivacyLedger:
    return PrivacyLedger(tmp / "state" / "ledger.json", TIERS, seal=_seal(tmp), clock=lambda: 1000.0)


def _task(round_id: int = 1, **kw: object):  # type: ignore[no-untyped-def]
    values: dict[str, object] = {
        "mechanism": "gaussian",
        "tier": "health",
        "clip_norm": 0.5,
        "noise_multiplier": 2.0,
        "dimension": 256,
    }
    values.update(kw)
    return dp_task(round_id=round_id, **values)  # type: ignore[arg-type]


def _ref(task, fleet: str = "fleet-a", cloud: str = "cloud-a") -> RoundRef:  # type: ignore[no-untyped-def]
    return round_ref(task, fleet=fleet, cloud_id=cloud)


def test_charges_persist_across_restart(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    task = _task()
    first = ledger.charge(_ref(task), task)
    assert first.round_epsilon > 0 and first.mechanism == "gaussian" and first.event is not None
    spent = ledger.spent_epsilon("health")
    reopened = _ledger(tmp_path)
    assert reopened.spent_epsilon("health") == pytest.approx(spent)
    assert reopened.charge_for(_ref(task)) == first
    assert (tmp_path / "state" / "ledger.json").stat().st_mode & 0o777 == 0o600


def test_charge_is_idempotent_per_release(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    task = _task(7)
    ledger.charge(_ref(task), task)
    spent = ledger.spent_epsilon("health")
    again = _ledger(tmp_path)  # a restarted device resuming the same task must not pay twice
    again.charge(_ref(task), task)
    assert again.spent_epsilon("health") == pytest.approx(spent)
    assert again.check(task, _ref(task))[0] == 0.0


def test_refuses_weaker_settings_than_tier_minimums(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    with pytest.raises(PrivacyError, match="health.*clip_norm 1 exceeds"):
        task = _task(clip_norm=1.0)
        ledger.charge(_ref(task), task)
    with pytest.raises(PrivacyError, match="noise_multiplier 0.5 is below"):
        task = _task(noise_multiplier=0.5)
        ledger.charge(_ref(task), task)
    assert not (tmp_path / "state" / "ledger.json").exists()  # refused rounds write nothing


def test_refuses_round_that_would_exceed_budget(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    accepted = 0
    with pytest.raises(PrivacyError, match="epsilon budget"):
        for round_id in range(1, 500):
            task = _task(round_id, noise_multiplier=4.0)
            ledger.charge(_ref(task), task)
            accepted += 1
    assert accepted >= 1
    assert ledger.spent_epsilon("health") <= 3.0


def test_public_tier_without_noise_is_unbounded_but_allowed(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    task = _task(tier="public", mechanism="none", clip_norm=5.0)
    ledger.charge(_ref(task), task)
    assert ledger.spent_epsilon("public") == math.inf


# -- finding 3: the ledger charges the mechanism that runs -----------------------------------------


@pytest.mark.parametrize(("quant_bits", "cloud_epsilon"), [(4, 8.26), (2, 38.65)])
def test_skellam_round_is_charged_as_skellam(tmp_path: Path, quant_bits: int, cloud_epsilon: float) -> None:
    """One round at z = 0.7 on 'personal' (budget 8): the ledger said 7.17 (Gaussian) and accepted it;
    the cloud's Skellam accountant says 8.26 (4-bit codec) or 38.65 (2-bit). Now the ledger refuses."""
    task = dp_task(
        mechanism="skellam", dimension=65_536, quant_bits=quant_bits, noise_multiplier=0.7, min_survivors=20
    )
    cloud = CloudAccountant(PrivacySection(mechanism="skellam", noise_multiplier=0.7, min_survivors=20), 0.7)
    cloud.record_round(clip_norm=1.0, scale=task.codec.scale, sparse_length=65_536)
    assert cloud.epsilon() == pytest.approx(cloud_epsilon, abs=0.01)
    ledger = _ledger(tmp_path)
    round_epsilon, _ = ledger.check(dataclasses.replace(task, tier="public"))
    assert round_epsilon == pytest.approx(cloud_epsilon, abs=0.01)
    with pytest.raises(PrivacyError, match="epsilon budget"):
        ledger.check(task)


@pytest.mark.parametrize("mechanism", ["gaussian", "skellam"])
def test_device_epsilon_equals_the_clouds_for_the_same_rounds(tmp_path: Path, mechanism: str) -> None:
    ledger = _ledger(tmp_path)
    section = PrivacySection(mechanism=mechanism, noise_multiplier=3.0, min_survivors=20, delta=1e-5)
    cloud = CloudAccountant(section, 3.0)
    for round_id in range(1, 6):
        task = dp_task(
            mechanism=mechanism, dimension=4096, quant_bits=6, noise_multiplier=3.0, round_id=round_id
        )
        ledger.charge(_ref(task), task)
        cloud.record_round(clip_norm=1.0, scale=task.codec.scale, sparse_length=4096)
    assert ledger.spent_epsilon("personal") == pytest.approx(cloud.epsilon(), rel=1e-12)


# -- finding 4: charges keyed by federation and round ----------------------------------------------


def test_a_second_federation_reusing_round_ids_pays_again(tmp_path: Path) -> None:
    """Two federations, round ids 1..20 each, z = 3 on 'personal' (budget 8): all 40 releases cost 11.47
    but the ledger keyed by bare round id showed 7.53 and accepted them all."""
    ledger = _ledger(tmp_path)
    accepted = []
    for cloud in ("cloud-a", "cloud-b"):
        for round_id in range(1, 21):
            task = dp_task(mechanism="gaussian", dimension=65_536, noise_multiplier=3.0, round_id=round_id)
            try:
                ledger.charge(_ref(task, cloud=cloud), task)
                accepted.append((cloud, round_id))
            except PrivacyError:
                pass
    assert len(accepted) == 22  # what the budget allows at z = 3, whatever the round ids
    assert ledger.spent_epsilon("personal") <= 8.0


def test_a_retried_attempt_of_the_same_round_is_a_new_release(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    first, retry = (
        _task(3, noise_multiplier=8.0),
        _task(3, noise_multiplier=8.0, seed_byte=9),
    )  # same round id, fresh public seeds
    ledger.charge(_ref(first), first)
    spent = ledger.spent_epsilon("health")
    ledger.charge(_ref(retry), retry)
    assert ledger.spent_epsilon("health") > spent


# -- finding 5: the ledger fails closed ------------------------------------------------------------


def _spend(tmp: Path, rounds: int) -> PrivacyLedger:
    ledger = _ledger(tmp)
    for round_id in range(1, rounds + 1):
        task = _task(round_id, noise_multiplier=8.0)
        ledger.charge(_ref(task), task)
    return ledger


@pytest.mark.parametrize("rounds", [1, 2])
def test_deleted_ledger_stops_participation(tmp_path: Path, rounds: int) -> None:
    """Deleting the ledger reset ε to 0 and 22 more rounds were accepted."""
    _spend(tmp_path, rounds)
    (tmp_path / "state" / "ledger.json").unlink()
    with pytest.raises(LedgerTamperedError, match="missing.*ledger-reset"):
        _ledger(tmp_path)


def test_deleted_marker_stops_participation(tmp_path: Path) -> None:
    _spend(tmp_path, 1)
    (tmp_path / "identity" / "ledger.marker").unlink()
    with pytest.raises(LedgerTamperedError, match="marker .* is missing"):
        _ledger(tmp_path)


def test_edited_event_count_stops_participation(tmp_path: Path) -> None:
    _spend(tmp_path, 3)
    path = tmp_path / "state" / "ledger.json"
    doc = json.loads(path.read_text())
    doc["accountants"]["health"]["events"][0]["count"] = 1
    path.write_text(json.dumps(doc))
    with pytest.raises(LedgerTamperedError, match="MAC does not verify"):
        _ledger(tmp_path)


def test_restored_older_copy_stops_participation(tmp_path: Path) -> None:
    _spend(tmp_path, 1)
    path = tmp_path / "state" / "ledger.json"
    shutil.copy(path, tmp_path / "old.json")
    _ledger(tmp_path).charge(_ref(_task(2, noise_multiplier=8.0)), _task(2, noise_multiplier=8.0))
    _ledger(tmp_path).charge(_ref(_task(3, noise_multiplier=8.0)), _task(3, noise_multiplier=8.0))
    shutil.copy(tmp_path / "old.json", path)
    with pytest.raises(LedgerTamperedError, match="rolled back"):
        _ledger(tmp_path)


@pytest.mark.parametrize("content", ["[]", "null", "{not json", '{"format": "fedlora-privacy-ledger"}', ""])
def test_malformed_ledger_is_a_clear_refusal(tmp_path: Path, content: str) -> None:
    """A file holding [] or null raised an uncaught AttributeError."""
    _spend(tmp_path, 1)
    (tmp_path / "state" / "ledger.json").write_text(content)
    with pytest.raises(LedgerTamperedError, match="privacy ledger"):
        _ledger(tmp_path)


def test_unsealed_version_1_ledger_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    legacy = {"format": "fedlora-privacy-ledger", "version": 1, "accountants": {}, "charges": []}
    (tmp_path / "state" / "ledger.json").write_text(json.dumps(legacy))
    with pytest.raises(ConfigError, match="unsealed"):
        _ledger(tmp_path)


def test_crash_between_marker_and_ledger_write_is_recovered(tmp_path: Path) -> None:
    ledger = _spend(tmp_path, 1)
    seal = _seal(tmp_path)
    marker = seal.read_marker()
    assert marker is not None
    seal.write_marker(Marker(marker.sequence + 1, "ab" * 32, marker.ledger_sha256))  # the next write died
    reopened = _ledger(tmp_path)
    assert reopened.spent_epsilon("health") == pytest.approx(ledger.spent_epsilon("health"))
    task = _task(5, noise_multiplier=8.0)
    reopened.charge(_ref(task), task)
    assert _ledger(tmp_path).sequence == reopened.sequence


def test_operator_reset_is_explicit_recorded_and_monotonic(tmp_path: Path) -> None:
    _spend(tmp_path, 2)
    path = tmp_path / "state" / "ledger.json"
    shutil.copy(path, tmp_path / "old.json")
    path.unlink()
    with pytest.raises(ConfigError, match="reason"):
        PrivacyLedger.reset(path, TIERS, seal=_seal(tmp_path), reason=" ")
    ledger, archived = PrivacyLedger.reset(path, TIERS, seal=_seal(tmp_path), reason="disk replaced")
    assert archived is None and ledger.sequence == 3 and ledger.spent_epsilon("health") == 0.0
    reopened = _ledger(tmp_path)
    assert json.loads(path.read_text())["resets"][0]["reason"] == "disk replaced"
    assert reopened.sequence == 3
    shutil.copy(tmp_path / "old.json", path)  # the pre-reset copy is not accepted either
    with pytest.raises(LedgerTamperedError, match="privacy ledger"):
        _ledger(tmp_path)
