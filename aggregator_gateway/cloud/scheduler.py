"""Scheduling: which round attempt runs next, putting it on the broker, and when the run is over.

Round ids grow by one per attempt and are never reused, across restarts too (the next id follows the last
recorded one; docs/failure-policy.md). Per attempt the scheduler publishes `model/{v}` and, when the store
holds one, `model/{v}/delta` (the quantized delta from v − 1, docs/update-codec.md "Downlink"), both
retained, once per version (the superseded version's retained messages are cleared; the delta goes first,
so a device holding v − 1 has it before any task of v) and, once the attempt's record is durable,
the signed `round/{r}/task` (retained), which it clears again when the attempt closes. After an attempt it
says what the cloud round state machine does next (`aggregator_gateway.cloud.lifecycle`): schedule the
next round or finish after a commit; retry or give up after a failure (more than `max_retries` failures
in a row).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from aggregator_gateway.cloud.config import CloudConfig
from aggregator_gateway.cloud.lifecycle import CloudEvent
from aggregator_gateway.cloud.store import ModelStore, VersionInfo
from aggregator_gateway.cloud.tasks import CodecShape, build_task
from fl_protocol.errors import ConfigError, DecodeError
from fl_protocol.identity import NodeIdentity
from fl_protocol.topics import model_delta_topic, model_topic, task_topic
from fl_protocol.wire.fields import decode_fields
from fl_protocol.wire.messages import GlobalModel, GlobalModelDelta, RoundTask

logger = logging.getLogger(__name__)


class Publisher(Protocol):
    """What the cloud needs from the transport (fl_transport.mqtt.MqttConnection fits)."""

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, durable: bool = False
    ) -> None:
        """Publish one message."""
        ...


class RoundScheduler:
    """Round ids, the retry budget, and the retained model and task messages of each attempt."""

    def __init__(
        self,
        config: CloudConfig,
        *,
        identity: NodeIdentity,
        publisher: Publisher,
        store: ModelStore,
        shape: CodecShape,
        last_round_id: int,
        random_bytes: Callable[[int], bytes],
    ) -> None:
        self._config, self._identity, self._publisher, self._store = config, identity, publisher, store
        self._shape, self._random_bytes = shape, random_bytes
        self._next_round = last_round_id + 1
        self._failures_in_a_row = 0
        self.published_model: int | None = None
        self.model_frame_bytes = 0  # measured signed frames of the published version: full model ...
        self.delta_frame_bytes = 0  # ... and its delta (0: none published)

    @property
    def failures_in_a_row(self) -> int:
        """Failed attempts since the last commit."""
        return self._failures_in_a_row

    def prepare(self, info: VersionInfo, *, noise_multiplier: float, now_ms: int) -> RoundTask:
        """Take the next round id, publish `info`'s model, and build the attempt's task (not yet sent)."""
        round_id = self._next_round
        self._next_round += 1
        self.publish_model(info.version, round_id)
        return build_task(
            self._config,
            round_id=round_id,
            model_version=info.version,
            model_sha256=bytes.fromhex(info.sha256),
            shape=self._shape,
            noise_multiplier=noise_multiplier,
            now_ms=now_ms,
            random_bytes=self._random_bytes,
        )

    def publish_task(self, task: RoundTask) -> None:
        """Publish the signed task on round/{r}/task (retained)."""
        self._publisher.publish(
            task_topic(self._identity.fleet, task.round_id),
            self._identity.encode(task, round_id=task.round_id),
            retain=True,
        )

    def clear_task(self, round_id: int) -> None:
        """Clear round/{r}/task's retained message (the attempt closed, or a restart interrupted it)."""
        self._publisher.publish(task_topic(self._identity.fleet, round_id), b"", retain=True)

    def publish_model(self, version: int, round_id: int) -> None:
        """Publish model/{version}/delta (if the store has it) and model/{version} (retained) unless they
        are already out; clear the superseded ones. Their measured frame sizes are kept."""
        if self.published_model == version:
            return
        fleet = self._identity.fleet
        delta = self._stored_delta(version)
        if self.published_model is not None and self.delta_frame_bytes:
            self._publisher.publish(model_delta_topic(fleet, self.published_model), b"", retain=True)
        self.delta_frame_bytes = 0
        if delta is not None:
            delta_frame = self._identity.encode(delta, round_id=round_id)
            self._publisher.publish(model_delta_topic(fleet, version), delta_frame, retain=True)
            self.delta_frame_bytes = len(delta_frame)
        vector = self._store.load(version)
        frame = self._identity.encode(GlobalModel.from_vector(version, vector), round_id=round_id)
        self._publisher.publish(model_topic(fleet, version), frame, retain=True)
        self.model_frame_bytes = len(frame)
        if self.published_model is not None:
            self._publisher.publish(model_topic(fleet, self.published_model), b"", retain=True)
        self.published_model = version

    def _stored_delta(self, version: int) -> GlobalModelDelta | None:
        """The delta the store kept for `version`, or None (none kept, or unreadable: logged)."""
        body = self._store.downlink_delta(version=version)
        if body is None:
            if self._config.cloud.downlink_bits and version > 0:
                logger.info("model version %d has no stored delta: devices download the full model", version)
            return None
        try:
            return GlobalModelDelta.from_fields(decode_fields(body, limits=GlobalModelDelta.FIELD_LIMITS))
        except (DecodeError, ConfigError) as exc:
            logger.warning("stored delta of model version %d unreadable (%s): full model only", version, exc)
            return None

    def at_start(self, completed_rounds: int) -> CloudEvent:
        """FINISH if the store already holds every planned round, else SCHEDULE."""
        return CloudEvent.FINISH if self._all_done(completed_rounds) else CloudEvent.SCHEDULE

    def after_commit(self, completed_rounds: int) -> CloudEvent:
        """An attempt committed: the failure streak ends; FINISH or SCHEDULE the next round."""
        self._failures_in_a_row = 0
        return CloudEvent.FINISH if self._all_done(completed_rounds) else CloudEvent.SCHEDULE

    def after_failure(self) -> CloudEvent:
        """An attempt failed: GIVE_UP once failures in a row exceed `max_retries`, else RETRY."""
        self._failures_in_a_row += 1
        if self._failures_in_a_row > self._config.cloud.max_retries:
            return CloudEvent.GIVE_UP
        return CloudEvent.RETRY

    def _all_done(self, completed_rounds: int) -> bool:
        return completed_rounds >= self._config.cloud.rounds
