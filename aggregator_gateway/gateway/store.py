"""Round state on disk: SQLite in WAL mode, an append-only log replayed into fresh state on restart.

Per round the gateway records the signed task frame and the public graph seed, then in processing order:
every device frame it accepted (`frame` events, unique per (round, stage, sender), so a redelivered frame
is never logged or counted twice) and every stage close (`close` events). Replaying the log through a new
`RoundDriver` rebuilds the exact state, because the driver is deterministic given its inputs.

A finished round keeps only its outcome (the signed partial or abort frame) and its events are deleted:
they hold the devices' unmask shares, which have no use once the sum is out. The file is created 0600.

Deleting a row is not enough to take its bytes off the disk: SQLite leaves freed pages as they were, and
in WAL mode every page ever written stays in the `-wal` file until a checkpoint, and after one until the
file is overwritten (a crash keeps it as it is). So `secure_delete` is on (freed content is overwritten
with zeros) and `finish_round` ends with `wal_checkpoint(TRUNCATE)`: the zeroed pages are copied into the
database and the WAL is cut to zero bytes before the round's outcome is published. Opening the store
vacuums and checkpoints, for a file or WAL left by a crash or by an older version. No share of a closed
round survives in either file.

A round's `state` column holds a `RoundState` value: "active", "done" or "aborted" (the words every
version of the store wrote, so an existing file loads as it is). A word outside those is refused on load.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    round_id INTEGER PRIMARY KEY,
    task_frame BLOB NOT NULL,
    graph_seed BLOB NOT NULL,
    state TEXT NOT NULL,            -- RoundState: active | done | aborted
    outcome_frame BLOB,
    started_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    round_id INTEGER NOT NULL,
    kind TEXT NOT NULL,             -- frame | close
    stage TEXT NOT NULL,
    sender TEXT NOT NULL,
    frame BLOB,
    UNIQUE (round_id, kind, stage, sender)
);
"""


class RoundState(str, Enum):
    """A stored round's state; the values are the words in the `rounds.state` column."""

    ACTIVE = "active"  # running (or interrupted): its event log replays into a fresh driver
    DONE = "done"  # the partial went out; `outcome_frame` is the signed PartialAggregate
    ABORTED = "aborted"  # nothing was released; `outcome_frame` is the signed Abort


@dataclass(frozen=True)
class StoredRound:
    """A round's row: the signed task, its public graph seed, state and outcome frame."""

    round_id: int
    task_frame: bytes
    graph_seed: bytes
    state: RoundState
    outcome_frame: bytes | None


@dataclass(frozen=True)
class Event:
    """One log entry: an accepted device frame or a stage close."""

    kind: str
    stage: str
    sender: str
    frame: bytes | None


class RoundStore:
    """The gateway's SQLite log. Single-threaded use (the event loop's thread)."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(_SCHEMA)
        self._db.execute("VACUUM")  # rewrites every page: no freed bytes left by an older version
        self._checkpoint()

    def _checkpoint(self) -> None:
        """Move every committed page into the database file and truncate the WAL to zero bytes."""
        busy, _log_frames, _done = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise sqlite3.OperationalError("WAL checkpoint blocked by another connection")

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def begin_round(self, round_id: int, *, task_frame: bytes, graph_seed: bytes, now_ms: int) -> None:
        """Record a new active round (its task frame and public graph seed)."""
        self._db.execute(
            "INSERT INTO rounds (round_id, task_frame, graph_seed, state, started_ms) VALUES (?, ?, ?, ?, ?)",
            (round_id, task_frame, graph_seed, RoundState.ACTIVE.value, now_ms),
        )

    def latest_round(self) -> StoredRound | None:
        """The round with the highest id, or None on a fresh store (ValueError for an unknown state)."""
        row = self._db.execute(
            "SELECT round_id, task_frame, graph_seed, state, outcome_frame FROM rounds "
            "ORDER BY round_id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        outcome = None if row[4] is None else bytes(row[4])
        return StoredRound(row[0], bytes(row[1]), bytes(row[2]), RoundState(row[3]), outcome)

    def append_frame(self, round_id: int, stage: str, sender: str, frame: bytes) -> bool:
        """Log an accepted device frame; False if one of (round, stage, sender) is already logged."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO events (round_id, kind, stage, sender, frame) "
            "VALUES (?, 'frame', ?, ?, ?)",
            (round_id, stage, sender, frame),
        )
        return cursor.rowcount == 1

    def append_close(self, round_id: int, stage: str) -> None:
        """Log that `stage` closed (idempotent)."""
        self._db.execute(
            "INSERT OR IGNORE INTO events (round_id, kind, stage, sender) VALUES (?, 'close', ?, '')",
            (round_id, stage),
        )

    def events(self, round_id: int) -> list[Event]:
        """The round's log in processing order."""
        rows = self._db.execute(
            "SELECT kind, stage, sender, frame FROM events WHERE round_id = ? ORDER BY seq", (round_id,)
        ).fetchall()
        return [
            Event(kind, stage, sender, None if frame is None else bytes(frame))
            for kind, stage, sender, frame in rows
        ]

    def finish_round(self, round_id: int, *, state: RoundState | str, outcome_frame: bytes | None) -> None:
        """Mark the round done or aborted, keep its outcome frame, drop its event log (one transaction),
        then checkpoint so none of the dropped bytes remain in the database or WAL file.

        state: RoundState.DONE or ABORTED (or its word); ValueError for anything else."""
        if state not in (RoundState.DONE, RoundState.ABORTED):
            raise ValueError(f"state must be done or aborted, got {state!r}")
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE rounds SET state = ?, outcome_frame = ? WHERE round_id = ?",
                (RoundState(state).value, outcome_frame, round_id),
            )
            self._db.execute("DELETE FROM events WHERE round_id = ?", (round_id,))
        self._checkpoint()
