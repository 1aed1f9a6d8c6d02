"""An on-disk outbox: a QoS 1 publish survives the process dying before the broker acknowledged it.

paho keeps unacknowledged QoS>0 messages in memory only. A device that masked and sent its update and
then lost power would otherwise never deliver it. Each message is written (atomically, 0600) before it is
handed to paho and deleted when its PUBACK arrives; on start every remaining entry is sent again. Receivers
are idempotent on (round, sender, message type), so a duplicate after a crash is harmless.
"""

from __future__ import annotations

import json
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from fl_protocol.atomic_file import SECRET_MODE, write_atomic

_SUFFIX = ".msg"
_MAX_HEADER_BYTES = 4096


@dataclass(frozen=True)
class OutboxEntry:
    """One message waiting for its broker acknowledgement."""

    key: str
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Outbox:
    """Directory of pending messages, ordered by a monotonically increasing sequence number."""

    def __init__(self, directory: Path) -> None:
        self._dir = Path(directory)
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        existing = [int(p.stem) for p in self._dir.glob(f"*{_SUFFIX}") if p.stem.isdigit()]
        self._next_seq = max(existing, default=0) + 1

    def add(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> OutboxEntry:
        """Persist a message durably and return its entry."""
        with self._lock:
            key = f"{self._next_seq:012d}"
            self._next_seq += 1
        header = json.dumps({"topic": topic, "qos": qos, "retain": retain}).encode()
        data = struct.pack("<I", len(header)) + header + payload
        write_atomic(self._dir / f"{key}{_SUFFIX}", data, mode=SECRET_MODE)
        return OutboxEntry(key, topic, payload, qos, retain)

    def remove(self, key: str) -> None:
        """Forget a message once the broker acknowledged it (missing is fine: acks can repeat)."""
        try:
            (self._dir / f"{key}{_SUFFIX}").unlink()
        except FileNotFoundError:
            pass

    def set_aside(self, key: str, reason: str) -> None:
        """Keep a message that can never be sent out of the queue, as `<key>.<reason>` (not deleted)."""
        path = self._dir / f"{key}{_SUFFIX}"
        try:
            path.rename(path.with_suffix(f".{reason}"))
        except FileNotFoundError:
            pass

    def pending(self) -> list[OutboxEntry]:
        """Every message not yet acknowledged, oldest first; unreadable files are set aside, not lost."""
        entries = []
        for path in sorted(self._dir.glob(f"*{_SUFFIX}")):
            try:
                data = path.read_bytes()
                (header_len,) = struct.unpack("<I", data[:4])
                if header_len > _MAX_HEADER_BYTES:
                    raise ValueError("header too large")
                header = json.loads(data[4 : 4 + header_len])
                entries.append(
                    OutboxEntry(
                        path.stem,
                        str(header["topic"]),
                        data[4 + header_len :],
                        int(header["qos"]),
                        bool(header["retain"]),
                    )
                )
            except (OSError, ValueError, KeyError, struct.error):
                path.rename(path.with_suffix(".corrupt"))
        return entries

    def __len__(self) -> int:
        return sum(1 for _ in self._dir.glob(f"*{_SUFFIX}"))
