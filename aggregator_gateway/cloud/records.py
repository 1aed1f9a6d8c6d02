"""Per-round records: what `rounds.json`, `/api/rounds` and the status page show.

One record per round attempt (a retried round gets a new round id and its own record). Device reports
(Status details with `round`, `train_loss`, `eval_loss`) usually arrive after the round closed, so the
log keeps per-device reports and recomputes the round's reported/dropped counts and mean losses whenever
one arrives. `reported` is the larger of the survivor count and the number of devices that reported the
round in a Status (state other than `NodeState.SKIPPED`): the cloud never sees the cohorts themselves.
Records stored before `reported` was renamed from `selected` load unchanged (`RoundRecord.from_dict`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from fl_protocol.stages import NodeState

logger = logging.getLogger(__name__)


class RecordState(str, Enum):
    """The outcome of one round attempt as its record (and rounds.json's `state`) spells it.

    RUNNING until the attempt closes; COMPLETED when it committed a model version; FAILED when it produced
    none (no usable partial, or a restart found no committed version). The round's lifecycle behind these
    words is the cloud round state machine (`aggregator_gateway.cloud.lifecycle`, docs/architecture.md).
    """

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass
class RoundRecord:
    """One round attempt: the stable keys of report.json (docs/cloud.md "rounds.json") and bookkeeping."""

    round: int
    model_version: int
    state: RecordState = RecordState.RUNNING
    new_version: int | None = None
    reported: int = 0
    survivors: int = 0
    dropped: int = 0
    gateways: list[str] = field(default_factory=list)
    train_loss: float | None = None
    eval_loss: float | None = None
    uplink_bytes_per_device: int = 0
    dense_fp32_bytes: int = 0
    downlink_full_bytes: int = 0  # measured signed GlobalModel frame of model_version
    downlink_delta_bytes: int = 0  # its GlobalModelDelta frame (0: none published, e.g. version 0)
    epsilon: float | None = None
    delta: float = 0.0
    seconds: float = 0.0
    started_ms: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (floats that are not finite become None; `state` is its plain string)."""
        out = dataclasses.asdict(self)
        out["state"] = RecordState(self.state).value
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RoundRecord:
        """Inverse of `to_dict` (unknown keys are dropped: records written by a newer cloud still load).

        A record stored by an older cloud names `reported` by its old key `selected` (docs/operations.md,
        "Upgrading"); it is read as `reported`. Raises ValueError if `state` is not a `RecordState` word.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in values.items() if k in names}
        if "reported" not in known and "selected" in values:
            known["reported"] = values["selected"]
        if "state" in known:
            known["state"] = RecordState(known["state"])
        return cls(**known)


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


class RoundLog:
    """Round records by round id, plus the device reports that fill in losses and reported counts."""

    def __init__(self, records: list[RoundRecord] | None = None) -> None:
        self._records: dict[int, RoundRecord] = {r.round: r for r in records or []}
        self._reports: dict[int, dict[str, dict[str, Any]]] = {}  # round -> device -> details

    def add(self, record: RoundRecord) -> None:
        """Start tracking a round attempt."""
        self._records[record.round] = record
        self._refresh(record)

    def get(self, round_id: int) -> RoundRecord | None:
        """The record of `round_id`, if any."""
        return self._records.get(round_id)

    def records(self) -> list[RoundRecord]:
        """Every record by round id."""
        return [self._records[r] for r in sorted(self._records)]

    def completed(self) -> list[RoundRecord]:
        """Records of completed rounds."""
        return [r for r in self.records() if r.state == RecordState.COMPLETED]

    def device_report(self, device: str, state: str, details: dict[str, Any]) -> RoundRecord | None:
        """Take a device Status; returns the record it changed (None if it names no known round)."""
        round_id = details.get("round")
        if not isinstance(round_id, int) or isinstance(round_id, bool) or state == NodeState.SKIPPED:
            return None
        self._reports.setdefault(round_id, {})[device] = dict(details)
        record = self._records.get(round_id)
        if record is not None:
            self._refresh(record)
        return record

    def _refresh(self, record: RoundRecord) -> None:
        reports = self._reports.get(record.round, {})
        record.reported = max(record.reported, record.survivors, len(reports))
        closed = record.state != RecordState.RUNNING
        record.dropped = max(0, record.reported - record.survivors) if closed else 0
        for key in ("train_loss", "eval_loss"):
            values = [
                float(d[key])
                for d in reports.values()
                if isinstance(d.get(key), (int, float)) and not isinstance(d.get(key), bool)
            ]
            if values:
                setattr(record, key, _mean(values))

    def close(self, record: RoundRecord) -> None:
        """Recompute derived fields after the coordinator filled in the outcome."""
        self._refresh(record)
