"""One round in trusted-gateway mode on the device: no secure aggregation (docs/gateway.md "Trusted mode").

Taken only when the task says `secagg.mode == "trusted"` and the operator set
`[device] allow_trusted_gateway = true` (participation.decide refuses otherwise). The gateway is trusted
not to leak individual updates, not with raw data: the ledger is charged and the update is clipped,
DP-noised and quantized on the device exactly as in a masked round. Pure, like `DeviceRound`, with the
same surface so the agent drives both the same way:

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

from edge_runtime.agent.round import Action, Finished, Send, StartTraining, UploadDue
from edge_runtime.agent.state import Phase
from fl_protocol.errors import ProtocolError
from fl_protocol.topics import Stage
from fl_protocol.wire.messages import PlainUpdate, RoundTask

logger = logging.getLogger(__name__)


class TrustedDeviceRound:
    """This device's part in one trusted-mode round: train, then publish the encoded update unmasked."""

    def __init__(self, task: RoundTask, node_id: str) -> None:
        if not task.secagg.trusted:
            raise ProtocolError("TrustedDeviceRound needs a task in trusted mode")
        self.task = task
        self.node_id = node_id
        self.finished: Finished | None = None
        self._started = False
        self._upload_announced = False
        self._sent = False

    @property
    def round_id(self) -> int:
        """The round this state machine belongs to."""
        return self.task.round_id

    @property
    def done(self) -> bool:
        """True once the round finished or was given up."""
        return self.finished is not None

    def start(self) -> list[Action]:
        """Start training; nothing is advertised in trusted mode."""
        if self._started or self.done:
            return []
        self._started = True
        return [StartTraining()]

    def on_training_done(self, *, ok: bool, reason: str = "") -> list[Action]:
        """Local training ended (ok) or failed (reason): the upload is due at once."""
        if self.done or self._upload_announced:
            return []
        if not ok:
            return self._give_up(f"local training failed: {reason}")
        self._upload_announced = True
        return [UploadDue()]

    def mask(self, ring_values: np.ndarray) -> list[Action]:
        """Publish the encoded ring values as a PlainUpdate (once, after UploadDue); no mask is applied."""
        if self.done or not self._upload_announced or self._sent:
            raise ProtocolError("the plain update is sent once, after UploadDue")
        update = PlainUpdate(self.round_id, self.node_id, self.task.codec.ring_bits, ring_values)
        self._sent = True
        return [Send(Stage.MASKED, update, durable=True)]

    def uploaded(self) -> list[Action]:
        """After the agent persisted the upload: the round is over for this device."""
        if self.done or not self._sent:
            return []
        self.finished = Finished(Phase.FINISHED, "")
        return [self.finished]

    def on_abort(self, reason: str) -> list[Action]:
        """The gateway aborted the round (its Abort comes after our upload, when the round is done)."""
        return [] if self.done else self._give_up(f"gateway aborted the round: {reason}")

    def on_stage_message(self, stage: Stage) -> list[Action]:
        """SecAgg stage messages have no place in a trusted round: ignored."""
        logger.info("round %d: ignored %s in trusted mode", self.round_id, stage.value)
        return []

    def tick(self, now_ms: int) -> list[Action]:
        """Give up if the update is not out by the masked deadline."""
        masked = self.task.deadlines_ms.get(Stage.MASKED.value)
        if self.done or self._sent or masked is None or now_ms < masked:
            return []
        return self._give_up("masked deadline passed before the update was ready")

    def withdraw(self, reason: str) -> list[Action]:
        """Give the round up on the agent's initiative (a newer task, shutdown)."""
        return [] if self.done else self._give_up(reason)

    def _give_up(self, reason: str) -> list[Action]:
        logger.warning("round %d: withdrawing: %s", self.round_id, reason)
        self.finished = Finished(Phase.WITHDRAWN, reason)
        return [self.finished]
