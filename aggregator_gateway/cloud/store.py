"""The cloud's model store: every global version as a hash-addressed flat vector file, indexed in SQLite.

Layout under `store_dir`:
    store.sqlite                       versions(version, parent, sha256, created_ms, round, path),
                                       rounds(round, record JSON), meta(key, value)
    vectors/{sha256}.safetensors       fl_protocol.flatvec files (bundle id + version in the metadata)
    optimizer_{name}.npy               the server optimizer's moments after the step that made
                                       meta `optimizer_version` (names listed in meta `optimizer_keys`)
    downlink_residual.npy              the downlink's error-feedback residual after the version named
                                       in meta `downlink_state` (float64, d values)
    downlink_delta.fields              the encoded body of the GlobalModelDelta that carries that
                                       version (fl_protocol.wire.fields), republished after a restart

The sha256 is `fl_protocol.codec.compress.vector_sha256` (float32 little-endian bytes), the same hash a
RoundTask and GlobalModel carry, so a stored version can be matched to what went over the wire. Files are
written atomically before the row is committed, so a crash leaves at most an unreferenced file. A restart
reopens the same history; `load` re-checks the hash, so a corrupted file is refused, never served.
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fl_protocol.atomic_file import PUBLIC_MODE, write_atomic
from fl_protocol.codec.compress import vector_sha256
from fl_protocol.errors import ConfigError, DecodeError
from fl_protocol.flatvec import FlatVector, load_flat_vector, save_flat_vector

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    version INTEGER PRIMARY KEY, parent INTEGER, sha256 TEXT NOT NULL, created_ms INTEGER NOT NULL,
    round INTEGER, path TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (round INTEGER PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


_RESIDUAL_FILE = "downlink_residual.npy"
_DELTA_FILE = "downlink_delta.fields"


class StoreError(ConfigError):
    """The model store is inconsistent (a file is missing or its hash differs from the index)."""


@dataclass(frozen=True)
class VersionInfo:
    """One row of the version index. round is the round that produced it (None for the initial version)."""

    version: int
    parent: int | None
    sha256: str
    created_ms: int
    round: int | None
    path: Path


class ModelStore:
    """Versioned, hash-addressed store of global LoRA vectors bound to one bundle."""

    def __init__(self, store_dir: Path, *, bundle_id: str) -> None:
        self._dir = Path(store_dir)
        (self._dir / "vectors").mkdir(parents=True, exist_ok=True)
        self._bundle_id = bundle_id
        self._db = sqlite3.connect(self._dir / "store.sqlite", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        stored_bundle = self.get_meta("bundle_id")
        if stored_bundle is None:
            self.set_meta("bundle_id", bundle_id)
        elif stored_bundle != bundle_id:
            raise StoreError(
                f"store {self._dir} belongs to bundle {stored_bundle[:16]}…, not {bundle_id[:16]}…"
            )

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def add(
        self, values: np.ndarray, *, parent: int | None, round_id: int | None, created_ms: int
    ) -> VersionInfo:
        """Store `values` as the next version (latest + 1, or 0 for the first) and return its row."""
        latest = self.latest()
        version = 0 if latest is None else latest.version + 1
        vector = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        digest = vector_sha256(vector).hex()
        path = self._dir / "vectors" / f"{digest}.safetensors"
        if not path.exists():
            save_flat_vector(path, FlatVector(vector, self._bundle_id, version))
        self._db.execute(
            "INSERT INTO versions(version, parent, sha256, created_ms, round, path)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (version, parent, digest, int(created_ms), round_id, path.name),
        )
        logger.info("stored model version %d (sha256 %s…)", version, digest[:12])
        return VersionInfo(version, parent, digest, int(created_ms), round_id, path)

    def _row(self, row: tuple[Any, ...]) -> VersionInfo:
        version, parent, digest, created_ms, round_id, name = row
        return VersionInfo(version, parent, digest, created_ms, round_id, self._dir / "vectors" / name)

    def versions(self) -> list[VersionInfo]:
        """Every stored version, oldest first."""
        rows = self._db.execute("SELECT * FROM versions ORDER BY version").fetchall()
        return [self._row(r) for r in rows]

    def latest(self) -> VersionInfo | None:
        """The newest version, or None for an empty store."""
        row = self._db.execute("SELECT * FROM versions ORDER BY version DESC LIMIT 1").fetchone()
        return None if row is None else self._row(row)

    def info(self, version: int) -> VersionInfo:
        """The row of `version`; StoreError if unknown."""
        row = self._db.execute("SELECT * FROM versions WHERE version = ?", (version,)).fetchone()
        if row is None:
            raise StoreError(f"model version {version} is not in the store")
        return self._row(row)

    def load(self, version: int) -> np.ndarray:
        """The float32 vector of `version`, checked against its recorded hash and bundle."""
        info = self.info(version)
        try:
            flat = load_flat_vector(info.path, expected_bundle_id=self._bundle_id)
        except (OSError, ValueError, DecodeError) as exc:
            raise StoreError(f"model version {version}: cannot read {info.path}: {exc}") from exc
        if vector_sha256(flat.values).hex() != info.sha256:
            raise StoreError(f"model version {version}: {info.path} does not match its recorded sha256")
        return flat.values

    def save_round(self, round_id: int, record: dict[str, Any]) -> None:
        """Insert or replace the JSON record of one round attempt."""
        self._db.execute(
            "INSERT OR REPLACE INTO rounds(round, record) VALUES (?, ?)",
            (round_id, json.dumps(record, sort_keys=True)),
        )

    def rounds(self) -> list[dict[str, Any]]:
        """Every round record, by round id."""
        rows = self._db.execute("SELECT record FROM rounds ORDER BY round").fetchall()
        return [json.loads(r[0]) for r in rows]

    def get_meta(self, key: str) -> str | None:
        """A small piece of persistent state (accountant, optimizer), or None."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Insert or replace a piece of persistent state."""
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def save_optimizer_state(self, state: Mapping[str, np.ndarray], *, version: int) -> None:
        """Write the server optimizer's state (name -> array, e.g. m and v) as the state after `version`.

        Each array goes to `optimizer_{name}.npy` atomically; the meta rows naming the arrays and the
        version are written last, so a crash in between leaves the previous version's state unused.
        """
        for name, values in state.items():
            buffer = io.BytesIO()
            np.save(buffer, values, allow_pickle=False)
            write_atomic(self._dir / f"optimizer_{name}.npy", buffer.getvalue(), mode=PUBLIC_MODE)
        self.set_meta("optimizer_keys", json.dumps(sorted(state)))
        self.set_meta("optimizer_version", str(version))

    def optimizer_state(self, *, version: int) -> dict[str, np.ndarray] | None:
        """The state `save_optimizer_state` wrote for `version`, or None if the saved state is of
        another version (or none was saved)."""
        if self.get_meta("optimizer_version") != str(version):
            return None
        names = json.loads(self.get_meta("optimizer_keys") or "[]")
        return {name: np.load(self._dir / f"optimizer_{name}.npy") for name in names}

    def save_downlink_state(
        self, residual: np.ndarray | None, delta_body: bytes | None, *, version: int
    ) -> None:
        """Write the downlink's state after `version` (docs/update-codec.md, "Downlink"): the residual
        (float64 (d,); None: none kept) and `delta_body`, the encoded body of the version's
        GlobalModelDelta (None: none published). Files first (atomically), the meta row naming the version
        last, so a crash in between leaves the previous version's state, which is then unused."""
        if residual is not None:
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(residual, np.float64), allow_pickle=False)
            write_atomic(self._dir / _RESIDUAL_FILE, buffer.getvalue(), mode=PUBLIC_MODE)
        if delta_body is not None:
            write_atomic(self._dir / _DELTA_FILE, bytes(delta_body), mode=PUBLIC_MODE)
        state = {"version": version, "residual": residual is not None, "delta": delta_body is not None}
        self.set_meta("downlink_state", json.dumps(state, sort_keys=True))

    def downlink_residual(self, *, version: int) -> np.ndarray | None:
        """The residual `save_downlink_state` wrote for `version`, or None (another version's, none kept,
        or the file is missing or unreadable: the caller starts from zeros and logs it)."""
        if not self._downlink_state(version).get("residual"):
            return None
        try:
            values = np.load(self._dir / _RESIDUAL_FILE, allow_pickle=False)
        except (OSError, ValueError) as exc:
            logger.warning("downlink residual of version %d unreadable: %s", version, exc)
            return None
        return np.asarray(values, np.float64)

    def downlink_delta(self, *, version: int) -> bytes | None:
        """The delta body `save_downlink_state` wrote for `version`, or None."""
        if not self._downlink_state(version).get("delta"):
            return None
        try:
            return (self._dir / _DELTA_FILE).read_bytes()
        except OSError as exc:
            logger.warning("downlink delta of version %d unreadable: %s", version, exc)
            return None

    def _downlink_state(self, version: int) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self.get_meta("downlink_state") or "{}")
        return state if state.get("version") == version else {}
