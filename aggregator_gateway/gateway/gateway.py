"""The gateway role on the wire: verify, drive the round, persist, publish (docs/gateway.md).

`Gateway` holds no socket: it gets parsed topics and payloads from the event loop (`handle`), closes
stages on the injected clock (`tick`) and hands signed frames to a `publish(topic, payload)` callable.
`run_gateway` wires it to an `MqttConnection` and an `EventLoop`. Everything runs on the loop's thread.

The gateway relays nothing: devices read the cloud's retained task and model topics themselves.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aggregator_gateway.gateway.config import GatewayConfig, GatewaySection
from aggregator_gateway.gateway.driver import CohortRound, DeviceMessage
from aggregator_gateway.gateway.rounds import GroupPolicy, Outgoing, RoundDriver
from aggregator_gateway.gateway.store import RoundState, RoundStore
from aggregator_gateway.gateway.trusted import TrustedPolicy, TrustedRoundDriver
from fl_protocol.config import load_fleet_keys, load_signing_key
from fl_protocol.errors import ConfigError, DecodeError, FedloraError, ProtocolError
from fl_protocol.identity import NodeIdentity
from fl_protocol.secagg import Abort
from fl_protocol.stages import NodeState, Stage, round_stages
from fl_protocol.topics import (
    Topic,
    TopicKind,
    abort_topic,
    fleet_prefix,
    gateway_stage_topic,
    gateway_uplink_filter,
    inbox_topic,
    partial_topic,
    status_topic,
)
from fl_protocol.wire.messages import PartialAggregate, RoundTask, Status

if TYPE_CHECKING:
    from fl_transport.loop import EventLoop

logger = logging.getLogger(__name__)

GRAPH_SEED_BYTES = 32


class Gateway:
    """One gateway's protocol logic: at most one active round at a time (a newer task supersedes it)."""

    def __init__(
        self,
        *,
        identity: NodeIdentity,
        settings: GatewaySection,
        expected_devices: frozenset[str],
        store: RoundStore,
        publish: Callable[[str, bytes], None],
        clock_ms: Callable[[], int],
        seed_bytes: Callable[[int], bytes] = os.urandom,
        unmasked_sums_dir: Path | None = None,
    ) -> None:
        self.identity, self.settings, self.store = identity, settings, store
        self.node_id, self.fleet = identity.node_id, identity.fleet
        self.expected_devices = expected_devices
        self._publish, self._clock_ms, self._seed_bytes = publish, clock_ms, seed_bytes
        self._sums_dir = unmasked_sums_dir
        self.driver: CohortRound | None = None
        self._update_frame_bytes: dict[str, int] = {}  # device -> measured size of its accepted update frame
        self._not_before_ms = 0  # after a restart, no stage closes before this time
        self.policy = GroupPolicy(
            settings.group_count,
            settings.min_group_size,
            settings.group_rule,
            settings.trim_fraction,
            settings.max_norm_ratio,
        )
        self.trusted_policy = TrustedPolicy(
            settings.trusted_rule, settings.trim_fraction, settings.trusted_byzantine
        )

    # -- inbound ---------------------------------------------------------------------------------
    def handle(self, topic: Topic, payload: bytes) -> None:
        """Event-loop handler for every subscribed topic."""
        if topic.kind is TopicKind.TASK:
            self._on_task(topic, payload)
        elif topic.kind is TopicKind.DEVICE_STAGE and topic.gateway == self.node_id:
            self._on_device(topic, payload)
        else:
            logger.debug("ignored message on %s topic", topic.kind.value)

    def _on_task(self, topic: Topic, payload: bytes) -> None:
        _header, task = self.identity.decode(payload, RoundTask, senders={self.settings.cloud_id})
        latest = self.store.latest_round()
        if task.round_id != topic.round_id:
            logger.warning("ignored task: round %d on the topic of round %s", task.round_id, topic.round_id)
        elif latest is not None and task.round_id <= latest.round_id:
            logger.debug("ignored task of round %d: not newer than round %d", task.round_id, latest.round_id)
        elif (refusal := self._mode_refusal(task)) is not None:
            logger.warning("refused task of round %d: %s; publishing nothing", task.round_id, refusal)
        elif missing := self._missing_deadlines(task):
            logger.warning("ignored task of round %d: no deadline for %s", task.round_id, ", ".join(missing))
        else:
            self._start_round(task, payload)

    def _mode_refusal(self, task: RoundTask) -> str | None:
        """Why this gateway cannot run the task's mode: `trusted_mode` must agree with secagg.mode."""
        if task.secagg.trusted == self.settings.trusted_mode:
            return None
        if task.secagg.trusted:
            return "the task is in trusted mode (no masking) but this gateway has trusted_mode = false"
        return "the task uses secure aggregation but this gateway has trusted_mode = true"

    @staticmethod
    def _missing_deadlines(task: RoundTask) -> list[str]:
        """The task's uplink stages (fl_protocol.stages.round_stages) it has no deadline for."""
        stages = round_stages(trusted=task.secagg.trusted)
        return [stage.value for stage in stages if stage.value not in task.deadlines_ms]

    def _start_round(self, task: RoundTask, task_frame: bytes) -> None:
        seed = self._seed_bytes(GRAPH_SEED_BYTES)
        try:  # validate the task fully before any state changes (docs/failure-policy.md)
            driver = self._new_driver(task, seed)
        except (ConfigError, ValueError) as exc:
            raise ProtocolError(f"task of round {task.round_id} cannot be run here: {exc}") from None
        if self.driver is not None and not self.driver.finished:
            self._publish_outgoing(self.driver, self.driver.abort(f"superseded by round {task.round_id}"))
            self._finish(self.driver)
        self.store.begin_round(task.round_id, task_frame=task_frame, graph_seed=seed, now_ms=self._clock_ms())
        self.driver = driver
        self._update_frame_bytes = {}
        logger.info(
            "round %d: started in %s mode (%d expected devices, %d group(s) at most)",
            task.round_id,
            task.secagg.mode,
            len(self.expected_devices),
            1 if task.secagg.trusted else self.policy.group_count,
        )

    def _new_driver(self, task: RoundTask, seed: bytes) -> CohortRound:
        # the task's floor holds whatever this gateway's settings say (they can only raise it)
        min_cohort = max(self.settings.min_cohort, task.min_cohort)
        if task.secagg.trusted:
            return TrustedRoundDriver(
                self.node_id, task, self.expected_devices, min_cohort, self.trusted_policy
            )
        return RoundDriver(
            self.node_id,
            self.fleet,
            task,
            seed,
            self.expected_devices,
            self.identity.verify_key,
            min_cohort,
            self.policy,
        )

    def _on_device(self, topic: Topic, payload: bytes) -> None:
        driver, stage = self.driver, topic.stage
        assert stage is not None and topic.device is not None
        if driver is None or driver.finished or topic.round_id != driver.round_id:
            logger.info(
                "ignored %s from %s for round %s: not the active round",
                stage.value,
                topic.device,
                topic.round_id,
            )
            return
        message = self._decode_device(driver, stage, topic.device, payload)
        if driver.accept(stage, message):
            self.store.append_frame(driver.round_id, stage.value, topic.device, payload)
            self._count_update_frame(stage, topic.device, payload)

    def _count_update_frame(self, stage: Stage, device: str, payload: bytes) -> None:
        """Remember the measured size of an accepted update frame (masked, or plain in trusted mode)."""
        if stage is Stage.MASKED:
            self._update_frame_bytes[device] = len(payload)

    def _decode_device(self, driver: CohortRound, stage: Stage, device: str, payload: bytes) -> DeviceMessage:
        """Decode a device frame as the driver's message class for `stage` (PlainUpdate when trusted)."""
        header, message = self.identity.decode(payload, driver.message_class(stage), senders={device})
        if message.sender != header.sender:
            logger.warning("ignored %s: inner sender differs from the frame's signer", stage.value)
            raise DecodeError()
        return message

    # -- deadlines -------------------------------------------------------------------------------
    def tick(self) -> None:
        """Close the active round's stage when everyone answered or its deadline passed."""
        driver = self.driver
        stage = None if driver is None else driver.stage
        if driver is None or stage is None:  # no round, or it ended
            return
        now_ms = self._clock_ms()
        if now_ms < self._not_before_ms and not driver.ready():
            return
        if driver.ready() or now_ms >= driver.deadline_ms():
            outgoing = driver.close()
            self.store.append_close(driver.round_id, stage.value)
            logger.info("round %d: closed stage %s", driver.round_id, stage.value)
            self._publish_outgoing(driver, outgoing)
            if driver.finished:
                self._finish(driver)

    # -- outbound --------------------------------------------------------------------------------
    def _publish_outgoing(self, driver: CohortRound, outgoing: list[Outgoing]) -> None:
        for item in outgoing:
            if item.recipient is not None:
                topic = inbox_topic(self.fleet, self.node_id, item.recipient)
            else:
                assert item.stage is not None
                topic = gateway_stage_topic(self.fleet, self.node_id, driver.round_id, item.stage)
            frame = self.identity.encode(item.message, round_id=driver.round_id)
            self._publish(topic, frame)

    def _finish(self, driver: CohortRound) -> None:
        round_id = driver.round_id
        if driver.result is None:
            abort = driver.aborted or Abort(round_id=round_id, sender=self.node_id, reason="aborted")
            abort_frame = self.identity.encode(abort, round_id=round_id)
            self.store.finish_round(round_id, state=RoundState.ABORTED, outcome_frame=abort_frame)
            self._publish(abort_topic(self.fleet, round_id, self.node_id), abort_frame)  # to the cloud
            logger.warning("round %d: aborted, no partial (%s); cloud told", round_id, abort.reason)
            return
        result = driver.result
        if self._sums_dir is not None:
            self._sums_dir.mkdir(parents=True, exist_ok=True)
            np.save(self._sums_dir / f"round-{round_id}-{self.node_id}.npy", result.ring_sum)
            hook_meta = {"survivors": sorted(result.survivors), "ring_bits": driver.task.codec.ring_bits}
            (self._sums_dir / f"round-{round_id}-{self.node_id}.json").write_text(json.dumps(hook_meta))
        partial = PartialAggregate(
            gateway=self.node_id,
            round_id=round_id,
            model_version=driver.task.model_version,
            vector_sum=result.vector_sum,
            count=result.count,
            weight_sum=result.weight_sum,
            survivors=result.survivors,
            uplink_frame_bytes=sum(self._update_frame_bytes.get(s, 0) for s in result.survivors),
        )
        frame = self.identity.encode(partial, round_id=round_id)
        self.store.finish_round(round_id, state=RoundState.DONE, outcome_frame=frame)
        self._publish(partial_topic(self.fleet, round_id, self.node_id), frame)
        logger.info(
            "round %d: partial published (%d survivors in %d group(s))",
            round_id,
            result.count,
            len(result.group_sizes),
        )

    # -- restart ---------------------------------------------------------------------------------
    def resume(self) -> None:
        """Rebuild the latest round from the store: republish a finished round's outcome, or replay an
        active round's log and republish the last stage's messages; a log that cannot be replayed aborts."""
        latest = self.store.latest_round()
        if latest is None:
            return
        if latest.state is not RoundState.ACTIVE:
            if latest.outcome_frame is not None:
                outcome = partial_topic if latest.state is RoundState.DONE else abort_topic
                self._publish(outcome(self.fleet, latest.round_id, self.node_id), latest.outcome_frame)
            return
        _header, task = self.identity.decode(latest.task_frame, RoundTask, senders={self.settings.cloud_id})
        driver = self._new_driver(task, latest.graph_seed)
        self.driver = driver
        self._update_frame_bytes = {}
        try:
            last = self._replay(driver)
        except (FedloraError, ValueError) as exc:
            logger.warning("round %d: cannot resume (%s); aborting it", task.round_id, type(exc).__name__)
            self._publish_outgoing(driver, driver.abort("gateway restarted and could not resume"))
            self._finish(driver)
            return
        self._not_before_ms = self._clock_ms() + int(1000 * self.settings.resume_grace_s)
        logger.info("round %d: resumed in stage %s", task.round_id, driver.state.value)
        self._publish_outgoing(driver, last)
        if driver.finished:
            self._finish(driver)

    def _replay(self, driver: CohortRound) -> list[Outgoing]:
        last: list[Outgoing] = []
        for event in self.store.events(driver.round_id):
            stage = Stage(event.stage)
            if event.kind == "close":
                last = driver.close()
            elif event.frame is not None:
                message = self._decode_device(driver, stage, event.sender, event.frame)
                if driver.accept(stage, message):
                    self._count_update_frame(stage, event.sender, event.frame)
        return last


def run_gateway(config: GatewayConfig, *, stop: threading.Event | None = None) -> int:
    """Run the gateway until SIGTERM/SIGINT (or `stop` is set); 0 on a clean stop."""
    import time

    from fl_transport.chunking import ChunkCodec
    from fl_transport.loop import EventLoop
    from fl_transport.mqtt import MqttConnection, MqttSettings, Will

    def clock_ms() -> int:
        return int(time.time() * 1000)

    node = config.node
    identity = NodeIdentity(
        node.id,
        node.fleet,
        load_signing_key(config.identity.signing_key_file),
        load_fleet_keys(config.identity.fleet_keys_file),
        clock_ms,
    )
    store = RoundStore(config.gateway.state_db)
    offline = Status(node=node.id, state=NodeState.OFFLINE, reason="connection lost", time_ms=clock_ms())
    broker = config.broker
    settings = MqttSettings.from_broker(broker, node.id, reconnect_min_s=0.5, reconnect_max_s=5.0)
    loop_holder: list[EventLoop] = []
    conn = MqttConnection(
        settings,
        lambda topic, payload: loop_holder[0].submit(topic, payload),
        will=Will(status_topic(node.fleet, node.id), identity.encode(offline, round_id=0)),
        chunking=ChunkCodec.for_identity(identity),
    )
    gateway = Gateway(
        identity=identity,
        settings=config.gateway,
        expected_devices=config.expected_devices,
        store=store,
        publish=lambda topic, payload: conn.publish(topic, payload, qos=1),
        clock_ms=clock_ms,
        unmasked_sums_dir=config.unmasked_sums_dir,
    )
    loop = EventLoop(gateway.handle, tick=gateway.tick, tick_interval_s=config.gateway.tick_interval_s)
    loop_holder.append(loop)
    conn.subscribe(f"{fleet_prefix(node.fleet)}/round/+/task")
    conn.subscribe(gateway_uplink_filter(node.fleet, node.id))
    _stop_on_signals(loop, stop)
    conn.start()
    try:
        gateway.resume()
        online = Status(
            node=node.id,
            state=NodeState.ONLINE,
            reason="",
            time_ms=clock_ms(),
            details={"devices": len(config.expected_devices)},
        )
        conn.publish(status_topic(node.fleet, node.id), identity.encode(online, round_id=0), retain=True)
        loop.run(until=None if stop is None else stop.is_set)
    finally:
        conn.stop()
        store.close()
    return 0


def _stop_on_signals(loop: EventLoop, stop: threading.Event | None) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: loop.stop())
