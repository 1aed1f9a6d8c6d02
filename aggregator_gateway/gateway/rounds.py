"""One round at the gateway: advertise lobby, cohort split into groups, stage closing, robust combine.

`RoundDriver` is pure (no I/O, no clock): the gateway feeds it verified device messages (`accept`) and
asks it to close the current stage (`close`) when the stage's deadline passed or `ready()` says every
device it waits for answered. `close` returns the `Outgoing` messages to publish. The same calls replayed
in the same order rebuild the same state, which is how a restarted gateway resumes (see store.py). It
implements driver.py's `CohortRound`; where the round stands is its `CohortMachine` (lifecycle.py).

Groups (docs/gateway.md): the advertised cohort is split into G groups, each its own SecAgg+ instance, so the
gateway sees G group sums instead of one. With rule "none" the partial is the exact sum of the group sums;
with a robust rule it is robust_mean(group means) × total count, so the cloud's weighted mean stays a mean.
A group that aborts is left out; the round aborts only when no group is left.

Floors (docs/privacy.md, "Survivor floor"): the task's min_cohort and dp.min_survivors are lower bounds
that the gateway's own settings can only raise. Every released sum is a group sum, so every group has at
least dp.min_survivors members and a group whose survivors fall below it aborts (its devices refuse to
unmask it too); the cohort must reach max(gateway min_cohort, task min_cohort).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from aggregator_gateway.gateway import robust
from aggregator_gateway.gateway.cohort_driver import STAGE_MESSAGES, CohortDriver, CohortParams, StageMessage
from aggregator_gateway.gateway.lifecycle import CohortEvent, CohortMachine, CohortStateMixin
from fl_protocol.codec.pipeline import decode_sum, decode_weighted_sum, encoded_length
from fl_protocol.errors import ProtocolError
from fl_protocol.secagg import Abort, AggregateResult, Roster, RoutedShares, Survivors, UnmaskRequest
from fl_protocol.secagg.messages import MAX_REASON_CHARS
from fl_protocol.stages import Stage
from fl_protocol.wire.messages import PlainUpdate, RoundTask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupPolicy:
    """How a cohort is split and recombined (from `[gateway]`)."""

    group_count: int = 1
    min_group_size: int = 3
    rule: str = "none"
    trim_fraction: float = 0.2
    max_norm_ratio: float = 3.0


@dataclass(frozen=True, eq=False)
class RoundResult:
    """What the partial aggregate is made of. `ring_sum`: the groups' unmasked sums added mod 2^b."""

    vector_sum: np.ndarray
    count: int
    survivors: tuple[str, ...]
    ring_sum: np.ndarray
    group_sizes: tuple[int, ...]
    weight_sum: float  # Σ w of weighted rounds (the devices' weight coordinate); the count otherwise


def decode_partial(values: np.ndarray, *, count: int, task: RoundTask) -> tuple[np.ndarray, float]:
    """(float64 vector sum, weight sum) of `count` devices' unmasked ring sum under the task's settings."""
    codec, dimension = task.codec, task.model_dimension
    if task.training.weighted:
        return decode_weighted_sum(values, count=count, settings=codec, dimension=dimension)
    return decode_sum(values, count=count, settings=codec, dimension=dimension), float(count)


def combine_means(sums: list[np.ndarray], weights: list[float], *, rule: str, **params: Any) -> np.ndarray:
    """Σ of the sums for rule "none"; else the robust mean of sum_i / weight_i, times Σ weights.

    Either way the result divided by Σ weights is the (robust) weighted mean the cloud computes.
    """
    if rule == "none" or len(sums) == 1:
        return np.sum(sums, axis=0)
    means = np.stack([s / w for s, w in zip(sums, weights, strict=True)])  # [n, d]
    return robust.robust_mean(means, rule=rule, **params) * float(sum(weights))


@dataclass(frozen=True)
class Outgoing:
    """One message to publish: on the gateway's stage topic (`recipient` None) or a device's inbox."""

    stage: Stage | None  # the downlink stage topic (ROSTER also carries Abort); None for inbox
    message: Roster | RoutedShares | Survivors | UnmaskRequest | Abort
    recipient: str | None = None


def group_seed(graph_seed: bytes, index: int) -> bytes:
    """Public graph seed of group `index`, derived from the round's public seed."""
    return hashlib.sha256(b"fedlora/gateway/group/" + graph_seed + index.to_bytes(4, "big")).digest()


def split_groups(members: list[str], *, graph_seed: bytes, policy: GroupPolicy) -> list[list[str]]:
    """Deterministic split (public seed) into G = min(group_count, n // min_group_size) ≥ 1 groups of
    near-equal size (each ≥ min_group_size when G > 1)."""
    count = max(1, min(policy.group_count, len(members) // max(1, policy.min_group_size)))
    order = sorted(members, key=lambda node: hashlib.sha256(graph_seed + node.encode()).digest())
    return [sorted(order[g::count]) for g in range(count)]


@dataclass
class RoundDriver(CohortStateMixin):
    """The gateway's state for one round; see the module docstring."""

    gateway_id: str
    fleet: str
    task: RoundTask
    graph_seed: bytes = field(repr=False)
    expected_devices: frozenset[str]
    verify_key: Callable[[str], Ed25519PublicKey | None] = field(repr=False)
    min_cohort: int
    policy: GroupPolicy = field(default_factory=GroupPolicy)

    def __post_init__(self) -> None:
        task = self.task
        floor = task.dp.min_survivors
        self.min_cohort = max(self.min_cohort, task.min_cohort)  # the gateway may raise, never lower
        if self.policy.min_group_size < floor:
            self.policy = dataclasses.replace(self.policy, min_group_size=floor)
        self.dimension_k = encoded_length(task.model_dimension, task.codec, weighted=task.training.weighted)
        fraction = min(max(task.secagg.threshold_fraction, 0.5), 0.99)
        self.params = CohortParams(
            gateway_id=self.gateway_id,
            fleet=self.fleet,
            round_id=task.round_id,
            dimension=self.dimension_k,
            ring_bits=task.codec.ring_bits,
            model_hash=task.model_sha256,
            min_cohort=max(2, self.policy.min_group_size if self.policy.group_count > 1 else 2),
            degree=task.secagg.neighbour_degree or None,
            threshold_fraction=fraction,
            min_survivors=floor,
        )
        self._lobby = CohortDriver(self.params, graph_seed=self.graph_seed, verify_key=self.verify_key)
        self._adverts: dict[str, StageMessage] = {}
        self.groups: list[CohortDriver] = []
        self._group_aborts: list[str] = []
        self._owner: dict[str, CohortDriver] = {}
        self.machine = CohortMachine(trusted=False)
        self.aborted: Abort | None = None  # the Abort published, once aborted
        self.result: RoundResult | None = None  # the partial's content, once done

    @property
    def round_id(self) -> int:
        """The task's round id."""
        return self.task.round_id

    def message_class(self, stage: Stage) -> type[StageMessage]:
        """The SecAgg+ message class of uplink `stage` (KeyError for any other stage)."""
        return STAGE_MESSAGES[stage]

    def accept(self, stage: Stage, message: StageMessage | PlainUpdate) -> bool:
        """A verified device message (sender checked against the frame by the caller)."""
        sender = message.sender
        if self.finished or sender not in self.expected_devices:
            logger.info(
                "round %d: ignored %s from %s: %s",
                self.round_id,
                stage.value,
                sender,
                "round finished" if self.finished else "not an expected device",
            )
            return False
        if isinstance(message, PlainUpdate):  # trusted mode's message: never part of a secure round
            logger.info("round %d: ignored a plain update from %s: secure round", self.round_id, sender)
            return False
        if stage is Stage.ADVERTISE and self.stage is Stage.ADVERTISE:
            accepted = self._lobby.accept(stage, message)
            if accepted:
                self._adverts[sender] = message
            return accepted
        group = self._owner.get(sender)
        if group is None or stage is not self.stage:
            logger.info(
                "round %d: ignored %s from %s in stage %s",
                self.round_id,
                stage.value,
                sender,
                self.state.value,
            )
            return False
        return group.accept(stage, message)

    def ready(self) -> bool:
        """True when the current stage may close before its deadline: everyone awaited has answered."""
        if self.finished:
            return False
        if self.stage is Stage.ADVERTISE:
            return bool(self.expected_devices) and set(self._adverts) >= self.expected_devices
        live = [g for g in self.groups if not g.aborted]
        return bool(live) and all(g.complete() for g in live)

    def deadline_ms(self) -> int:
        """Absolute deadline of the current stage (from the task); ProtocolError once the round ended."""
        return stage_deadline_ms(self.task, self.stage)

    def close(self) -> list[Outgoing]:
        """Close the current stage for every live group; return what to publish.

        The round's machine takes `close` (next stage), `release` (the groups' sums are combined) or
        `abort`; a result outside the last stage is a `TransitionError` (lifecycle.py's table)."""
        if self.finished:
            return []
        if self.stage is Stage.ADVERTISE:
            out = self._close_advertise()
        else:
            out = self._close_groups()
        if not self.finished:
            self.machine.apply(CohortEvent.CLOSE)
        return out

    def _close_advertise(self) -> list[Outgoing]:
        members = sorted(self._adverts)
        if len(members) < self.min_cohort:
            return self.abort(f"cohort of {len(members)} below the minimum of {self.min_cohort}")
        for index, names in enumerate(split_groups(members, graph_seed=self.graph_seed, policy=self.policy)):
            group = CohortDriver(
                self.params, graph_seed=group_seed(self.graph_seed, index), verify_key=self.verify_key
            )
            for name in names:
                group.accept(Stage.ADVERTISE, self._adverts[name])
                self._owner[name] = group
            self.groups.append(group)
        return self._close_groups()

    def _close_groups(self) -> list[Outgoing]:
        out: list[Outgoing] = []
        results: list[AggregateResult] = []
        for index, group in enumerate(self.groups):
            if group.aborted:
                continue
            closed = group.close()
            if isinstance(closed, Abort):
                logger.warning("round %d: group %d aborted: %s", self.round_id, index, closed.reason)
                self._group_aborts.append(f"group {index}: {closed.reason}")
            elif isinstance(closed, dict):
                out += [Outgoing(None, routed, recipient=node) for node, routed in closed.items()]
            elif isinstance(closed, AggregateResult):
                results.append(closed)
            else:
                stage = {
                    Roster: Stage.ROSTER,
                    Survivors: Stage.SURVIVORS,
                    UnmaskRequest: Stage.UNMASK_REQUEST,
                }
                out.append(Outgoing(stage[type(closed)], closed))
        if all(g.aborted for g in self.groups):
            reasons = "; ".join(self._group_aborts)
            return self.abort(f"every group of the cohort aborted ({reasons})"[:MAX_REASON_CHARS])
        if results:  # the unmask stage closed: every live group's sum is in
            self.result = combine_groups(results, task=self.task, policy=self.policy)
            self.machine.apply(CohortEvent.RELEASE)
        return out

    def abort(self, reason: str) -> list[Outgoing]:
        """Abandon the round: nothing is released; the Abort goes out on the roster topic.

        Raises TransitionError if the round already ended (done or aborted)."""
        self.machine.abort()
        logger.warning("round %d: aborting: %s", self.round_id, reason)
        self.aborted = Abort(round_id=self.round_id, sender=self.gateway_id, reason=reason)
        return [Outgoing(Stage.ROSTER, self.aborted)]


def stage_deadline_ms(task: RoundTask, stage: Stage | None) -> int:
    """The task's absolute deadline for `stage`; ProtocolError for None (a round that ended has none)."""
    if stage is None:
        raise ProtocolError(f"round {task.round_id} ended: no stage deadline")
    return int(task.deadlines_ms[stage.value])


def combine_groups(results: list[AggregateResult], *, task: RoundTask, policy: GroupPolicy) -> RoundResult:
    """Decode each group's ring sum and combine: exact sum for rule "none", else robust mean × count."""
    codec = task.codec
    decoded = [decode_partial(r.values, count=len(r.survivors), task=task) for r in results]
    sums, weights = [d[0] for d in decoded], [d[1] for d in decoded]
    sizes = tuple(len(r.survivors) for r in results)
    total = sum(sizes)
    vector_sum = combine_means(
        sums,
        weights,
        rule=policy.rule,
        trim_fraction=policy.trim_fraction,
        max_norm_ratio=policy.max_norm_ratio,
    )
    ring_sum = np.zeros(results[0].values.shape, dtype=np.uint64)
    for r in results:
        ring_sum += r.values
    ring_sum &= np.uint64((1 << codec.ring_bits) - 1)
    survivors = tuple(sorted(s for r in results for s in r.survivors))
    return RoundResult(
        np.asarray(vector_sum, dtype=np.float64),
        total,
        survivors,
        ring_sum.astype(np.uint32),
        sizes,
        float(sum(weights)),
    )
