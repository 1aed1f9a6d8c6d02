"""What the gateway needs of a round driver: one declared Protocol for the secure and the trusted round.

`Gateway` (gateway.py) verifies frames, persists and publishes; a round driver holds the round's state and
decides. `RoundDriver` (rounds.py, SecAgg+ in groups) and `TrustedRoundDriver` (trusted.py, plain updates
and a robust rule) both implement `CohortRound`, so event handling, persistence and replay after a
restart are shared. Both are pure: no I/O, no clock. Their state is a `CohortMachine` (lifecycle.py).
"""

from __future__ import annotations

from typing import Protocol

from aggregator_gateway.gateway.cohort_driver import StageMessage
from aggregator_gateway.gateway.lifecycle import CohortState
from aggregator_gateway.gateway.rounds import Outgoing, RoundResult
from fl_protocol.secagg import Abort
from fl_protocol.stages import Stage
from fl_protocol.wire.messages import PlainUpdate, RoundTask

#: A verified message a device sends on an uplink stage topic (PlainUpdate: trusted mode's masked stage).
DeviceMessage = StageMessage | PlainUpdate


class CohortRound(Protocol):
    """One round at the gateway, driven by verified device messages and stage closes.

    The gateway calls `accept` for each verified device frame (decoded as `message_class(stage)`) and
    `close` when `ready()` or the stage's `deadline_ms()` passed; `close` and `abort` return what to
    publish. Replaying the same calls in the same order rebuilds the same state (store.py).
    """

    @property
    def task(self) -> RoundTask:
        """The signed task this round runs."""
        ...

    @property
    def round_id(self) -> int:
        """The task's round id."""
        ...

    @property
    def state(self) -> CohortState:
        """Where the round stands (lifecycle.py's table)."""
        ...

    @property
    def stage(self) -> Stage | None:
        """The uplink stage being collected; None once the round ended."""
        ...

    @property
    def finished(self) -> bool:
        """True once the round ended: done (`result` set), aborted (`aborted` set) or broken."""
        ...

    @property
    def result(self) -> RoundResult | None:
        """The partial aggregate's content, once done."""
        ...

    @property
    def aborted(self) -> Abort | None:
        """The Abort published, once aborted."""
        ...

    def message_class(self, stage: Stage) -> type[DeviceMessage]:
        """The class a device frame on uplink `stage` is decoded as (KeyError for a downlink stage)."""
        ...

    def accept(self, stage: Stage, message: DeviceMessage) -> bool:
        """Take a verified device message (sender checked against the frame); False if ignored."""
        ...

    def ready(self) -> bool:
        """True when the current stage may close before its deadline: everyone awaited answered."""
        ...

    def deadline_ms(self) -> int:
        """Absolute deadline of the current stage (ProtocolError once the round ended)."""
        ...

    def close(self) -> list[Outgoing]:
        """Close the current stage; what to publish (nothing once the round ended)."""
        ...

    def abort(self, reason: str) -> list[Outgoing]:
        """Abandon the round (nothing is released); the Abort to publish on the roster topic."""
        ...
