"""No unmask share of a closed round stays in the gateway's SQLite files (issue 12, finding 7).

The files are read while the store is still open, which is what a kill -9 right after `finish_round`
leaves on disk (the kill -9 of a real gateway process is tests/integration/test_gateway_erasure.py).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from aggregator_gateway.gateway.store import RoundStore


def _disk_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(db.parent.glob(db.name + "*")))


def _fill_round(store: RoundStore, round_id: int, shares: list[bytes]) -> None:
    store.begin_round(round_id, task_frame=b"task", graph_seed=b"seed", now_ms=1)
    for i, share in enumerate(shares):
        # ~3 KiB frames, like unmask frames of a large cohort: some land on overflow pages
        store.append_frame(round_id, "unmask", f"dev-{i}", share + secrets.token_bytes(3000))
    store.append_close(round_id, "unmask")


def test_finished_round_leaves_no_share_in_db_or_wal(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite3"
    store = RoundStore(db)
    shares = [secrets.token_bytes(32) for _ in range(40)]
    _fill_round(store, 1, shares)
    assert all(share in _disk_bytes(db) for share in shares)  # logged durably while the round runs
    store.finish_round(1, state="done", outcome_frame=b"partial")
    on_disk = _disk_bytes(db)
    leaked = [share for share in shares if share in on_disk]
    assert not leaked, f"{len(leaked)} of {len(shares)} shares of a closed round remain on disk"
    assert store.latest_round() is not None and store.latest_round().outcome_frame == b"partial"  # type: ignore[union-attr]
    store.close()


def test_reopening_after_a_crash_erases_what_an_old_version_left(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "state.sqlite3"
    store = RoundStore(db)
    store.close()
    shares = [secrets.token_bytes(32) for _ in range(10)]
    # an older gateway: no secure_delete, no checkpoint; rows deleted, bytes still in the files
    raw = sqlite3.connect(str(db), isolation_level=None)
    raw.execute("PRAGMA secure_delete=OFF")
    for i, share in enumerate(shares):
        raw.execute(
            "INSERT INTO events (round_id, kind, stage, sender, frame) VALUES (1, 'frame', 'unmask', ?, ?)",
            (f"dev-{i}", share + b"\0" * 500),
        )
    raw.execute("DELETE FROM events")
    raw.execute("PRAGMA wal_checkpoint(PASSIVE)")
    assert any(share in _disk_bytes(db) for share in shares)
    raw.close()
    RoundStore(db).close()
    on_disk = _disk_bytes(db)
    assert not [share for share in shares if share in on_disk]


def test_mid_round_frames_survive_reopening(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite3"
    store = RoundStore(db)
    _fill_round(store, 1, [b"a" * 32, b"b" * 32])
    # no close: as after kill -9 mid-round; a fresh store must still replay the round
    reopened = RoundStore(db)
    assert [e.sender for e in reopened.events(1) if e.kind == "frame"] == ["dev-0", "dev-1"]
    reopened.close()
    store.close()
