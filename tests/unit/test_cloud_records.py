"""Round records: the state is an enum in memory and its plain word in rounds.json and the store."""

from __future__ import annotations

import json

import pytest

from aggregator_gateway.cloud.records import RecordState, RoundLog, RoundRecord


def test_state_words_round_trip() -> None:
    assert [s.value for s in RecordState] == ["running", "completed", "failed"]
    record = RoundRecord(round=3, model_version=1, state=RecordState.COMPLETED, new_version=2)
    saved = record.to_dict()
    assert saved["state"] == "completed" and type(saved["state"]) is str
    assert json.loads(json.dumps(saved))["state"] == "completed"
    loaded = RoundRecord.from_dict({**saved, "added_by_a_newer_cloud": 1})
    assert loaded == record and loaded.state is RecordState.COMPLETED


def test_an_unknown_state_word_is_refused() -> None:
    with pytest.raises(ValueError, match="'paused' is not a valid RecordState"):
        RoundRecord.from_dict({"round": 1, "model_version": 0, "state": "paused"})


def test_dropped_counts_only_once_the_round_closed() -> None:
    record = RoundRecord(round=1, model_version=0)
    log = RoundLog([record])
    for device in ("d1", "d2", "d3"):
        log.device_report(device, "uploaded", {"round": 1, "train_loss": 2.0})
    assert (record.reported, record.dropped, record.train_loss) == (3, 0, 2.0)
    assert log.device_report("d4", "skipped", {"round": 1}) is None  # a sit-out does not count as reported
    record.state, record.survivors = RecordState.FAILED, 1
    log.close(record)
    assert (record.reported, record.dropped) == (3, 2) and log.completed() == []


def test_a_record_stored_before_the_rename_reads_selected_as_reported() -> None:
    """Stores written before `selected` became `reported` (docs/operations.md, "Upgrading") still load."""
    stored = RoundRecord(round=2, model_version=1, reported=5, survivors=4, dropped=1).to_dict()
    old = {("selected" if k == "reported" else k): v for k, v in stored.items()}
    assert "reported" not in old and "selected" not in stored
    assert RoundRecord.from_dict(old).reported == 5
    assert RoundRecord.from_dict({**stored, "selected": 9}).reported == 5  # the new key wins
