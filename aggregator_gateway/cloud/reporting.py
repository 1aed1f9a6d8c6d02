"""Reporting: the round records (durable in the model store), the nodes' statuses, the cloud's own
retained Status, the status page's snapshot and rounds.json's contents (docs/cloud.md).

The status page reads `snapshot()` from its own thread; snapshots are immutable dicts swapped in whole,
so no lock is needed. Everything else runs on the cloud's event loop thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aggregator_gateway.cloud.config import CloudConfig
from aggregator_gateway.cloud.records import RecordState, RoundLog, RoundRecord
from aggregator_gateway.cloud.scheduler import Publisher
from aggregator_gateway.cloud.store import ModelStore
from fl_protocol.identity import NodeIdentity
from fl_protocol.stages import NodeState
from fl_protocol.topics import status_topic
from fl_protocol.wire.messages import Status

logger = logging.getLogger(__name__)


class CloudReporter:
    """Round records, node statuses, the cloud's Status, the snapshot and the report of one run."""

    def __init__(
        self,
        config: CloudConfig,
        *,
        identity: NodeIdentity,
        publisher: Publisher,
        store: ModelStore,
        clock_ms: Callable[[], int],
        epsilon: Callable[[], float | None],
    ) -> None:
        self._config, self._identity, self._publisher, self._store = config, identity, publisher, store
        self._clock_ms, self._epsilon = clock_ms, epsilon
        self.log = RoundLog([RoundRecord.from_dict(r) for r in store.rounds()])
        self._nodes: dict[str, dict[str, Any]] = {}
        self._snapshot: dict[str, Any] = {}

    def last_round_id(self) -> int:
        """The highest recorded round id (0 for a fresh store)."""
        return max((r.round for r in self.log.records()), default=0)

    def completed_rounds(self) -> int:
        """How many recorded attempts completed."""
        return len(self.log.completed())

    # -- round records --------------------------------------------------------------------------------
    def begin(self, record: RoundRecord) -> None:
        """Save a new attempt's record (durable before its task goes out: a restart never reuses the id)."""
        self._store.save_round(record.round, record.to_dict())
        self.log.add(record)

    def close(self, record: RoundRecord) -> None:
        """Recompute the closed record's derived fields, stamp ε so far, and save it."""
        self.log.close(record)
        record.epsilon = self._epsilon()
        self._store.save_round(record.round, record.to_dict())

    def settle_interrupted(self) -> list[int]:
        """Records a crash left RUNNING: COMPLETED if their model version was committed, else FAILED.

        Returns their round ids (their retained tasks must be cleared)."""
        produced = {v.round: v.version for v in self._store.versions() if v.round is not None}
        settled = []
        for record in self.log.records():
            if record.state != RecordState.RUNNING:
                continue
            version = produced.get(record.round)
            if version is None:
                record.state, record.new_version = RecordState.FAILED, None
            else:
                record.state, record.new_version = RecordState.COMPLETED, version
            self.close(record)
            logger.warning(
                "round %d was interrupted by a restart: recorded as %s", record.round, record.state.value
            )
            settled.append(record.round)
        return settled

    # -- statuses -------------------------------------------------------------------------------------
    def node_status(self, node: str, status: Status) -> None:
        """Take a node's verified Status: the nodes table, and the losses and counts of its round."""
        self._nodes[node] = {
            "state": status.state,
            "reason": status.reason,
            "time_ms": status.time_ms,
            "details": dict(status.details),
        }
        record = self.log.device_report(node, status.state, dict(status.details))
        if record is not None and record.state != RecordState.RUNNING:
            self._store.save_round(record.round, record.to_dict())

    def publish_status(self, state: NodeState, *, round_id: int | None, model_version: int | None) -> None:
        """Publish the cloud's retained Status: `state`, the published model, the completed count and the
        open round (if any)."""
        details: dict[str, Any] = {"model_version": model_version or 0, "completed": self.completed_rounds()}
        if round_id is not None:
            details["round"] = round_id
        status = Status(self._identity.node_id, state.value, "", int(self._clock_ms()), details)
        frame = self._identity.encode(status, round_id=details.get("round", 0))
        self._publisher.publish(
            status_topic(self._identity.fleet, self._identity.node_id), frame, retain=True
        )

    # -- views ----------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Immutable view for the status page (safe to call from another thread)."""
        return self._snapshot

    def refresh(self, state: NodeState, *, round_id: int | None, model_version: int | None) -> None:
        """Swap in a new snapshot: the cloud's `state`, its open round and published model version."""
        self._snapshot = {
            "node": self._identity.node_id,
            "fleet": self._identity.fleet,
            "state": state.value,
            "current_round": round_id,
            "model_version": model_version,
            "rounds_planned": self._config.cloud.rounds,
            "epsilon": self._epsilon(),
            "delta": self._config.privacy.delta,
            "rounds": [r.to_dict() for r in self.log.records()],
            "nodes": {k: dict(v) for k, v in sorted(self._nodes.items())},
        }

    def report(self, *, noise_multiplier: float, dimension: int, succeeded: bool) -> dict[str, Any]:
        """rounds.json: config summary, every round record, and the final model."""
        info = self._store.latest()
        completed = self.log.completed()
        return {
            "config": {
                "rounds": self._config.cloud.rounds,
                "gateways": list(self._config.cloud.gateways),
                "optimizer": self._config.optimizer.name,
                "mechanism": self._config.privacy.mechanism,
                "noise_multiplier": noise_multiplier,
                "dimension": dimension,
            },
            "rounds": [r.to_dict() for r in self.log.records()],
            "final": {
                "model_version": None if info is None else info.version,
                "sha256": None if info is None else info.sha256,
                "epsilon": self._epsilon(),
                "delta": self._config.privacy.delta,
                "eval_loss": completed[-1].eval_loss if completed else None,
                "completed_rounds": len(completed),
                "succeeded": succeeded,
            },
        }
