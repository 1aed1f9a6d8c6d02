"""From a task to a joined round (docs/device.md, "Lifecycle of a round", steps 1-4): the round waiting
for its global model, the models kept for it, the check that a model is the one the task names, and the
joined round.

The round's machine (edge_runtime.agent.round_machine) is in OFFERED while the gates decide, in READY
while it waits here (a `PendingRound`), then JOINED (`open_round` hands it to the round) or SKIPPED.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_runtime.agent.participation import Ready
from edge_runtime.agent.round import DeviceRound
from edge_runtime.agent.round_api import RoundMachine, RoundVariant
from edge_runtime.agent.trusted_round import TrustedDeviceRound
from fl_protocol.errors import DecodeError
from fl_protocol.identity import NodeIdentity
from fl_protocol.secagg import SecAggClient
from fl_protocol.wire.messages import GlobalModel, RoundTask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingRound:
    """A task whose gates passed, waiting for its global model; `machine` is in READY."""

    task: RoundTask
    ready: Ready
    machine: RoundMachine


class ModelCache:
    """The latest `keep` global model versions, plus the one a pending round waits for."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._models: dict[int, GlobalModel] = {}

    def __contains__(self, version: int) -> bool:
        return version in self._models

    def __getitem__(self, version: int) -> GlobalModel:
        return self._models[version]

    def add(self, model: GlobalModel, *, pinned: int | None) -> None:
        """Keep `model`; drop versions older than the latest `keep`, except `pinned` (a pending round's)."""
        self._models[model.model_version] = model
        for version in sorted(self._models)[: -self._keep]:
            if version != pinned:
                del self._models[version]


def global_vector(task: RoundTask, model: GlobalModel, *, length: int) -> np.ndarray | str:
    """The model's float32 vector, shape (length,), or why it cannot be this task's global model."""
    try:
        if model.model_sha256 != task.model_sha256:
            raise DecodeError()
        vector = model.vector(max_elements=length)
    except DecodeError:
        return f"global model {task.model_version} does not match the task's sha256"
    if vector.shape != (length,):
        return "global model length differs from this bundle"
    return vector


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
