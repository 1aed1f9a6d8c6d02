"""The device agent: MQTT in, round state machine, training thread, ledger, outbox, status out.

Threads: paho's network thread only queues incoming messages (`EventLoop.submit`); the training runs on
`TrainingWorker`'s thread, which hands each job to a trainer in a child process for ONNX Runtime (its
training bindings hold the GIL through a step; edge_runtime/agent/trainer_process.py); everything else
(decoding, the round, the ledger, persistence, publishing)
runs on the thread that calls `run`, so round state needs no locks. The tick drains training outcomes
and enforces deadlines with the injected clock.

Each round the device takes is one machine over a device round table (`round_machine`): the agent moves
it from OFFERED through READY to JOINED or SKIPPED (`intake`), then hands it to the round variant
(`DeviceRound` or `TrustedDeviceRound`, one `round_api.RoundVariant`), and persists its state at the
durable checkpoints (round_state.json).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_runtime.agent.config import DeviceConfig
from edge_runtime.agent.encode import encode_for_task
from edge_runtime.agent.inbound import decode_gateway_message, decode_routed_shares, decode_task, deliver
from edge_runtime.agent.intake import PendingRound, open_round
from edge_runtime.agent.models import DeviceModels
from edge_runtime.agent.participation import Ready, decide
from edge_runtime.agent.round import task_refusal
from edge_runtime.agent.round_api import (
    Action,
    Finished,
    RoundMachine,
    RoundVariant,
    Send,
    StartTraining,
    UploadDue,
)
from edge_runtime.agent.round_machine import Phase, RoundEvent, round_table
from edge_runtime.agent.state import OUTBOX_DIR, DeviceState, write_plain_update
from edge_runtime.agent.status import StatusPublisher, epsilon_details
from edge_runtime.agent.trainer_process import TrainerProcess, start_training
from edge_runtime.agent.worker import TrainingJob, TrainingOutcome
from edge_runtime.ledger import open_device_ledger, round_ref
from edge_runtime.text_tokenizer import load_tokenizer
from edge_runtime.trainer import Trainer
from fl_protocol.codec.pipeline import codec_chain_text
from fl_protocol.config import load_fleet_keys, load_signing_key
from fl_protocol.dp.mechanisms import secure_generator
from fl_protocol.errors import RoleFault
from fl_protocol.identity import NodeIdentity
from fl_protocol.stages import NodeState
from fl_protocol.state_machine import StateMachine
from fl_protocol.topics import Stage, Topic, TopicKind, device_downlink_filters, device_stage_topic
from fl_protocol.wire.messages import RoundTask
from fl_transport.chunking import ChunkCodec
from fl_transport.loop import EventLoop
from fl_transport.mqtt import MqttConnection, MqttSettings
from fl_transport.outbox import Outbox

logger = logging.getLogger(__name__)


def wall_clock_ms() -> int:
    """Milliseconds since the epoch (production clock; tests inject their own)."""
    return int(time.time() * 1000)


class DeviceAgent:
    """`fedlora device`: takes part in rounds as described in docs/round-protocol.md "The device"."""

    def __init__(
        self,
        config: DeviceConfig,
        *,
        trainer: Trainer | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        rng_bytes: Callable[[int], bytes] = os.urandom,
        generator: Callable[[], np.random.Generator] = secure_generator,
    ) -> None:
        self.config = config
        node = config.node
        self.node_id, self.fleet, self.gateway = node.id, node.fleet, str(node.gateway)
        self.cloud_id = config.device.cloud_id
        self._clock_ms, self._rng_bytes, self._generator = clock_ms, rng_bytes, generator
        self.identity = NodeIdentity(
            node.id,
            node.fleet,
            load_signing_key(config.identity.signing_key_file),
            load_fleet_keys(config.identity.fleet_keys_file),
            clock_ms,
        )
        state_dir = config.device.state_dir
        self.state = DeviceState(state_dir)
        self.ledger = open_device_ledger(state_dir, config.identity.signing_key_file, config.tiers)
        self.trainer, self.worker = start_training(
            trainer,
            config.device.bundle_dir,
            backend=config.device.backend,
            device=config.device.compute_device,
            spinning=config.device.thread_spinning,
        )
        self.tokenizer = load_tokenizer(self.trainer.manifest.tokenizer_spec, config.device.bundle_dir)
        self.loop = EventLoop(self._on_message, tick=self._tick, tick_interval_s=0.1)
        self.status = StatusPublisher(self.identity, self.fleet, clock_ms, self.trainer.backend_name)
        settings = MqttSettings.from_broker(
            config.broker,
            node.id,
            reconnect_min_s=config.device.reconnect_min_s,
            reconnect_max_s=config.device.reconnect_max_s,
        )
        self.connection = MqttConnection(
            settings,
            self.loop.submit,
            will=self.status.will(),
            outbox=Outbox(state_dir / OUTBOX_DIR),
            chunking=ChunkCodec.for_identity(self.identity),
        )
        self.status.bind(self.connection)
        self.round: RoundVariant | None = None
        self._pending: PendingRound | None = None  # gates passed, waiting for the model
        self._models = DeviceModels(
            self.identity, self.connection, cloud_id=self.cloud_id, length=self.trainer.total_length
        )
        self._outcome: TrainingOutcome | None = None
        self._job: TrainingJob | None = None
        self._last_details: dict[str, Any] = {}

    @property
    def current_round(self) -> int | None:
        """The round the device is in (for log lines), or None."""
        if self.round is not None and not self.round.done:
            return self.round.round_id
        return self._pending.task.round_id if self._pending is not None else None

    # -- lifecycle ------------------------------------------------------------------------------
    def run(self, *, until: Callable[[], bool] | None = None) -> None:
        """Connect, withdraw an interrupted round, then serve rounds until `stop()` (or `until()`)."""
        interrupted = self.state.withdraw_interrupted()
        for topic_filter in device_downlink_filters(self.fleet, self.gateway, self.node_id):
            self.connection.subscribe(topic_filter, qos=1)
        self.connection.start()
        if self.config.device.connect_timeout_s > 0:
            self.connection.wait_connected(self.config.device.connect_timeout_s)
        if interrupted is not None:
            self.status.publish(
                NodeState.WITHDRAWN,
                f"round {interrupted.round_id} interrupted by a restart",
                round=interrupted.round_id,
            )
        else:
            self.status.publish(NodeState.IDLE, "started", **self._epsilon_details())
        faulted = False
        try:
            self.loop.run(until=until)
        except RoleFault:
            faulted = True
            raise
        finally:
            self._shutdown(after_fault=faulted)

    def stop(self) -> None:
        """Ask `run` to return (thread- and signal-safe)."""
        self.loop.stop()

    def _shutdown(self, *, after_fault: bool = False) -> None:
        # After a fault no more round logic runs: the restart withdraws the round from the durable state.
        if not after_fault and self.round is not None and not self.round.done:
            self._execute(self.round.withdraw("device shutting down"))
        self.worker.close()
        if isinstance(self.trainer, TrainerProcess):
            self.trainer.close()
        try:
            self.status.publish(NodeState.OFFLINE, "stopped")
        finally:
            self.connection.stop()

    # -- incoming messages ------------------------------------------------------------------------
    def _on_message(self, topic: Topic, payload: bytes) -> None:
        if topic.fleet != self.fleet:
            logger.warning("ignored message for fleet %s", topic.fleet)
        elif topic.kind is TopicKind.TASK:
            self._on_task(topic, payload)
        elif topic.kind is TopicKind.MODEL_DELTA:
            self._on_model(self._models.on_delta(topic, payload, pinned=self._waiting_for()))
        elif topic.kind is TopicKind.MODEL:
            self._on_model(self._models.on_model(topic, payload, pinned=self._waiting_for()))
        elif topic.kind is TopicKind.GATEWAY_STAGE and topic.gateway == self.gateway:
            self._on_stage(topic, payload)
        elif topic.kind is TopicKind.INBOX and topic.gateway == self.gateway and topic.device == self.node_id:
            self._on_inbox(payload)
        else:
            logger.debug("ignored message on a topic not meant for this device")

    def _on_task(self, topic: Topic, payload: bytes) -> None:
        task = decode_task(self.identity, topic, payload, cloud_id=self.cloud_id)
        if task is None:
            return
        if self.current_round == task.round_id:
            logger.debug("round %d: task delivered again (retained); already in it", task.round_id)
            return
        refusal = task_refusal(task, now_ms=self._clock_ms(), last_round=self.state.last_round)
        if refusal is not None:
            logger.info("ignored task: %s", refusal)
            return
        self._abandon_current(f"superseded by round {task.round_id}")
        self._begin(task)

    def _begin(self, task: RoundTask) -> None:
        machine: RoundMachine = StateMachine(round_table(trusted=task.secagg.trusted))  # OFFERED
        decision = decide(
            task,
            config=self.config,
            ledger=self.ledger,
            tokenizer=self.tokenizer,
            seq_len=self.trainer.manifest.seq_len,
            model_dimension=self.trainer.total_length,
            ref=round_ref(task, fleet=self.fleet, cloud_id=self.cloud_id),
        )
        self._last_details = dict(decision.details)
        if not isinstance(decision, Ready):
            self.state.set(task.round_id, machine.apply(RoundEvent.SKIP), decision.reason)
            logger.info("round %d: sitting out: %s", task.round_id, decision.reason)
            self.status.publish(NodeState.SKIPPED, decision.reason, round=task.round_id, **decision.details)
            return
        machine.apply(RoundEvent.GATES_PASSED)
        self._pending = PendingRound(task, decision, machine)
        self._join()
        if self._pending is not None:
            logger.info("round %d: waiting for global model %d", task.round_id, task.model_version)
            self.status.publish(NodeState.WAITING_MODEL, "", round=task.round_id)

    def _waiting_for(self) -> int | None:
        return None if self._pending is None else self._pending.task.model_version

    def _on_model(self, arrived: int | None) -> None:
        """A model version became available (or was refused): the pending round may go on."""
        if arrived is not None and arrived == self._waiting_for():
            self._join()

    def _join(self) -> None:
        """Join the pending round if its model is there (or sit it out if it cannot be); else keep waiting."""
        pending = self._pending
        assert pending is not None
        task = pending.task
        vector = self._models.vector_for(task)
        if vector is None:
            return  # the full model is on its way
        self._pending = None
        self._models.release()
        if isinstance(vector, str):
            self._skip(pending, vector)
            return
        # JOINED is recorded before the advertise: never re-join after a restart
        self.state.set(task.round_id, pending.machine.apply(RoundEvent.JOIN))
        self.round = open_round(
            task, pending.machine, identity=self.identity, gateway=self.gateway, rng_bytes=self._rng_bytes
        )
        self._outcome = None
        self._job = TrainingJob(
            task.round_id,
            vector,
            pending.ready.dataset,
            task.training.local_steps,
            task.training.batch_size,
            task.training.learning_rate,
            weighting=task.training if task.training.weighted else None,
        )
        self._execute(self.round.start())

    def _skip(self, pending: PendingRound, reason: str) -> None:
        self._models.release()
        task = pending.task
        self.state.set(task.round_id, pending.machine.apply(RoundEvent.SKIP), reason)
        logger.warning("round %d: sitting out: %s", task.round_id, reason)
        self.status.publish(NodeState.SKIPPED, reason, round=task.round_id)

    def _on_stage(self, topic: Topic, payload: bytes) -> None:
        current = self.round
        if current is None or current.done or topic.round_id != current.round_id:
            logger.info("ignored %s for round %s: not in that round", topic.stage, topic.round_id)
            return
        message = decode_gateway_message(self.identity, topic, payload, gateway=self.gateway)
        self._execute(deliver(current, message))

    def _on_inbox(self, payload: bytes) -> None:
        routed = decode_routed_shares(self.identity, payload, gateway=self.gateway)
        current = self.round
        if current is None or current.done or routed.round_id != current.round_id:
            logger.info("ignored routed shares for round %s: not in that round", routed.round_id)
            return
        self._execute(current.on_routed_shares(routed))

    # -- tick: training outcomes and deadlines ------------------------------------------------------
    def _tick(self) -> None:
        now_ms = self._clock_ms()
        for outcome in self.worker.poll():
            current = self.round
            if current is None or current.done or outcome.round_id != current.round_id:
                logger.info("discarded training outcome of round %d (no longer in it)", outcome.round_id)
                continue
            self._outcome = outcome
            if outcome.error:
                self._execute(current.on_training_done(ok=False, reason=outcome.error))
            else:
                logger.info(
                    "round %d: trained %d steps, loss %.4f",
                    outcome.round_id,
                    outcome.steps,
                    outcome.train_loss or float("nan"),
                )
                self._execute(current.on_training_done(ok=True))
        if self.round is not None:
            self._execute(self.round.tick(now_ms))
        pending = self._pending
        if pending is None:
            return
        if task_refusal(pending.task, now_ms=now_ms, last_round=self.state.last_round) is not None:
            self._pending = None
            version = pending.task.model_version
            self._skip(pending, f"global model {version} did not arrive before the masked deadline")

    # -- actions --------------------------------------------------------------------------------
    def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._send(action)
            elif isinstance(action, StartTraining):
                assert self._job is not None
                self.worker.submit(self._job)
                self.status.publish(NodeState.TRAINING, "", round=self._job.round_id, **self._last_details)
            elif isinstance(action, UploadDue):
                self._upload()
            elif isinstance(action, Finished):
                self._finish(action)

    def _send(self, action: Send) -> None:
        assert self.round is not None
        round_id = self.round.round_id
        chain = codec_chain_text(self.round.task.codec) if action.stage is Stage.MASKED else ""
        # Send.message is a SecAgg+ message or a PlainUpdate (see round_api.Send for the type)
        payload = self.identity.encode(action.message, round_id=round_id, codec_chain=chain)  # type: ignore[arg-type]
        topic = device_stage_topic(self.fleet, self.gateway, round_id, action.stage, self.node_id)
        self.connection.publish(topic, payload, qos=1, durable=action.durable)
        logger.info("round %d: sent %s", round_id, action.stage.value)

    def _upload(self) -> None:
        """Charge the ledger (durable), encode with noise, mask (trusted mode: no mask), publish through
        the outbox; a trusted round then finishes."""
        current, outcome = self.round, self._outcome
        assert current is not None and outcome is not None and outcome.delta is not None
        task = current.task
        self.ledger.charge(round_ref(task, fleet=self.fleet, cloud_id=self.cloud_id), task)
        encoded = encode_for_task(
            outcome.delta,
            residual=self.state.load_residual(outcome.delta.shape[0]),
            task=task,
            rounding_rng=self._generator(),
            noise_rng=self._generator(),
            weight=outcome.weight,
        )
        if self.config.debug.plain_updates_dir is not None:  # test hook, refused without the env opt-in
            write_plain_update(
                self.config.debug.plain_updates_dir, task.round_id, self.node_id, encoded.ring_values
            )
        self._execute(current.mask(encoded.ring_values))
        self.state.save_residual(encoded.residual)
        if current.done:  # masking was refused: the round is withdrawn and recorded so by _finish
            return
        self.state.set(task.round_id, current.phase)  # UPLOADED: the machine's state after the mask
        self.status.publish(NodeState.UPLOADED, "", round=task.round_id, clipped=int(encoded.clipped))
        self._execute(current.uploaded())

    def _finish(self, finished: Finished) -> None:
        assert self.round is not None
        round_id = self.round.round_id
        self.state.set(round_id, finished.phase, finished.reason)
        details: dict[str, Any] = {"round": round_id, **self._epsilon_details()}
        outcome = self._outcome
        if outcome is not None and outcome.round_id == round_id and not outcome.error:
            details["train_loss"] = outcome.train_loss
            if outcome.eval_loss is not None:
                details["eval_loss"] = outcome.eval_loss
        state = NodeState.IDLE if finished.phase is Phase.FINISHED else NodeState.WITHDRAWN
        logger.info("round %d: %s %s", round_id, finished.phase.value, finished.reason)
        self.status.publish(state, finished.reason, **details)

    def _abandon_current(self, reason: str) -> None:
        if self.round is not None and not self.round.done:
            self._execute(self.round.withdraw(reason))
        pending, self._pending = self._pending, None
        if pending is not None:
            self._skip(pending, reason)

    def _epsilon_details(self) -> dict[str, Any]:
        return epsilon_details(self.ledger.summary())
