"""What a device round and the agent say to each other: the actions a round asks for, the calls every
round variant answers (`RoundVariant`), and the part both variants share (`MachineRound`).

A round is pure (no I/O, threads or clock): the agent feeds it decoded, sender-checked messages, the end
of local training and the time, and carries out the actions it returns. Its progress is one
`StateMachine` over a device round table (edge_runtime.agent.round_machine; docs/architecture.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edge_runtime.agent.round_machine import Phase, RoundEvent
from fl_protocol.secagg import Roster, RoutedShares, Survivors, UnmaskRequest
from fl_protocol.state_machine import StateMachine, TransitionTable
from fl_protocol.topics import Stage
from fl_protocol.wire.messages import RoundTask

logger = logging.getLogger(__name__)

RoundMachine = StateMachine[Phase, RoundEvent]


@dataclass(frozen=True)
class Send:
    """Publish `message` (a wire message: SecAgg+ or PlainUpdate) on this device's uplink topic of `stage`
    (durable: through the outbox)."""

    stage: Stage
    message: object  # SecAgg+ messages do not match fl_protocol.wire.envelope.WireMessage's from_fields yet
    durable: bool = False


@dataclass(frozen=True)
class StartTraining:
    """Start local training on the round's global model (on the worker thread)."""


@dataclass(frozen=True)
class UploadDue:
    """Training is done (and the shares are in): charge the ledger, encode, then call `mask`."""


@dataclass(frozen=True)
class Finished:
    """The round is over for this device: FINISHED or WITHDRAWN (with a reason); the agent persists it."""

    phase: Phase
    reason: str


Action = Send | StartTraining | UploadDue | Finished


class RoundVariant(Protocol):
    """One round as the agent drives it: `DeviceRound` (SecAgg+) and `TrustedDeviceRound` implement it.

    Every call returns the actions to carry out, in order; after the round is done every call returns [].
    `mask` raises ProtocolError when called other than once after UploadDue (a bug of the caller).
    """

    @property
    def task(self) -> RoundTask:
        """The signed round task."""
        ...

    @property
    def round_id(self) -> int:
        """The task's round id."""
        ...

    @property
    def phase(self) -> Phase:
        """The machine's current state."""
        ...

    @property
    def done(self) -> bool:
        """True once the round finished or was given up."""
        ...

    def start(self) -> list[Action]:
        """Begin the round (the agent persisted JOINED before)."""
        ...

    def on_roster(self, roster: Roster) -> list[Action]:
        """The gateway's roster."""
        ...

    def on_routed_shares(self, routed: RoutedShares) -> list[Action]:
        """The neighbours' encrypted shares, routed by the gateway."""
        ...

    def on_survivors(self, survivors: Survivors) -> list[Action]:
        """The gateway's survivor set."""
        ...

    def on_unmask_request(self, request: UnmaskRequest) -> list[Action]:
        """The gateway's unmask request."""
        ...

    def on_training_done(self, *, ok: bool, reason: str = "") -> list[Action]:
        """Local training ended (ok) or failed (reason)."""
        ...

    def mask(self, ring_values: np.ndarray) -> list[Action]:
        """The encoded update (uint32 ring values, shape (model_dimension,)): sent once, after UploadDue."""
        ...

    def uploaded(self) -> list[Action]:
        """The agent persisted the upload."""
        ...

    def on_abort(self, reason: str) -> list[Action]:
        """The gateway aborted the round."""
        ...

    def tick(self, now_ms: int) -> list[Action]:
        """Enforce the task's deadlines at `now_ms` (ms since the epoch, the agent's clock)."""
        ...

    def withdraw(self, reason: str) -> list[Action]:
        """Give the round up on the agent's initiative (a newer task, shutdown)."""
        ...


class MachineRound:
    """The state both variants share: the task and the machine, and how a round is given up.

    machine: the machine the agent took from OFFERED to JOINED for this task (its table must be
    `table`); without one, a new machine starts in JOINED. Raises ValueError for a machine of another
    table or in another state.
    """

    def __init__(
        self, task: RoundTask, table: TransitionTable[Phase, RoundEvent], machine: RoundMachine | None
    ) -> None:
        if machine is None:
            machine = StateMachine(table, Phase.JOINED)
        if machine.table is not table or machine.state is not Phase.JOINED:
            raise ValueError(f"a {table.name} starts from a machine of its own table in state 'joined'")
        self.task = task
        self._machine = machine

    @property
    def round_id(self) -> int:
        """The round this machine belongs to."""
        return self.task.round_id

    @property
    def phase(self) -> Phase:
        """The machine's current state."""
        return self._machine.state

    @property
    def done(self) -> bool:
        """True once the round finished or was given up."""
        return self._machine.done

    def on_abort(self, reason: str) -> list[Action]:
        """The gateway aborted the round: nothing more will be released."""
        return [] if self.done else self._give_up(f"gateway aborted the round: {reason}")

    def withdraw(self, reason: str) -> list[Action]:
        """Give the round up on the agent's initiative (a newer task, shutdown)."""
        return [] if self.done else self._give_up(reason)

    def _give_up(self, reason: str) -> list[Action]:
        logger.warning("round %d: withdrawing: %s", self.round_id, reason)
        if self._machine.can(RoundEvent.WITHDRAW):
            self._machine.apply(RoundEvent.WITHDRAW)
        else:  # a refused event already put the machine in its error state (WITHDRAWN)
            self._machine.fail()
        return [Finished(self._machine.state, reason)]
