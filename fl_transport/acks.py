"""QoS 1 bookkeeping of one MQTT connection (fl_transport/mqtt.py): the packets the broker has yet to
acknowledge, and the outbox entries every packet of which it has.

A durable message may go out as several signed chunks (docs/wire-format.md, "Chunks"); its outbox entry is
done only once every chunk was acknowledged. Publishing runs on the role's thread and PUBACKs arrive on
paho's network thread, possibly before paho's `publish()` has returned the packet's message id: such early
acknowledgements are kept until the id is registered. paho holds its own locks while calling back, so the
connection must not hold a lock across `publish()`; this class takes its own lock only briefly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class AckTracker:
    """Which QoS>0 packets (paho message ids) await a PUBACK, and which outbox entries are complete.

    `on_entry_acknowledged(key)` runs, outside the lock, once every packet of outbox entry `key` was
    acknowledged. Thread-safe.
    """

    def __init__(self, on_entry_acknowledged: Callable[[str], None]) -> None:
        self._on_entry_acknowledged = on_entry_acknowledged
        self._lock = threading.Lock()
        self._pending: dict[int, str | None] = {}  # message id -> outbox key (None: not durable)
        self._entry_packets: dict[str, int] = {}  # outbox key -> packets still unacknowledged
        self._early: set[int] = set()  # acknowledged before `published` registered them

    @property
    def outstanding(self) -> int:
        """Packets published and not yet acknowledged."""
        with self._lock:
            return len(self._pending)

    def expect(self, key: str, packets: int) -> None:
        """`packets` more packets of outbox entry `key` are about to be published."""
        with self._lock:
            self._entry_packets[key] = self._entry_packets.get(key, 0) + packets

    def published(self, mid: int, key: str | None) -> None:
        """paho gave message id `mid` to a QoS>0 packet (of outbox entry `key`; None when not durable)."""
        with self._lock:
            acked = mid in self._early
            if acked:
                self._early.discard(mid)
            else:
                self._pending[mid] = key
        if acked:
            self._packet_done(key)

    def acknowledged(self, mid: int) -> None:
        """The broker acknowledged message id `mid` (paho's `on_publish`)."""
        with self._lock:
            if mid not in self._pending:
                self._early.add(mid)
                return
            key = self._pending.pop(mid)
        self._packet_done(key)

    def _packet_done(self, key: str | None) -> None:
        if key is None:
            return
        with self._lock:
            left = self._entry_packets.get(key, 1) - 1
            if left > 0:
                self._entry_packets[key] = left
                return
            self._entry_packets.pop(key, None)
        self._on_entry_acknowledged(key)
