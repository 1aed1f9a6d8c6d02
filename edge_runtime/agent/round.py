"""One round on the device side: a pure state machine (no I/O, no threads, no clock of its own).

The agent feeds it decoded, sender-checked messages, the end of local training and the current time;
it answers with actions for the agent to carry out (publish a message, start training, build the
masked update, finish). The secure-aggregation cryptography is `fl_protocol.secagg.SecAggClient`'s;
this class sequences it with training and deadlines (docs/round-protocol.md, "The device"):

    start -> [advertise, start training]
    roster -> [share keys]          routed shares + training done (either order) -> [upload due]
    mask(ring values) -> [masked update, durable]
    survivors -> [consistency signature]     unmask request -> [unmask shares, finished]

Anything that makes the SecAgg client refuse (ProtocolError), a gateway Abort, a failed training or a
passed deadline ends the round with `Finished(WITHDRAWN, reason)`; after that every input is ignored.

Survivor floor (docs/privacy.md): a roster, survivor set or unmask request naming fewer nodes than the
signed task's `dp.min_survivors` is refused here, whatever the client was built with, so this device never
helps unmask a sum that carries less DP noise than the cloud's accountant assumed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np

from edge_runtime.agent.state import Phase
from fl_protocol.errors import ProtocolError
from fl_protocol.secagg import (
    ClientStage,
    MaskedUpdate,
    Roster,
    RoutedShares,
    SecAggClient,
    Survivors,
    UnmaskRequest,
)
from fl_protocol.topics import Stage
from fl_protocol.wire.messages import RoundTask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Send:
    """Publish `message` on this device's uplink topic of `stage` (durable: through the outbox)."""

    stage: Stage
    message: object
    durable: bool = False


@dataclass(frozen=True)
class StartTraining:
    """Start local training on the round's global model (on the worker thread)."""


@dataclass(frozen=True)
class UploadDue:
    """Training is done and the shares are in: charge the ledger, encode, then call `DeviceRound.mask`."""


@dataclass(frozen=True)
class Finished:
    """The round is over for this device: FINISHED (unmask shares sent) or WITHDRAWN (with a reason)."""

    phase: Phase
    reason: str


Action = Send | StartTraining | UploadDue | Finished


class Step(Enum):
    """Progress through the round, in protocol order."""

    NEW = 0
    ADVERTISED = 1
    SHARED = 2
    UPLOADED = 3
    SIGNED = 4
    DONE = 5


def task_refusal(task: RoundTask, *, now_ms: int, last_round: int) -> str | None:
    """Why a task is not for us (stale, already decided, masked deadline passed), or None to take it."""
    if task.round_id <= last_round:
        return f"round {task.round_id} is not newer than round {last_round} already decided"
    masked_deadline = task.deadlines_ms.get(Stage.MASKED.value)
    if masked_deadline is not None and now_ms >= masked_deadline:
        return f"round {task.round_id}: masked deadline passed {now_ms - masked_deadline} ms ago"
    return None


class DeviceRound:
    """This device's part in one round with its gateway."""

    def __init__(self, task: RoundTask, client: SecAggClient) -> None:
        self.task = task
        self.client = client
        self.step = Step.NEW
        self.finished: Finished | None = None
        self._shares_in = False
        self._trained = False
        self._upload_announced = False
        self._early_routed: RoutedShares | None = None  # shares that overtook the roster on the bus

    @property
    def round_id(self) -> int:
        """The round this state machine belongs to."""
        return self.task.round_id

    @property
    def done(self) -> bool:
        """True once the round finished or was given up."""
        return self.finished is not None

    def start(self) -> list[Action]:
        """Advertise the SecAgg keys and start training (the agent persisted JOINED before calling)."""
        if self.step is not Step.NEW or self.done:
            return []
        return self._guard(lambda: self._start())

    def on_roster(self, roster: Roster) -> list[Action]:
        """Answer the roster with encrypted shares for the neighbours."""
        return self._guard(lambda: self._roster(roster))

    def on_routed_shares(self, routed: RoutedShares) -> list[Action]:
        """Take the neighbours' shares; the upload is due once training is done too."""
        return self._guard(lambda: self._routed(routed))

    def on_training_done(self, *, ok: bool, reason: str = "") -> list[Action]:
        """Local training ended (ok) or failed (reason)."""
        if self.done:
            return []
        if not ok:
            return self._give_up(f"local training failed: {reason}")
        self._trained = True
        return self._maybe_upload()

    def mask(self, ring_values: np.ndarray) -> list[Action]:
        """Mask the encoded update (once) and hand it out for a durable publish."""
        if self.done or not self._upload_announced or self.step is not Step.SHARED:
            raise ProtocolError("mask() is allowed once, after UploadDue")
        return self._guard(lambda: self._mask(ring_values))

    def uploaded(self) -> list[Action]:
        """After the agent persisted the upload: nothing more (the round goes on with the survivors)."""
        return []

    def on_survivors(self, survivors: Survivors) -> list[Action]:
        """Sign the survivor set (consistency check)."""
        return self._guard(lambda: self._survivors(survivors))

    def on_unmask_request(self, request: UnmaskRequest) -> list[Action]:
        """Release the unmasking shares; the round is then finished for this device."""
        return self._guard(lambda: self._unmask(request))

    def on_abort(self, reason: str) -> list[Action]:
        """The gateway aborted the cohort: nothing more will be released."""
        if self.done:
            return []
        return self._give_up(f"gateway aborted the round: {reason}")

    def tick(self, now_ms: int) -> list[Action]:
        """Enforce the task's deadlines with the agent's clock."""
        if self.done:
            return []
        deadlines = self.task.deadlines_ms
        masked, unmask = deadlines.get(Stage.MASKED.value), deadlines.get(Stage.UNMASK.value)
        if self.step.value < Step.UPLOADED.value and masked is not None and now_ms >= masked:
            return self._give_up("masked deadline passed before the update was ready")
        if unmask is not None and now_ms >= unmask:
            return self._give_up("unmask deadline passed")
        return []

    def withdraw(self, reason: str) -> list[Action]:
        """Give the round up on the agent's initiative (a newer task, shutdown)."""
        return [] if self.done else self._give_up(reason)

    # -- stage logic ----------------------------------------------------------------------------
    def _start(self) -> list[Action]:
        advertise = self.client.advertise()
        self.step = Step.ADVERTISED
        return [Send(Stage.ADVERTISE, advertise), StartTraining()]

    def _roster(self, roster: Roster) -> list[Action]:
        if roster.round_id == self.round_id:
            self._check_floor(tuple(m.sender for m in roster.members), "roster")
        answer = self.client.on_roster(roster)
        if answer is None:
            return []
        actions: list[Action] = []
        if self.step is Step.ADVERTISED:
            self.step = Step.SHARED
        actions.append(Send(Stage.SHARES, answer))
        early, self._early_routed = self._early_routed, None
        if early is not None:
            actions += self._routed(early)
        return actions

    def _routed(self, routed: RoutedShares) -> list[Action]:
        if self.step is Step.ADVERTISED and routed.round_id == self.round_id:
            self._early_routed = routed  # processed right after the roster
            return []
        self.client.on_routed_shares(routed)
        if (
            self.step is Step.SHARED
            and not self._shares_in
            and self.client.stage is ClientStage.SHARES_RECEIVED
        ):
            self._shares_in = True
            return self._maybe_upload()
        return []

    def _maybe_upload(self) -> list[Action]:
        if self._trained and self._shares_in and not self._upload_announced:
            self._upload_announced = True
            return [UploadDue()]
        return []

    def _mask(self, ring_values: np.ndarray) -> list[Action]:
        masked: MaskedUpdate = self.client.mask(ring_values)
        self.step = Step.UPLOADED
        return [Send(Stage.MASKED, masked, durable=True)]

    def _survivors(self, survivors: Survivors) -> list[Action]:
        if survivors.round_id == self.round_id:
            self._check_floor(survivors.survivors, "survivor set")
        answer = self.client.on_survivors(survivors)
        if answer is None:
            return []
        self.step = Step.SIGNED
        return [Send(Stage.CONSISTENCY, answer)]

    def _unmask(self, request: UnmaskRequest) -> list[Action]:
        if request.round_id == self.round_id:
            self._check_floor(request.survivors, "unmask request")
        answer = self.client.on_unmask_request(request)
        if answer is None:
            return []
        self.step = Step.DONE
        self.finished = Finished(Phase.FINISHED, "")
        return [Send(Stage.UNMASK, answer), self.finished]

    # -- helpers --------------------------------------------------------------------------------
    def _check_floor(self, names: tuple[str, ...], what: str) -> None:
        """Refuse a set that names this node (a message for its group) but fewer nodes than the floor."""
        floor = self.task.dp.min_survivors
        if self.client.node_id in names and len(names) < floor:
            raise ProtocolError(f"{what} names {len(names)} nodes, below the task's min_survivors={floor}")

    def _guard(self, action: Callable[[], list[Action]]) -> list[Action]:
        if self.done:
            logger.info("round %d: ignored a message after the round ended for this device", self.round_id)
            return []
        try:
            return action()
        except ProtocolError as exc:
            return self._give_up(f"secure aggregation refused: {exc}")

    def _give_up(self, reason: str) -> list[Action]:
        logger.warning("round %d: withdrawing: %s", self.round_id, reason)
        self.finished = Finished(Phase.WITHDRAWN, reason)
        return [self.finished]
