"""The device's global models (docs/device.md, "Lifecycle of a round", step 3): the versions it holds,
the deltas that bring a held version to the next one, and the full model it fetches when no delta can.

The device subscribes to every `model/{v}/delta` (fl_protocol.topics.device_downlink_filters), not to the
full models. A `GlobalModelDelta` signed by the cloud whose base the device holds (same version and
sha256) is applied at once; the result, checked against the delta's own sha256, is held as version v.
For a task of version v the device trains on the held v only if its sha256 is the task's. Otherwise (no
base, a hash mismatch, a bad delta, or the delta not there yet) it subscribes to the full `model/{v}`
(retained, so it arrives at once) and unsubscribes as soon as that arrived or no round waits for it any
more. A bad delta is never trained on; it costs at most the full download.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fl_protocol.errors import DecodeError
from fl_protocol.identity import NodeIdentity
from fl_protocol.topics import Topic, model_topic
from fl_protocol.wire.messages import GlobalModel, GlobalModelDelta, RoundTask

logger = logging.getLogger(__name__)


class Subscriber(Protocol):
    """What the models need from the transport (fl_transport.mqtt.MqttConnection fits)."""

    def subscribe(self, topic_filter: str, *, qos: int = 1) -> None:
        """Subscribe (retained messages on the topic arrive at once)."""
        ...

    def unsubscribe(self, topic_filter: str) -> None:
        """Undo `subscribe`."""
        ...


@dataclass(frozen=True, eq=False)
class HeldModel:
    """A version the device holds: float32 `vector` (d,) hashing to `sha256`; `full`: it came as a full
    model (the cloud's own bytes) rather than from a delta."""

    version: int
    sha256: bytes
    vector: np.ndarray
    full: bool


class ModelCache:
    """The latest `keep` versions held, plus the one a pending round waits for (`pinned`)."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._models: dict[int, HeldModel] = {}

    def get(self, version: int) -> HeldModel | None:
        """The held `version`, or None."""
        return self._models.get(version)

    def add(self, model: HeldModel, *, pinned: int | None) -> None:
        """Hold `model`; drop versions older than the latest `keep`, except `pinned`."""
        self._models[model.version] = model
        for version in sorted(self._models)[: -self._keep]:
            if version != pinned:
                del self._models[version]

    def drop(self, version: int) -> None:
        """Forget `version` (e.g. built from a delta but not the task's model)."""
        self._models.pop(version, None)


class DeviceModels:
    """Held versions, pending deltas and full-model fetches of one device (module docstring).

    `length`: d of the device's bundle; `keep`: versions held (the latest, and the one before it as the
    base of the next delta). Every method runs on the agent's thread.
    """

    def __init__(
        self, identity: NodeIdentity, subscriber: Subscriber, *, cloud_id: str, length: int, keep: int = 2
    ) -> None:
        self._identity, self._subscriber = identity, subscriber
        self._cloud_id, self._length = cloud_id, length
        self._cache = ModelCache(keep)
        self._delta: GlobalModelDelta | None = None  # the newest delta not applied yet (its base missing)
        self._fetching: set[int] = set()  # versions whose full model topic this device subscribed to
        self._refused: dict[int, str] = {}  # full models that arrived but cannot serve: why

    def on_delta(self, topic: Topic, payload: bytes, *, pinned: int | None) -> int | None:
        """Take a message on `model/{v}/delta`; returns v if the device now holds it, else None (logged)."""
        if not payload:
            return None  # the cloud cleared a superseded version's delta
        try:
            _, delta = self._identity.decode(payload, GlobalModelDelta, senders={self._cloud_id})
        except DecodeError:
            logger.warning(
                "ignored model delta %s: malformed or not signed by %s", topic.model_version, self._cloud_id
            )
            return None
        if delta.model_version != topic.model_version:
            logger.warning("ignored model delta: version in topic and message differ")
            return None
        if self._cache.get(delta.model_version) is not None:
            return None
        base = self._cache.get(delta.base_version)
        if base is None:  # kept: the base may still come as a full model
            if self._delta is None or delta.model_version >= self._delta.model_version:
                self._delta = delta
            return None
        return delta.model_version if self._apply(delta, base, pinned=pinned) else None

    def on_model(self, topic: Topic, payload: bytes, *, pinned: int | None) -> int | None:
        """Take a full model on `model/{v}` (fetched); returns v once it arrived (held, or refused with a
        reason `vector_for` reports), None for anything else."""
        version = topic.model_version
        if not payload or version not in self._fetching:
            return None
        try:
            _, model = self._identity.decode(payload, GlobalModel, senders={self._cloud_id})
        except DecodeError:
            logger.warning("ignored global model %s: malformed or not signed by %s", version, self._cloud_id)
            return None
        if model.model_version != version:
            logger.warning("ignored global model: version in topic and message differ")
            return None
        self._stop_fetching(version)
        try:
            vector = model.vector(max_elements=self._length)
        except DecodeError:
            self._refused[version] = f"global model {version} does not match its sha256"
            return version
        if vector.shape != (self._length,):
            self._refused[version] = "global model length differs from this bundle"
            return version
        self._cache.add(HeldModel(version, model.model_sha256, vector, full=True), pinned=pinned)
        self._apply_waiting(pinned=pinned)
        return version

    def vector_for(self, task: RoundTask) -> np.ndarray | str | None:
        """The task's global vector, float32 (d,); a reason to sit the round out (its full model cannot
        serve); or None: not held yet, the full model is being fetched (a retained message: at once)."""
        version = task.model_version
        if version in self._refused:
            return self._refused.pop(version)
        held = self._cache.get(version)
        if held is not None and held.sha256 == task.model_sha256:
            return held.vector
        if held is not None and held.full:
            return f"global model {version} does not match the task's sha256"
        if held is not None:
            logger.warning("model %d built from its delta is not the task's: fetching the full one", version)
            self._cache.drop(version)
        self._fetch(version)
        return None

    def release(self) -> None:
        """No round waits for a model any more: stop every full-model fetch."""
        for version in sorted(self._fetching):
            self._stop_fetching(version)
        self._refused.clear()

    def _apply(self, delta: GlobalModelDelta, base: HeldModel, *, pinned: int | None) -> bool:
        """Apply `delta` to `base`; True if the result is now held (a refusal is logged and final)."""
        if base.sha256 != delta.base_sha256:
            logger.warning("model delta %d is for another base than the one held", delta.model_version)
            return False
        try:
            vector = delta.apply(base.vector)
        except DecodeError:
            logger.warning("model delta %d refused (bad values or hash mismatch)", delta.model_version)
            return False
        self._cache.add(HeldModel(delta.model_version, delta.model_sha256, vector, full=False), pinned=pinned)
        logger.info("global model %d built from its delta", delta.model_version)
        return True

    def _apply_waiting(self, *, pinned: int | None) -> None:
        """Apply the kept delta if its base arrived (it is dropped either way then)."""
        delta = self._delta
        if delta is None or self._cache.get(delta.model_version) is not None:
            return
        base = self._cache.get(delta.base_version)
        if base is not None:
            self._delta = None
            self._apply(delta, base, pinned=pinned)

    def _fetch(self, version: int) -> None:
        if version not in self._fetching:
            logger.info("global model %d: subscribing to the full model", version)
            self._fetching.add(version)
            self._subscriber.subscribe(model_topic(self._identity.fleet, version), qos=1)

    def _stop_fetching(self, version: int) -> None:
        if version in self._fetching:
            self._fetching.discard(version)
            self._subscriber.unsubscribe(model_topic(self._identity.fleet, version))
