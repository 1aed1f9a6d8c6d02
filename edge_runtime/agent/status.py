"""The device's retained, signed status message on `status/{node}`, and its last will (`offline`).

Details are small operator facts (round, gate readings, losses, ε spent per tier, backend), never keys,
seeds, shares or updates. `Status` accepts numbers and short strings only, so None is dropped and
booleans become 0/1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from fl_protocol.errors import ConfigError
from fl_protocol.identity import NodeIdentity
from fl_protocol.stages import NodeState
from fl_protocol.topics import status_topic
from fl_protocol.wire.checks import MAX_TEXT_CHARS
from fl_protocol.wire.messages import Status
from fl_transport.mqtt import MqttConnection, Will

logger = logging.getLogger(__name__)


class StatusPublisher:
    """Builds, signs and publishes this device's Status (retained, QoS 1)."""

    def __init__(self, identity: NodeIdentity, fleet: str, clock_ms: Callable[[], int], backend: str) -> None:
        self._identity, self._clock_ms, self._backend = identity, clock_ms, backend
        self.topic = status_topic(fleet, identity.node_id)
        self._connection: MqttConnection | None = None
        self.last: Status | None = None

    def bind(self, connection: MqttConnection) -> None:
        """Publish through `connection` from now on."""
        self._connection = connection

    def will(self) -> Will:
        """The last will: a signed `offline` status the broker publishes if the device vanishes."""
        return Will(self.topic, self.encode(NodeState.OFFLINE, "connection lost"), retain=True)

    def encode(self, state: NodeState, reason: str, **details: Any) -> bytes:
        """A signed Status frame (round id 0: not bound to a round); `state` travels as its value."""
        status = self._status(state, reason, details)
        self.last = status
        return self._identity.encode(status, round_id=0)

    def publish(self, state: NodeState, reason: str, **details: Any) -> None:
        """Publish the status retained; failures are logged, never raised (status is best effort)."""
        if self._connection is None:
            return
        try:
            self._connection.publish(self.topic, self.encode(state, reason, **details), qos=1, retain=True)
        except Exception as exc:  # noqa: BLE001 - a status hiccup must not end a round
            logger.warning("could not publish status %s: %s", state.value, exc)

    def _status(self, state: NodeState, reason: str, details: dict[str, Any]) -> Status:
        clean: dict[str, Any] = {"backend": self._backend}
        for key, value in details.items():
            if value is None:
                continue
            if isinstance(value, bool):
                value = int(value)
            elif not isinstance(value, (int, float, str)):
                value = str(value)
            if isinstance(value, str):
                value = value[:200]
            clean[key] = value
        try:
            return Status(
                self._identity.node_id, state.value, reason[:MAX_TEXT_CHARS], int(self._clock_ms()), clean
            )
        except ConfigError as exc:
            logger.warning("status details refused (%s); publishing without them", exc)
            return Status(
                self._identity.node_id, state.value, reason[:MAX_TEXT_CHARS], int(self._clock_ms()), {}
            )


def epsilon_details(summary: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """`epsilon_<tier>` status entries from `PrivacyLedger.summary()` ('inf' for an unbounded tier)."""
    out: dict[str, Any] = {}
    for tier, entry in summary.items():
        spent = entry["epsilon_spent"]
        out[f"epsilon_{tier}"] = round(spent, 6) if math.isfinite(spent) else "inf"
    return out
