"""From a task to a joined round (docs/device.md, "Lifecycle of a round", steps 1-4): the round waiting
for its global model and the joined round. The models themselves (held versions, deltas, the check that a
model is the one the task names) are edge_runtime.agent.models.

The round's machine (edge_runtime.agent.round_machine) is in OFFERED while the gates decide, in READY
while it waits here (a `PendingRound`), then JOINED (`open_round` hands it to the round) or SKIPPED.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from edge_runtime.agent.participation import Ready
from edge_runtime.agent.round import DeviceRound
from edge_runtime.agent.round_api import RoundMachine, RoundVariant
from edge_runtime.agent.trusted_round import TrustedDeviceRound
from fl_protocol.identity import NodeIdentity
from fl_protocol.secagg import SecAggClient
from fl_protocol.wire.messages import RoundTask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingRound:
    """A task whose gates passed, waiting for its global model; `machine` is in READY."""

    task: RoundTask
    ready: Ready
    machine: RoundMachine


def open_round(
    task: RoundTask,
    machine: RoundMachine,
    *,
    identity: NodeIdentity,
    gateway: str,
    rng_bytes: Callable[[int], bytes],
) -> RoundVariant:
    """The joined round (`machine` in JOINED): trusted mode (participation.decide checked the opt-in) or
    SecAgg+ with a fresh `SecAggClient` (keys from `rng_bytes`, in memory only)."""
    if task.secagg.trusted:
        logger.info("round %d: trusted-gateway mode: the update is sent without masking", task.round_id)
        return TrustedDeviceRound(task, identity.node_id, machine=machine)
    client = SecAggClient(
        identity.node_id,
        gateway_id=gateway,
        fleet=identity.fleet,
        round_id=task.round_id,
        identity_key=identity.signing_key,
        verify_key=identity.verify_key,
        model_hash=task.model_sha256,
        rng_bytes=rng_bytes,
        min_survivors=task.dp.min_survivors,
    )
    return DeviceRound(task, client, machine=machine)
