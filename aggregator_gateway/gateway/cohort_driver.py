"""One cohort (or one group of a cohort) of a round: a SecAggServer plus who is still owed an answer.

`SecAggServer` is the pure protocol state machine (its stages: fl_protocol/secagg/server_stages.py); this
wrapper adds what the gateway needs around it: the uplink stage the server collects now (read from the
server's own stage, never kept beside it), the set of nodes it waits for in that stage (so a stage can
close early once all have answered), and a uniform `close()` that returns the messages to publish or an
`Abort`. No I/O, no clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fl_protocol.errors import ProtocolError
from fl_protocol.secagg import (
    Abort,
    AdvertiseKeys,
    AggregateResult,
    ConsistencySignature,
    MaskedUpdate,
    Roster,
    RoutedShares,
    SecAggServer,
    ServerStage,
    ShareKeys,
    Survivors,
    UnmaskRequest,
    UnmaskShares,
)
from fl_protocol.stages import Stage

logger = logging.getLogger(__name__)

_ENDED = frozenset({ServerStage.DONE, ServerStage.ABORTED, ServerStage.ERROR})

StageMessage = AdvertiseKeys | ShareKeys | MaskedUpdate | ConsistencySignature | UnmaskShares
CloseOutput = Roster | dict[str, RoutedShares] | Survivors | UnmaskRequest | AggregateResult | Abort

# The message class each uplink stage of a secure round carries.
STAGE_MESSAGES: dict[Stage, type[StageMessage]] = {
    Stage.ADVERTISE: AdvertiseKeys,
    Stage.SHARES: ShareKeys,
    Stage.MASKED: MaskedUpdate,
    Stage.CONSISTENCY: ConsistencySignature,
    Stage.UNMASK: UnmaskShares,
}


@dataclass(frozen=True)
class CohortParams:
    """Public parameters of one cohort's SecAgg+ round (from the task and the gateway config)."""

    gateway_id: str
    fleet: str
    round_id: int
    dimension: int  # k: length of the encoded (sparse) update
    ring_bits: int
    model_hash: bytes
    min_cohort: int
    degree: int | None
    threshold_fraction: float
    min_survivors: int = 1  # the task's dp.min_survivors: no sum of fewer survivors is released


class CohortDriver:
    """Drives one SecAggServer through the stages; `waiting` tells which nodes have not answered yet."""

    def __init__(
        self,
        params: CohortParams,
        *,
        graph_seed: bytes,
        verify_key: Callable[[str], Ed25519PublicKey | None],
    ) -> None:
        self.params = params
        self.server = SecAggServer(
            params.gateway_id,
            fleet=params.fleet,
            round_id=params.round_id,
            dimension=params.dimension,
            ring_bits=params.ring_bits,
            graph_seed=graph_seed,
            verify_key=verify_key,
            model_hash=params.model_hash,
            min_cohort=max(2, params.min_cohort),
            degree=params.degree,
            threshold_fraction=params.threshold_fraction,
            min_survivors=params.min_survivors,
        )
        self._expected: frozenset[str] = frozenset()  # who may answer in the current stage
        self._answered: set[str] = set()

    @property
    def stage(self) -> Stage | None:
        """The uplink stage the server collects now (its stage's word); None once done or aborted."""
        state = self.server.stage
        return None if state in _ENDED else Stage(state.value)

    @property
    def aborted(self) -> bool:
        """True once closing a stage aborted this cohort."""
        return self.server.stage is ServerStage.ABORTED

    @property
    def members(self) -> tuple[str, ...]:
        """The roster's members (empty before the advertise stage closed)."""
        cohort = self.server.cohort
        return cohort.members if cohort is not None else ()

    def accept(self, stage: Stage, message: StageMessage) -> bool:
        """Hand a verified device message to the server; True if it was accepted (first of its kind)."""
        current = self.stage
        if stage is not current or not isinstance(message, STAGE_MESSAGES[stage]):
            logger.info(
                "round %d: ignored %s from %s: cohort is in stage %s",
                self.params.round_id,
                stage.value,
                getattr(message, "sender", "?"),
                self.server.stage.value if current is None else current.value,
            )
            return False
        accepted = self._deliver(message)
        if accepted:
            self._answered.add(message.sender)
        return accepted

    def _deliver(self, message: StageMessage) -> bool:
        """The server's handler for the message's kind (it checks the kind against its own stage)."""
        server = self.server
        if isinstance(message, AdvertiseKeys):
            return server.on_advertise(message)
        if isinstance(message, ShareKeys):
            return server.on_share_keys(message)
        if isinstance(message, MaskedUpdate):
            return server.on_masked_update(message)
        if isinstance(message, ConsistencySignature):
            return server.on_consistency_signature(message)
        return server.on_unmask_shares(message)

    def complete(self) -> bool:
        """True when every node this stage waits for has answered (the advertise stage never is: the
        round decides it against the expected devices)."""
        return bool(self._expected) and self._expected <= self._answered

    def close(self) -> CloseOutput:
        """Close the current stage; the result is what to publish (or an Abort / the final sum)."""
        if self.aborted:
            raise ProtocolError("cohort already aborted")
        result = self._advance()
        if not isinstance(result, Abort):
            self._expected = self._next_expected(result)
            self._answered = set()
        return result

    def _advance(self) -> CloseOutput:
        """The server's call that closes its stage (past the last one, its refusal: TransitionError)."""
        stage = self.server.stage
        if stage is ServerStage.ADVERTISE:
            return self.server.close_advertise()
        if stage is ServerStage.SHARE_KEYS:
            return self.server.close_share_keys()
        if stage is ServerStage.MASKED_COLLECTION:
            return self.server.close_masked_collection()
        if stage is ServerStage.CONSISTENCY:
            return self.server.unmask_request()
        return self.server.finalize()

    @staticmethod
    def _next_expected(result: CloseOutput) -> frozenset[str]:
        if isinstance(result, Roster):
            return frozenset(m.sender for m in result.members)
        if isinstance(result, dict):
            return frozenset(result)
        if isinstance(result, Survivors):
            return frozenset(result.survivors)
        if isinstance(result, UnmaskRequest):
            return frozenset(result.signatures)
        return frozenset()
