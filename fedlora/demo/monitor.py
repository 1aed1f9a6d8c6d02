"""What the demo watches on the bus: round tasks (to time its dropouts) and node statuses (progress).

The observer verifies every frame like any node does; it holds no signing key anyone trusts and never
publishes.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fl_protocol.errors import DecodeError
from fl_protocol.identity import NodeIdentity
from fl_protocol.topics import TopicKind, parse_topic, status_filter, task_filter
from fl_protocol.wire.messages import RoundTask, Status
from fl_transport.chunking import ChunkCodec
from fl_transport.mqtt import MqttConnection, MqttSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BusEvent:
    """A verified task or status seen on the bus."""

    kind: str  # "task" | "status"
    round_id: int
    node: str = ""
    state: str = ""
    reason: str = ""
    details: Mapping[str, Any] | None = None


class BusObserver:
    """Subscribes to tasks and statuses; `events` yields verified BusEvents."""

    def __init__(
        self,
        fleet: str,
        fleet_keys: Mapping[str, Ed25519PublicKey],
        broker: tuple[str, int],
        *,
        cloud_id: str = "cloud",
        mqtt_version: str = "5",
    ) -> None:
        self._identity = NodeIdentity("demo-observer", fleet, Ed25519PrivateKey.generate(), fleet_keys)
        self._cloud_id = cloud_id
        self.events: queue.Queue[BusEvent] = queue.Queue()
        self._conn = MqttConnection(
            MqttSettings(
                broker[0], broker[1], "demo-observer", clean_session=True, mqtt_version=mqtt_version
            ),
            self._on_message,
            chunking=ChunkCodec.for_identity(self._identity),
        )
        self._conn.subscribe(task_filter(fleet))
        self._conn.subscribe(status_filter(fleet))

    def start(self, timeout_s: float = 15.0) -> None:
        """Connect and wait for the broker."""
        self._conn.start()
        self._conn.wait_connected(timeout_s)

    def stop(self) -> None:
        """Disconnect."""
        self._conn.stop()

    def _on_message(self, topic: str, payload: bytes) -> None:
        if not payload:
            return  # a cleared retained message
        try:
            parsed = parse_topic(topic)
            if parsed.kind == TopicKind.TASK:
                header, task = self._identity.decode(payload, RoundTask, senders={self._cloud_id})
                self.events.put(BusEvent("task", task.round_id))
            elif parsed.kind == TopicKind.STATUS:
                header, status = self._identity.decode(payload, Status, senders={parsed.node or ""})
                self.events.put(
                    BusEvent(
                        "status",
                        header.round_id,
                        status.node,
                        status.state,
                        status.reason,
                        dict(status.details),
                    )
                )
        except DecodeError:
            logger.debug("demo observer ignored an unverifiable message on %s", topic)
