"""The cloud's round coordinator: wires the pieces of the cloud role together (docs/cloud.md, "Code layout").

Single-threaded: `handle` (messages) and `tick` (deadlines) run on the role's EventLoop thread. Per round
attempt (docs/round-protocol.md, "The cloud"): the scheduler publishes model/{v}, its quantized delta
model/{v}/delta and round/{r}/task (retained, signed) -> the collector takes verified PartialAggregates
from the registered gateways until all answered, every device sat out, or the `partial` deadline -> the
global step combines, runs the server optimizer, the downlink quantizer and the accountant and stores
v+1 -> the reporter records the round -> next round. An attempt with no usable partial is recorded as
failed and retried under a new round id from the same model version, at most `max_retries` times in a
row. When done: `final.safetensors`, the adapter and
`rounds.json` in store_dir. Every step is a transition of the cloud round state machine
(`lifecycle.TABLE`); an exception in the cloud's own code or I/O puts it in ERROR and the process exits 70.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from aggregator_gateway.cloud.collector import OpenRound, RoundCollector
from aggregator_gateway.cloud.config import CloudConfig
from aggregator_gateway.cloud.downlink import DownlinkStep
from aggregator_gateway.cloud.final_output import write_final_outputs
from aggregator_gateway.cloud.global_step import GlobalStep
from aggregator_gateway.cloud.lifecycle import CloudEvent, CloudLifecycle, CloudState
from aggregator_gateway.cloud.records import RecordState, RoundRecord
from aggregator_gateway.cloud.reporting import CloudReporter
from aggregator_gateway.cloud.round_watch import fleet_devices
from aggregator_gateway.cloud.scheduler import Publisher, RoundScheduler
from aggregator_gateway.cloud.store import ModelStore
from aggregator_gateway.cloud.tasks import cloud_task_settings, codec_shape
from fl_protocol.codec.pipeline import uplink_payload_bytes
from fl_protocol.errors import ConfigError, DecodeError, ProtocolError
from fl_protocol.identity import NodeIdentity
from fl_protocol.topics import Topic, TopicKind
from fl_protocol.wire.messages import PartialAggregate, Status

logger = logging.getLogger(__name__)

_RUN_ENDS = frozenset({CloudEvent.FINISH, CloudEvent.GIVE_UP})


class CloudCoordinator:
    """Runs `config.cloud.rounds` rounds over MQTT; see the module docstring.

    Raises ConfigError at construction if a registered gateway has no key or the ring cannot hold the
    summed noise; StoreError if the store cannot be read.
    """

    def __init__(
        self,
        config: CloudConfig,
        *,
        identity: NodeIdentity,
        publisher: Publisher,
        store: ModelStore,
        initial_vector: np.ndarray,
        bundle_id: str,
        clock_ms: Callable[[], int],
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        missing = [g for g in config.cloud.gateways if identity.verify_key(g) is None]
        if missing:
            raise ConfigError(f"gateway(s) {', '.join(missing)} have no key in the fleet key directory")
        self._config, self._identity, self._store = config, identity, store
        self._bundle_id, self._clock_ms = bundle_id, clock_ms
        gateways = frozenset(config.cloud.gateways)
        devices = fleet_devices(config.identity.fleet_keys_file, gateways)
        if store.latest() is None:
            store.add(
                np.asarray(initial_vector, np.float32), parent=None, round_id=None, created_ms=clock_ms()
            )
        self._dimension = int(store.load(0).shape[0])
        shape = codec_shape(config, self._dimension)
        self._step = GlobalStep(config, store=store, shape=shape)
        settings = cloud_task_settings(
            config, shape, noise_multiplier=self._step.noise_multiplier, random_bytes=bytes
        )
        self._uplink = uplink_payload_bytes(
            self._dimension, settings.codec, weighted=config.training.weighting != "uniform"
        )
        self._reporter = CloudReporter(
            config,
            identity=identity,
            publisher=publisher,
            store=store,
            clock_ms=clock_ms,
            epsilon=self._step.epsilon,
        )
        self._interrupted = self._reporter.settle_interrupted()
        self._collector = RoundCollector(
            identity=identity, gateways=gateways, fleet_devices=devices, dimension=self._dimension
        )
        self._scheduler = RoundScheduler(
            config,
            identity=identity,
            publisher=publisher,
            store=store,
            shape=shape,
            last_round_id=self._reporter.last_round_id(),
            random_bytes=random_bytes,
        )
        self._lifecycle = CloudLifecycle()
        self._refresh()

    # -- public surface -------------------------------------------------------------------------------
    @property
    def state(self) -> CloudState:
        """Where the run is in the cloud round state machine (`lifecycle.TABLE`)."""
        return self._lifecycle.state

    @property
    def done(self) -> bool:
        """True once every round completed, the retry limit was hit, or a fault ended the run."""
        return self._lifecycle.done

    @property
    def succeeded(self) -> bool:
        """True if every planned round completed."""
        return self._lifecycle.succeeded

    @property
    def dimension(self) -> int:
        """Length d of the flat LoRA vector."""
        return self._dimension

    def snapshot(self) -> dict[str, Any]:
        """Immutable view for the status page (safe to call from another thread)."""
        return self._reporter.snapshot()

    def report(self) -> dict[str, Any]:
        """rounds.json: config summary, every round record, and the final model."""
        return self._reporter.report(
            noise_multiplier=self._step.noise_multiplier, dimension=self._dimension, succeeded=self.succeeded
        )

    def start(self) -> None:
        """Publish our status and the first (or resumed) round."""
        with self._faults_end_the_run():
            for round_id in self._interrupted:  # a restart: its task must not stay retained
                self._scheduler.clear_task(round_id)
            event = self._scheduler.at_start(self._reporter.completed_rounds())
            if event is CloudEvent.FINISH:
                logger.info("all %d rounds already completed in the store", self._config.cloud.rounds)
            self._advance(event)

    def handle(self, topic: Topic, payload: bytes) -> None:
        """EventLoop handler: partials, gateway aborts and statuses; everything else is ignored."""
        if not payload:
            return  # a cleared retained message
        with self._faults_end_the_run():
            if topic.kind is TopicKind.PARTIAL:
                self._close_on(self._collector.on_partial(topic, payload))
            elif topic.kind is TopicKind.ABORT:
                self._close_on(self._collector.on_abort(topic, payload))
            elif topic.kind is TopicKind.STATUS and topic.node not in (None, self._identity.node_id):
                self._on_status(topic.node, payload)

    def tick(self) -> None:
        """EventLoop tick: close the open round at its partial deadline."""
        with self._faults_end_the_run():
            self._close_on(self._collector.at(self._clock_ms()))

    # -- the round lifecycle --------------------------------------------------------------------------
    @contextmanager
    def _faults_end_the_run(self) -> Iterator[None]:
        """A peer's DecodeError or ProtocolError passes (rejected, the round goes on); any other exception
        is the cloud's own fault: the machine enters ERROR and the exception goes on to the event loop."""
        try:
            yield
        except (DecodeError, ProtocolError):
            raise
        except Exception:
            self._lifecycle.fail()
            raise

    def _advance(self, event: CloudEvent) -> None:
        """After an attempt (or at start): open the next one, or end the run (FINISH / GIVE_UP)."""
        if event in _RUN_ENDS:
            self._finish(event)
        else:
            self._start_round(event)

    def _start_round(self, event: CloudEvent) -> None:
        self._lifecycle.apply(event)
        info = self._store.latest()
        assert info is not None
        now_ms = self._clock_ms()
        task = self._scheduler.prepare(info, noise_multiplier=self._step.noise_multiplier, now_ms=now_ms)
        record = RoundRecord(
            round=task.round_id,
            model_version=info.version,
            started_ms=now_ms,
            dense_fp32_bytes=self._uplink.dense_fp32_bytes,
            delta=self._config.privacy.delta,
            downlink_full_bytes=self._scheduler.model_frame_bytes,
            downlink_delta_bytes=self._scheduler.delta_frame_bytes,
        )
        # Durable before the task goes out: a restart never reuses this round id (docs/failure-policy.md).
        self._reporter.begin(record)
        self._collector.open(task, record)
        self._scheduler.publish_task(task)
        self._lifecycle.apply(CloudEvent.PUBLISH_TASK)
        logger.info("round %d started on model version %d", task.round_id, info.version)
        self._publish_status()

    def _close_on(self, event: CloudEvent | None) -> None:
        """Close the open round if the collector said so (`event`: why)."""
        if event is None:
            return
        self._lifecycle.apply(event)
        current = self._collector.close()
        record = current.record
        self._scheduler.clear_task(current.round_id)
        now_ms = self._clock_ms()
        record.seconds = (now_ms - record.started_ms) / 1000.0
        record.gateways = sorted(current.partials)
        usable = [p for p in current.partials.values() if p.count > 0]
        try:
            step = self._step.compute(current.task.model_version, usable) if usable else None
        except (ProtocolError, ValueError) as exc:
            logger.warning("round %d: cannot combine partials: %s", current.round_id, exc)
            step = None
        if step is None:
            self._fail_round(record)
        else:
            self._complete_round(current, usable, step, now_ms)

    def _complete_round(
        self, current: OpenRound, usable: list[PartialAggregate], step: DownlinkStep, now_ms: int
    ) -> None:
        # Commit order: see global_step (privacy spend, model version, optimizer state), then the record.
        record = current.record
        record.survivors = sum(p.count for p in usable)
        # measured: the survivors' update frames as the gateways received them (issue 10, item 0)
        record.uplink_bytes_per_device = round(sum(p.uplink_frame_bytes for p in usable) / record.survivors)
        self._reporter.log.close(record)
        info = self._step.commit(
            step, parent=current.task.model_version, round_id=current.round_id, now_ms=now_ms
        )
        record.state, record.new_version = RecordState.COMPLETED, info.version
        self._reporter.close(record)
        self._lifecycle.apply(CloudEvent.COMMIT)
        self._scheduler.publish_model(info.version, current.round_id)
        logger.info(
            "round %d completed: model version %d, %d survivors, ε=%s",
            current.round_id,
            info.version,
            record.survivors,
            record.epsilon,
        )
        self._advance(self._scheduler.after_commit(self._reporter.completed_rounds()))

    def _fail_round(self, record: RoundRecord) -> None:
        record.state = RecordState.FAILED
        self._reporter.close(record)
        self._lifecycle.apply(CloudEvent.FAIL)
        event = self._scheduler.after_failure()
        if event is CloudEvent.GIVE_UP:
            logger.error(
                "round %d failed; %d failures in a row exceed max_retries=%d",
                record.round,
                self._scheduler.failures_in_a_row,
                self._config.cloud.max_retries,
            )
        else:
            logger.warning(
                "round %d failed (no usable partial); retrying from model version %d",
                record.round,
                record.model_version,
            )
        self._advance(event)

    def _finish(self, event: CloudEvent) -> None:
        self._lifecycle.apply(event)
        write_final_outputs(
            self._store,
            bundle_id=self._bundle_id,
            bundle_dir=self._config.cloud.bundle_dir,
            out_dir=Path(self._config.cloud.store_dir),
            report=self.report(),
        )
        self._publish_status()

    # -- statuses -------------------------------------------------------------------------------------
    def _on_status(self, node: str, payload: bytes) -> None:
        _header, status = self._identity.decode(payload, Status, senders={node})
        if status.node != node:
            raise ProtocolError(f"status on the topic of {node} names {status.node}")
        self._reporter.node_status(node, status)
        self._close_on(self._collector.on_status(node, status))
        self._refresh()

    def _open_round_id(self) -> int | None:
        current = self._collector.current
        return None if current is None else current.round_id

    def _publish_status(self) -> None:
        self._reporter.publish_status(
            self._lifecycle.node_state,
            round_id=self._open_round_id(),
            model_version=self._scheduler.published_model,
        )
        self._refresh()

    def _refresh(self) -> None:
        self._reporter.refresh(
            self._lifecycle.node_state,
            round_id=self._open_round_id(),
            model_version=self._scheduler.published_model,
        )
