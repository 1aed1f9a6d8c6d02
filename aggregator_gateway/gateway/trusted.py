"""A trusted gateway's round: no masking, a robust rule over single updates (docs/gateway.md "Trusted mode").

In trusted-gateway mode (`task.secagg.mode == "trusted"`, `[gateway] trusted_mode = true`) devices that
opted in publish their encoded update (clipped, DP-noised, quantized ring values) as a `PlainUpdate` on
the masked-update topic; there are no SecAgg stages. `TrustedRoundDriver` implements driver.py's
`CohortRound` like `RoundDriver`, so the gateway's event handling, persistence and replay are shared: its
machine runs lifecycle.py's TRUSTED_COHORT_TABLE, whose only stage is MASKED; it closes (`release` or
`abort`) at the masked deadline or when every expected device answered.

On close each update is decoded with `decode_sum(count=1)` and combined with `[gateway] trusted_rule`:
"none" gives the plain sum; "krum", "trimmed_mean", "median" give robust_mean(updates) × n, so the
cloud's "sum / count" is the robust mean (the same convention as robust group rules in rounds.py).
Fewer updates than the min cohort abort the round: nothing is released.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from aggregator_gateway.gateway.cohort_driver import STAGE_MESSAGES, StageMessage
from aggregator_gateway.gateway.lifecycle import CohortEvent, CohortMachine, CohortStateMixin
from aggregator_gateway.gateway.rounds import (
    Outgoing,
    RoundResult,
    combine_means,
    decode_partial,
    stage_deadline_ms,
)
from fl_protocol.codec.pipeline import encoded_length
from fl_protocol.secagg import Abort
from fl_protocol.stages import Stage
from fl_protocol.wire.messages import PlainUpdate, RoundTask

logger = logging.getLogger(__name__)

KRUM_MIN_UPDATES = 3  # krum needs n >= 2f + 3, so at least 3 rows even with f = 0


@dataclass(frozen=True)
class TrustedPolicy:
    """The per-device rule (from `[gateway]`): rule name, trimmed-mean fraction, Krum's f (0: auto)."""

    rule: str = "krum"
    trim_fraction: float = 0.2
    byzantine: int = 0


def krum_byzantine(count: int, configured: int) -> int:
    """Krum's f for `count` updates: the configured value (0: auto), capped at the largest Krum allows."""
    largest = max(0, (count - KRUM_MIN_UPDATES) // 2)
    return largest if configured == 0 else min(configured, largest)


def combine_devices(updates: dict[str, np.ndarray], *, task: RoundTask, policy: TrustedPolicy) -> RoundResult:
    """Decode each device's ring values and combine: sum for rule "none", else robust mean × count."""
    codec = task.codec
    senders = tuple(sorted(updates))
    decoded = [decode_partial(updates[s], count=1, task=task) for s in senders]
    count = len(senders)
    weights = [d[1] for d in decoded]
    vector_sum = combine_means(
        [d[0] for d in decoded],
        weights,
        rule=policy.rule,
        trim_fraction=policy.trim_fraction,
        num_byzantine=krum_byzantine(count, policy.byzantine),
    )
    ring_sum = np.zeros(updates[senders[0]].shape, dtype=np.uint64)  # for the test hook only
    for sender in senders:
        ring_sum += updates[sender]
    ring_sum &= np.uint64((1 << codec.ring_bits) - 1)
    return RoundResult(
        np.asarray(vector_sum, dtype=np.float64),
        count,
        senders,
        ring_sum.astype(np.uint32),
        (count,),
        float(sum(weights)),
    )


@dataclass
class TrustedRoundDriver(CohortStateMixin):
    """The trusted gateway's state for one round; see the module docstring. Pure: no I/O, no clock."""

    gateway_id: str
    task: RoundTask
    expected_devices: frozenset[str]
    min_cohort: int
    policy: TrustedPolicy = field(default_factory=TrustedPolicy)

    def __post_init__(self) -> None:
        # the released sum holds every accepted update: the task's floors bound it from below
        self.min_cohort = max(self.min_cohort, self.task.min_cohort, self.task.dp.min_survivors)
        self.dimension_k = encoded_length(
            self.task.model_dimension, self.task.codec, weighted=self.task.training.weighted
        )
        self.machine = CohortMachine(trusted=True)
        self.aborted: Abort | None = None  # the Abort published, once aborted
        self.result: RoundResult | None = None  # the partial's content, once done
        self._updates: dict[str, np.ndarray] = {}

    @property
    def round_id(self) -> int:
        """The task's round id."""
        return self.task.round_id

    def message_class(self, stage: Stage) -> type[StageMessage | PlainUpdate]:
        """PlainUpdate on the masked stage; the SecAgg+ class elsewhere (refused by `accept`)."""
        return PlainUpdate if stage is Stage.MASKED else STAGE_MESSAGES[stage]

    def accept(self, stage: Stage, message: StageMessage | PlainUpdate) -> bool:
        """A verified `PlainUpdate` (sender checked against the frame by the caller); False if refused."""
        reason = self._refusal(stage, message)
        if reason is not None:
            logger.info("round %d: ignored %s: %s", self.round_id, stage.value, reason)
            return False
        assert isinstance(message, PlainUpdate)
        self._updates[message.sender] = message.values
        return True

    def _refusal(self, stage: Stage, message: StageMessage | PlainUpdate) -> str | None:
        if self.finished:
            return "round finished"
        if stage is not Stage.MASKED or not isinstance(message, PlainUpdate):
            return "trusted mode takes only plain updates on the masked topic"
        if message.sender not in self.expected_devices:
            return f"{message.sender} is not an expected device"
        if message.sender in self._updates:
            return f"duplicate update from {message.sender}"
        if message.round_id != self.round_id or message.ring_bits != self.task.codec.ring_bits:
            return f"update from {message.sender} has the wrong round or ring bits"
        if message.values.shape != (self.dimension_k,):
            return f"update from {message.sender} has {message.values.size} values, not {self.dimension_k}"
        return None

    def ready(self) -> bool:
        """True when every expected device has sent its update."""
        if self.finished or not self.expected_devices:
            return False
        return set(self._updates) >= self.expected_devices

    def deadline_ms(self) -> int:
        """The task's masked deadline (the only stage of a trusted round); ProtocolError once ended."""
        return stage_deadline_ms(self.task, self.stage)

    def close(self) -> list[Outgoing]:
        """Combine the updates received (result set, nothing to publish) or abort below the min cohort."""
        if self.finished:
            return []
        count = len(self._updates)
        if count < self.min_cohort:
            return self.abort(f"{count} update(s) below the minimum cohort of {self.min_cohort}")
        if self.policy.rule == "krum" and count < KRUM_MIN_UPDATES:
            return self.abort(f"krum needs at least {KRUM_MIN_UPDATES} updates, got {count}")
        self.result = combine_devices(self._updates, task=self.task, policy=self.policy)
        self._updates.clear()  # individual updates are not kept once combined
        self.machine.apply(CohortEvent.RELEASE)
        logger.info("round %d: combined %d update(s) with rule %s", self.round_id, count, self.policy.rule)
        return []

    def abort(self, reason: str) -> list[Outgoing]:
        """Abandon the round: nothing is released; the Abort goes out on the roster topic.

        Raises TransitionError if the round already ended (done or aborted)."""
        self.machine.abort()
        logger.warning("round %d: aborting: %s", self.round_id, reason)
        self._updates.clear()
        self.aborted = Abort(round_id=self.round_id, sender=self.gateway_id, reason=reason)
        return [Outgoing(Stage.ROSTER, self.aborted)]
