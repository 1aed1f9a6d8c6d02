"""Tamper evidence for the privacy ledger: a MAC over its contents and a monotonic marker kept apart.

A ledger that silently restarts at ε = 0 is the worst failure a device can have, so every way of making it
under-count must stop participation instead:

- Alteration (an edited event count, a swapped accountant): the ledger body carries an HMAC-SHA256 keyed
  by a key derived from the device's Ed25519 identity key (`ledger_mac_key`); a body whose MAC does not
  verify is refused. The key never leaves the device; whoever can read the identity key can forge a
  ledger, which is out of scope (they can impersonate the device anyway).
- Rollback (an older, genuine copy restored) and deletion: every write increments a sequence number
  stored both in the ledger and in a separate marker file (by default next to the identity key, outside
  the state directory). The marker holds the sequence and the SHA-256 of the ledger bytes it vouches for,
  MACed with the same key. The marker is written BEFORE the ledger, naming both the new and the previous
  ledger digest, so a crash between the two writes leaves a state the loader recognises (the previous
  ledger, no charge lost: the charge is written before any update is released).

Refused states (`LedgerTamperedError`): ledger without marker; marker without ledger (a crash inside
the very first write cannot be told from deleting the first ledger, so it fails closed too); sequence or
digest mismatch; MAC failure; unreadable or malformed files. Only `fedlora device ledger-reset`
(edge_runtime.cli) gets a device out of them, explicitly and logged.
Deleting both files, or restoring older copies of both, is not detectable locally (docs/privacy.md §8).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fl_protocol.atomic_file import write_atomic
from fl_protocol.errors import ConfigError

logger = logging.getLogger(__name__)

MARKER_FORMAT = "fedlora-ledger-marker"
_MAC_LABEL = b"fedlora ledger mac v1"
RESET_HINT = "stop; an operator must run `fedlora device ledger-reset --config <device.toml> --reason ...`"


class LedgerTamperedError(ConfigError):
    """The ledger or its marker is missing, altered or rolled back: the device must not take part."""


def ledger_mac_key(signing_key: Ed25519PrivateKey) -> bytes:
    """32-byte MAC key: HMAC-SHA256(raw Ed25519 private key bytes, "fedlora ledger mac v1")."""
    raw = signing_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return hmac.new(raw, _MAC_LABEL, hashlib.sha256).digest()


def canonical(doc: Any) -> bytes:
    """The bytes a MAC covers: sorted-key compact JSON."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()


def mac_hex(key: bytes, label: bytes, doc: Any) -> str:
    """HMAC-SHA256 over label + NUL + canonical(doc), hex."""
    return hmac.new(key, label + b"\0" + canonical(doc), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Marker:
    """What the marker file vouches for: the ledger at `sequence` has SHA-256 `ledger_sha256`; the one
    before it (None for the first write) had `previous_sha256`."""

    sequence: int
    ledger_sha256: str
    previous_sha256: str | None


class LedgerSeal:
    """MAC key plus marker file of one device's ledger."""

    def __init__(self, key: bytes, marker_path: Path) -> None:
        if len(key) < 16:
            raise ConfigError("ledger MAC key must be at least 16 bytes")
        self._key, self.marker_path = bytes(key), Path(marker_path)

    def body_mac(self, body: Any) -> str:
        """MAC of a ledger body (format, version, sequence and state)."""
        return mac_hex(self._key, b"ledger", body)

    def read_marker(self) -> Marker | None:
        """The marker, None if there is none; LedgerTamperedError if it is unreadable or its MAC fails."""
        if not self.marker_path.exists():
            return None
        try:
            doc = json.loads(self.marker_path.read_text())
            if not isinstance(doc, dict) or doc.get("format") != MARKER_FORMAT:
                raise ValueError("not a ledger marker")
            body = {k: doc[k] for k in ("format", "sequence", "ledger_sha256", "previous_sha256")}
            if not hmac.compare_digest(str(doc.get("mac")), mac_hex(self._key, b"marker", body)):
                raise ValueError("marker MAC does not verify")
            marker = Marker(int(body["sequence"]), str(body["ledger_sha256"]), body["previous_sha256"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LedgerTamperedError(
                f"ledger marker {self.marker_path} is invalid ({exc}); {RESET_HINT}"
            ) from exc
        return marker

    def write_marker(self, marker: Marker) -> None:
        """Durably write the marker (before the ledger it names)."""
        body = {
            "format": MARKER_FORMAT,
            "sequence": marker.sequence,
            "ledger_sha256": marker.ledger_sha256,
            "previous_sha256": marker.previous_sha256,
        }
        doc = {**body, "mac": mac_hex(self._key, b"marker", body)}
        self.marker_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.marker_path, json.dumps(doc, sort_keys=True).encode())

    def check_consistent(self, ledger_path: Path, raw: bytes | None, sequence: int | None) -> bool:
        """Verify the ledger bytes (None: no ledger file) at `sequence` against the marker.

        Returns True when the ledger is the one the marker names (or no ledger and no marker: a fresh
        device), False when the marker names a write that never reached the ledger (crash between the
        two writes; the caller rewrites the marker). Raises LedgerTamperedError otherwise.
        """
        marker = self.read_marker()
        if raw is None:  # a crash before the very first ledger write also lands here: fail closed
            if marker is None:
                return True
            raise LedgerTamperedError(
                f"privacy ledger {ledger_path} is missing but its marker records {marker.sequence} writes "
                f"(deleted ledger); {RESET_HINT}"
            )
        if marker is None:
            raise LedgerTamperedError(
                f"privacy ledger {ledger_path} exists but its marker {self.marker_path} is missing; "
                f"{RESET_HINT}"
            )
        digest = hashlib.sha256(raw).hexdigest()
        if sequence == marker.sequence and hmac.compare_digest(digest, marker.ledger_sha256):
            return True
        if sequence == marker.sequence - 1 and marker.previous_sha256 == digest:
            return False
        raise LedgerTamperedError(
            f"privacy ledger {ledger_path} (write {sequence}) is not the one its marker vouches for "
            f"(write {marker.sequence}): rolled back or replaced; {RESET_HINT}"
        )
