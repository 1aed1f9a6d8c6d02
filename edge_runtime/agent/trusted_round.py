"""One round in trusted-gateway mode on the device: no secure aggregation (docs/gateway.md "Trusted mode").

Taken only when the task says `secagg.mode == "trusted"` and the operator set
`[device] allow_trusted_gateway = true` (participation.decide refuses otherwise). The gateway is trusted
not to leak individual updates, not with raw data: the ledger is charged and the update is clipped,
DP-noised and quantized on the device exactly as in a masked round. Pure, like `DeviceRound`, and driven
the same way through `round_api.RoundVariant`, along `round_machine.TRUSTED_ROUND`:

    start -> [start training]
    training done -> [upload due]
    mask(ring values) -> [plain update, durable]     (named for the shared surface: nothing is masked)
    uploaded() -> [finished]

SecAgg stage messages are ignored; a passed masked deadline, a failed training or a gateway Abort
before the upload end the round with `Finished(WITHDRAWN, reason)`.
"""

from __future__ import annotations

import logging

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
from edge_runtime.agent.round_machine import TRUSTED_ROUND, Phase, RoundEvent
from fl_protocol.errors import ProtocolError
from fl_protocol.secagg import Roster, RoutedShares, Survivors, UnmaskRequest
from fl_protocol.topics import Stage
from fl_protocol.wire.messages import PlainUpdate, RoundTask

logger = logging.getLogger(__name__)


class TrustedDeviceRound(MachineRound):
    """This device's part in one trusted-mode round: train, then publish the encoded update unmasked.

    machine: see `MachineRound` (a `TRUSTED_ROUND` machine in JOINED; default: a new one). Raises
    ProtocolError for a task that is not in trusted mode.
    """

    def __init__(self, task: RoundTask, node_id: str, *, machine: RoundMachine | None = None) -> None:
        if not task.secagg.trusted:
            raise ProtocolError("TrustedDeviceRound needs a task in trusted mode")
        super().__init__(task, TRUSTED_ROUND, machine)
        self.node_id = node_id

    def start(self) -> list[Action]:
        """Start training; nothing is advertised in trusted mode."""
        if self.phase is not Phase.JOINED:
            return []
        self._machine.apply(RoundEvent.START)
        return [StartTraining()]

    def on_training_done(self, *, ok: bool, reason: str = "") -> list[Action]:
        """Local training ended (ok) or failed (reason): the upload is due at once."""
        if not self._machine.can(RoundEvent.TRAINED):
            return []
        if not ok:
            return self._give_up(f"local training failed: {reason}")
        self._machine.apply(RoundEvent.TRAINED)
        return [UploadDue()]

    def mask(self, ring_values: np.ndarray) -> list[Action]:
        """Publish the encoded ring values as a PlainUpdate (once, after UploadDue); no mask is applied."""
        if not self._machine.can(RoundEvent.MASK):
            raise ProtocolError("the plain update is sent once, after UploadDue")
        update = PlainUpdate(self.round_id, self.node_id, self.task.codec.ring_bits, ring_values)
        self._machine.apply(RoundEvent.MASK)
        return [Send(Stage.MASKED, update, durable=True)]

    def uploaded(self) -> list[Action]:
        """After the agent persisted the upload: the round is over for this device."""
        if not self._machine.can(RoundEvent.UPLOAD_RECORDED):
            return []
        return [Finished(self._machine.apply(RoundEvent.UPLOAD_RECORDED), "")]

    def on_roster(self, roster: Roster) -> list[Action]:
        """No place in a trusted round: ignored."""
        return self._ignored(Stage.ROSTER)

    def on_routed_shares(self, routed: RoutedShares) -> list[Action]:
        """No place in a trusted round: ignored."""
        return self._ignored(Stage.SHARES)

    def on_survivors(self, survivors: Survivors) -> list[Action]:
        """No place in a trusted round: ignored."""
        return self._ignored(Stage.SURVIVORS)

    def on_unmask_request(self, request: UnmaskRequest) -> list[Action]:
        """No place in a trusted round: ignored."""
        return self._ignored(Stage.UNMASK_REQUEST)

    def tick(self, now_ms: int) -> list[Action]:
        """Give up if the update is not out by the masked deadline."""
        masked = self.task.deadlines_ms.get(Stage.MASKED.value)
        if self.done or self.phase is Phase.UPLOADED or masked is None or now_ms < masked:
            return []
        return self._give_up("masked deadline passed before the update was ready")

    def _ignored(self, stage: Stage) -> list[Action]:
        logger.info("round %d: ignored %s in trusted mode", self.round_id, stage.value)
        return []
