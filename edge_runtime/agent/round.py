"""One SecAgg+ round on the device side: a pure state machine (no I/O, no threads, no clock of its own).

The agent feeds it decoded, sender-checked messages, the end of local training and the current time;
it answers with actions for the agent to carry out (publish a message, start training, build the
masked update, finish). The secure-aggregation cryptography is `fl_protocol.secagg.SecAggClient`'s;
this class sequences it with training and deadlines (docs/round-protocol.md, "The device") along
`round_machine.SECURE_ROUND` (docs/architecture.md, "State machine: device round"):

    start -> [advertise, start training]
    roster -> [share keys]          routed shares + training done (either order) -> [upload due]
    mask(ring values) -> [masked update, durable]
    survivors -> [consistency signature]     unmask request -> [unmask shares, finished]

Anything that makes the SecAgg client refuse (ProtocolError), a gateway Abort, a failed training or a
passed deadline ends the round with `Finished(WITHDRAWN, reason)`; after that every input is ignored.
A message the client ignores or answers again (a replay) does not move the machine.

Survivor floor (docs/privacy.md): a roster, survivor set or unmask request naming fewer nodes than the
signed task's `dp.min_survivors` is refused here, whatever the client was built with, so this device never
helps unmask a sum that carries less DP noise than the cloud's accountant assumed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from edge_runtime.agent.round_api import (
    Action,
    Finished,
    MachineRound,
    RoundMachine,
    Send,
    StartTraining,
    UploadDue,
)
from edge_runtime.agent.round_machine import SECURE_ROUND, UPLOADED_PHASES, Phase, RoundEvent
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
from fl_protocol.state_machine import TransitionError
from fl_protocol.topics import Stage
from fl_protocol.wire.messages import RoundTask

__all__ = ["Action", "DeviceRound", "Finished", "Send", "StartTraining", "UploadDue", "task_refusal"]

logger = logging.getLogger(__name__)


def task_refusal(task: RoundTask, *, now_ms: int, last_round: int) -> str | None:
    """Why a task is not for us (stale, already decided, masked deadline passed), or None to take it."""
    if task.round_id <= last_round:
        return f"round {task.round_id} is not newer than round {last_round} already decided"
    masked_deadline = task.deadlines_ms.get(Stage.MASKED.value)
    if masked_deadline is not None and now_ms >= masked_deadline:
        return f"round {task.round_id}: masked deadline passed {now_ms - masked_deadline} ms ago"
    return None


class DeviceRound(MachineRound):
    """This device's part in one SecAgg+ round with its gateway (implements `round_api.RoundVariant`).

    machine: see `MachineRound` (a `SECURE_ROUND` machine in JOINED; default: a new one).
    """

    def __init__(self, task: RoundTask, client: SecAggClient, *, machine: RoundMachine | None = None) -> None:
        super().__init__(task, SECURE_ROUND, machine)
        self.client = client
        self._early_routed: RoutedShares | None = None  # shares that overtook the roster on the bus

    def start(self) -> list[Action]:
        """Advertise the SecAgg keys and start training (the agent persisted JOINED before calling)."""
        if self.phase is not Phase.JOINED:
            return []
        return self._guard(self._start)

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
        return self._step(RoundEvent.TRAINED)

    def mask(self, ring_values: np.ndarray) -> list[Action]:
        """Mask the encoded update (once) and hand it out for a durable publish."""
        if not self._machine.can(RoundEvent.MASK):
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

    def tick(self, now_ms: int) -> list[Action]:
        """Enforce the task's deadlines with the agent's clock."""
        if self.done:
            return []
        deadlines = self.task.deadlines_ms
        masked, unmask = deadlines.get(Stage.MASKED.value), deadlines.get(Stage.UNMASK.value)
        if self.phase not in UPLOADED_PHASES and masked is not None and now_ms >= masked:
            return self._give_up("masked deadline passed before the update was ready")
        if unmask is not None and now_ms >= unmask:
            return self._give_up("unmask deadline passed")
        return []

    # -- stage logic ----------------------------------------------------------------------------
    def _start(self) -> list[Action]:
        advertise = self.client.advertise()
        self._machine.apply(RoundEvent.START)
        return [Send(Stage.ADVERTISE, advertise), StartTraining()]

    def _roster(self, roster: Roster) -> list[Action]:
        if roster.round_id == self.round_id:
            self._check_floor(tuple(m.sender for m in roster.members), "roster")
        answer = self.client.on_roster(roster)
        if answer is None:
            return []
        if self._machine.can(RoundEvent.ROSTER):  # else a replay: the cached shares go out again
            self._machine.apply(RoundEvent.ROSTER)
        actions: list[Action] = [Send(Stage.SHARES, answer)]
        early, self._early_routed = self._early_routed, None
        if early is not None:
            actions += self._routed(early)
        return actions

    def _routed(self, routed: RoutedShares) -> list[Action]:
        if self._machine.can(RoundEvent.ROSTER) and routed.round_id == self.round_id:
            self._early_routed = routed  # roster not answered yet: processed right after it
            return []
        self.client.on_routed_shares(routed)
        if self._machine.can(RoundEvent.ROUTED_SHARES) and self.client.stage is ClientStage.SHARES_RECEIVED:
            return self._step(RoundEvent.ROUTED_SHARES)
        return []

    def _step(self, event: RoundEvent) -> list[Action]:
        """Apply a progress event that may come more than once (training, shares); UploadDue when due."""
        if not self._machine.can(event):
            logger.debug("round %d: %s in %s changes nothing", self.round_id, event.value, self.phase.value)
            return []
        return [UploadDue()] if self._machine.apply(event) is Phase.UPLOAD_DUE else []

    def _mask(self, ring_values: np.ndarray) -> list[Action]:
        masked: MaskedUpdate = self.client.mask(ring_values)
        self._machine.apply(RoundEvent.MASK)
        return [Send(Stage.MASKED, masked, durable=True)]

    def _survivors(self, survivors: Survivors) -> list[Action]:
        if survivors.round_id == self.round_id:
            self._check_floor(survivors.survivors, "survivor set")
        answer = self.client.on_survivors(survivors)
        if answer is None:
            return []
        if self._machine.can(RoundEvent.SURVIVORS):  # else a replay: the cached signature goes out again
            self._machine.apply(RoundEvent.SURVIVORS)
        return [Send(Stage.CONSISTENCY, answer)]

    def _unmask(self, request: UnmaskRequest) -> list[Action]:
        if request.round_id == self.round_id:
            self._check_floor(request.survivors, "unmask request")
        answer = self.client.on_unmask_request(request)
        if answer is None:
            return []
        finished = Finished(self._machine.apply(RoundEvent.UNMASK_REQUEST), "")
        return [Send(Stage.UNMASK, answer), finished]

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
        except TransitionError as exc:
            return self._give_up(f"round state machine refused: {exc}")
        except ProtocolError as exc:
            return self._give_up(f"secure aggregation refused: {exc}")
