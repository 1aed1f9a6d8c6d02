"""Round states in the gateway's store are a `RoundState` enum whose values are the words earlier versions
wrote ("active", "done", "aborted"): a store written before the enum loads as it is."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aggregator_gateway.gateway.store import RoundState, RoundStore

# The rounds table as every earlier version created it, with the words it stored.
_OLD_SCHEMA = """
CREATE TABLE rounds (
    round_id INTEGER PRIMARY KEY,
    task_frame BLOB NOT NULL,
    graph_seed BLOB NOT NULL,
    state TEXT NOT NULL,
    outcome_frame BLOB,
    started_ms INTEGER NOT NULL
);
"""


def _old_store(path: Path, state: str) -> None:
    db = sqlite3.connect(str(path))
    db.executescript(_OLD_SCHEMA)
    db.execute(
        "INSERT INTO rounds VALUES (7, ?, ?, ?, ?, 1000)",
        (b"task", b"s" * 32, state, None if state == "active" else b"outcome"),
    )
    db.commit()
    db.close()


@pytest.mark.parametrize("word", ["active", "done", "aborted"])
def test_a_store_written_with_the_old_words_loads(tmp_path: Path, word: str) -> None:
    _old_store(tmp_path / "old.sqlite3", word)
    store = RoundStore(tmp_path / "old.sqlite3")
    latest = store.latest_round()
    assert latest is not None and latest.state is RoundState(word) and latest.state == word
    store.close()


def test_the_store_writes_the_same_words(tmp_path: Path) -> None:
    store = RoundStore(tmp_path / "s.sqlite3")
    store.begin_round(1, task_frame=b"t", graph_seed=b"s" * 32, now_ms=5)
    store.begin_round(2, task_frame=b"t", graph_seed=b"s" * 32, now_ms=6)
    store.finish_round(1, state=RoundState.ABORTED, outcome_frame=b"abort")
    store.close()
    db = sqlite3.connect(str(tmp_path / "s.sqlite3"))
    rows = db.execute("SELECT round_id, state FROM rounds ORDER BY round_id").fetchall()
    db.close()
    assert rows == [(1, "aborted"), (2, "active")]


def test_finishing_a_round_as_active_is_refused(tmp_path: Path) -> None:
    store = RoundStore(tmp_path / "s.sqlite3")
    store.begin_round(1, task_frame=b"t", graph_seed=b"s" * 32, now_ms=5)
    with pytest.raises(ValueError, match="state must be done or aborted, got <RoundState.ACTIVE: 'active'>"):
        store.finish_round(1, state=RoundState.ACTIVE, outcome_frame=None)
    store.close()


def test_an_unknown_state_word_is_refused_on_load(tmp_path: Path) -> None:
    _old_store(tmp_path / "odd.sqlite3", "paused")
    store = RoundStore(tmp_path / "odd.sqlite3")
    with pytest.raises(ValueError, match="'paused' is not a valid RoundState"):
        store.latest_round()
    store.close()
