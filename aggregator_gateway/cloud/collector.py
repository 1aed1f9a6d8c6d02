"""Collecting the open round: verified partials, gateway aborts, device sit-outs and the partial deadline.

Partials are taken only from gateways listed in `[cloud].gateways`, signed by that gateway (frame sender =
topic level = message field), for the open round and its model version, of length d with finite values;
duplicates and late or foreign partials are ignored with a logged reason (docs/cloud.md, "What it does").
Each intake returns the cloud round state machine's event that closes the round
(`aggregator_gateway.cloud.lifecycle`): ALL_ANSWERED once every gateway sent a partial or an abort,
ALL_SAT_OUT once every device of the fleet sat the round out, DEADLINE at the `partial` deadline; None
while the round stays open. A peer's inconsistent message raises ProtocolError (logged by the event loop).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from aggregator_gateway.cloud.lifecycle import CloudEvent
from aggregator_gateway.cloud.records import RoundRecord
from aggregator_gateway.cloud.round_watch import RoundWatch
from fl_protocol.errors import ProtocolError
from fl_protocol.identity import NodeIdentity
from fl_protocol.secagg import Abort
from fl_protocol.stages import NodeState, Stage
from fl_protocol.topics import Topic
from fl_protocol.wire.messages import PartialAggregate, RoundTask, Status

logger = logging.getLogger(__name__)


@dataclass
class OpenRound:
    """The round attempt whose task is out: its task, its record, and what arrived for it so far."""

    task: RoundTask
    record: RoundRecord
    watch: RoundWatch
    partials: dict[str, PartialAggregate] = field(default_factory=dict)

    @property
    def round_id(self) -> int:
        """The attempt's round id."""
        return self.task.round_id


class RoundCollector:
    """What arrives for the open round (at most one), checked and counted; see the module docstring."""

    def __init__(
        self,
        *,
        identity: NodeIdentity,
        gateways: Collection[str],
        fleet_devices: Collection[str],
        dimension: int,
    ) -> None:
        self._identity = identity
        self._gateways = frozenset(gateways)
        self._devices = frozenset(fleet_devices)
        self._dimension = dimension
        self.current: OpenRound | None = None

    def open(self, task: RoundTask, record: RoundRecord) -> None:
        """Start collecting for `task`'s round (the previous one must be closed)."""
        assert self.current is None, "a round is already open"
        self.current = OpenRound(task, record, RoundWatch(task.round_id, self._gateways, self._devices))

    def close(self) -> OpenRound:
        """Stop collecting; returns the round that was open."""
        current, self.current = self.current, None
        assert current is not None, "no round is open"
        return current

    def on_partial(self, topic: Topic, payload: bytes) -> CloudEvent | None:
        """A PartialAggregate frame on round/{r}/partial/{gw}. Raises ProtocolError if it is inconsistent."""
        gateway = topic.gateway
        if gateway not in self._gateways:
            logger.warning("partial on topic of unregistered gateway %s ignored", gateway)
            return None
        header, partial = self._identity.decode(payload, PartialAggregate, senders={gateway})
        if partial.gateway != gateway or header.round_id != topic.round_id:
            raise ProtocolError(f"partial from {gateway}: gateway or round differs from its topic")
        current = self.current
        if current is None or topic.round_id != current.round_id:
            logger.info("late or foreign partial of round %s from %s ignored", topic.round_id, gateway)
            return None
        if gateway in current.partials:
            logger.info("duplicate partial of round %d from %s ignored", topic.round_id, gateway)
            return None
        if partial.model_version != current.task.model_version:
            raise ProtocolError(f"partial from {gateway} is for model {partial.model_version}")
        if partial.vector_sum.shape != (self._dimension,) or not np.all(np.isfinite(partial.vector_sum)):
            raise ProtocolError(f"partial from {gateway} has the wrong length or non-finite values")
        current.partials[gateway] = partial
        logger.info("round %d: partial from %s (%d devices)", topic.round_id, gateway, partial.count)
        return CloudEvent.ALL_ANSWERED if current.watch.answered(current.partials) else None

    def on_abort(self, topic: Topic, payload: bytes) -> CloudEvent | None:
        """A gateway's signed Abort on round/{r}/abort/{gw}. Raises ProtocolError if it is inconsistent."""
        gateway, current = topic.gateway, self.current
        if gateway not in self._gateways:
            logger.warning("abort on topic of unregistered gateway %s ignored", gateway)
            return None
        # Abort.from_fields is typed on `Fields`, not the Mapping WireMessage declares (fl_protocol.secagg)
        header, abort = self._identity.decode(payload, Abort, senders={gateway})  # type: ignore[type-var]
        if abort.sender != gateway or header.round_id != topic.round_id or abort.round_id != topic.round_id:
            raise ProtocolError(f"abort from {gateway}: gateway or round differs from its topic")
        if current is None or topic.round_id != current.round_id or gateway in current.partials:
            logger.info("abort of round %s from %s ignored: not the open round", topic.round_id, gateway)
            return None
        if current.watch.gateway_aborted(gateway, abort.reason):
            logger.warning("round %d: gateway %s aborted: %s", topic.round_id, gateway, abort.reason)
        if current.watch.answered(current.partials):
            logger.info("round %d: every gateway sent a partial or an abort; closing it", topic.round_id)
            return CloudEvent.ALL_ANSWERED
        return None

    def on_status(self, node: str, status: Status) -> CloudEvent | None:
        """A device's verified Status: counts its sit-out (state SKIPPED) of the open round."""
        current = self.current
        round_id = status.details.get("round")
        if status.state != NodeState.SKIPPED or current is None or round_id != current.round_id:
            return None
        watch = current.watch
        if watch.device_sat_out(node, status.reason):
            logger.info("round %d: %s sits out: %s", round_id, node, status.reason)
        if not watch.everyone_sat_out():
            return None
        logger.warning(
            "round %d: every device (%d) sits out: %s",
            round_id,
            len(watch.devices),
            watch.sit_out_summary(),
        )
        return CloudEvent.ALL_SAT_OUT

    def at(self, now_ms: int) -> CloudEvent | None:
        """DEADLINE once `now_ms` reached the open round's `partial` deadline."""
        current = self.current
        if current is None or now_ms < current.task.deadlines_ms[Stage.PARTIAL.value]:
            return None
        logger.info(
            "round %d: partial deadline reached with %d of %d gateways",
            current.round_id,
            len(current.partials),
            len(self._gateways),
        )
        return CloudEvent.DEADLINE
