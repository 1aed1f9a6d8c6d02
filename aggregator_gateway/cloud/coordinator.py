"""The cloud's round scheduler and root aggregator (docs/round-protocol.md, "The cloud").

Single-threaded: `handle` (messages) and `tick` (deadlines) run on the role's EventLoop thread. Per round:
publish model/{v} and round/{r}/task (retained, signed) -> collect verified PartialAggregates from the
registered gateways until all reported or the `partial` deadline -> combine -> server optimizer ->
store v+1 -> accountant -> record -> next round. A round with no usable partial is recorded as failed
and retried under a new round id from the same model version, at most `max_retries` times in a row.
When done: `final.safetensors` and `rounds.json` in store_dir. The status page reads `snapshot()` from
its own thread; snapshots are immutable dicts swapped in whole.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from aggregator_gateway.cloud.combine import combine
from aggregator_gateway.cloud.config import CloudConfig
from aggregator_gateway.cloud.optimizer import make_optimizer
from aggregator_gateway.cloud.privacy import CloudAccountant, check_ring_holds_noise, resolve_noise_multiplier
from aggregator_gateway.cloud.records import COMPLETED, FAILED, RUNNING, RoundLog, RoundRecord
from aggregator_gateway.cloud.round_watch import RoundWatch, fleet_devices
from aggregator_gateway.cloud.store import ModelStore
from aggregator_gateway.cloud.tasks import build_codec, build_task, codec_shape
from fl_protocol.atomic_file import PUBLIC_MODE, write_atomic
from fl_protocol.codec.pipeline import uplink_payload_bytes
from fl_protocol.errors import ConfigError, FedloraError, ProtocolError
from fl_protocol.flatvec import FlatVector, save_flat_vector
from fl_protocol.identity import NodeIdentity
from fl_protocol.secagg import Abort
from fl_protocol.topics import Topic, TopicKind, model_topic, status_topic, task_topic
from fl_protocol.wire.messages import GlobalModel, PartialAggregate, RoundTask, Status

logger = logging.getLogger(__name__)


class Publisher(Protocol):
    """What the coordinator needs from the transport (fl_transport.mqtt.MqttConnection fits)."""

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, durable: bool = False
    ) -> None:
        """Publish one message."""
        ...


@dataclass
class _OpenRound:
    task: RoundTask
    record: RoundRecord
    partials: dict[str, PartialAggregate] = field(default_factory=dict)


class CloudCoordinator:
    """Runs `config.cloud.rounds` rounds over MQTT; see the module docstring."""

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
        self._config, self._identity, self._publisher, self._store = config, identity, publisher, store
        self._bundle_id, self._clock_ms, self._random_bytes = bundle_id, clock_ms, random_bytes
        self._gateways = frozenset(config.cloud.gateways)
        self._fleet_devices = fleet_devices(config.identity.fleet_keys_file, self._gateways)
        self._watch = RoundWatch(0, self._gateways, self._fleet_devices)
        if store.latest() is None:
            store.add(
                np.asarray(initial_vector, np.float32), parent=None, round_id=None, created_ms=clock_ms()
            )
        self._dimension = int(store.load(0).shape[0])
        self._shape = codec_shape(config, self._dimension)
        self._uplink = uplink_payload_bytes(
            self._dimension,
            build_codec(config, self._shape, bytes),
            weighted=config.training.weighting != "uniform",
        )
        noise = resolve_noise_multiplier(
            config.privacy,
            rounds=config.cloud.rounds,
            scale=self._shape.scale,
            sparse_length=self._shape.sparse_length,
        )
        check_ring_holds_noise(
            quant_bits=config.codec.quant_bits,
            ring_bits=config.codec.ring_bits,
            max_clients=max(config.cloud.total_devices, config.min_cohort),
            min_survivors=config.privacy.min_survivors,
            noise_multiplier=noise,
            clip_norm=config.privacy.clip_norm,
            scale=self._shape.scale,
        )
        self._accountant = CloudAccountant(config.privacy, noise, store.get_meta("accountant"))
        self._optimizer = make_optimizer(config.optimizer)
        self._restore_optimizer()
        self._log = RoundLog([RoundRecord.from_dict(r) for r in store.rounds()])
        self._interrupted = self._settle_interrupted()
        self._nodes: dict[str, dict[str, Any]] = {}
        self._round: _OpenRound | None = None
        self._published_model: int | None = None
        self._failures_in_a_row = 0
        self._next_round = max((r.round for r in self._log.records()), default=0) + 1
        self._done = False
        self._succeeded = False
        self._snapshot: dict[str, Any] = {}
        self._refresh_snapshot()

    # -- public surface -------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """True once every round completed or the retry limit was hit."""
        return self._done

    @property
    def succeeded(self) -> bool:
        """True if every planned round completed."""
        return self._succeeded

    @property
    def dimension(self) -> int:
        """Length d of the flat LoRA vector."""
        return self._dimension

    def snapshot(self) -> dict[str, Any]:
        """Immutable view for the status page (safe to call from another thread)."""
        return self._snapshot

    def start(self) -> None:
        """Publish our status and the first (or resumed) round."""
        for round_id in self._interrupted:  # a restart: its task must not stay retained
            self._publisher.publish(task_topic(self._identity.fleet, round_id), b"", retain=True)
        if len(self._log.completed()) >= self._config.cloud.rounds:
            logger.info("all %d rounds already completed in the store", self._config.cloud.rounds)
            self._finish(success=True)
            return
        self._start_round()

    def handle(self, topic: Topic, payload: bytes) -> None:
        """EventLoop handler: partials and statuses; everything else is ignored."""
        if not payload:
            return  # a cleared retained message
        if topic.kind is TopicKind.PARTIAL:
            self._on_partial(topic, payload)
        elif topic.kind is TopicKind.ABORT:
            self._on_gateway_abort(topic, payload)
        elif topic.kind is TopicKind.STATUS and topic.node not in (None, self._identity.node_id):
            self._on_status(topic.node, payload)

    def tick(self) -> None:
        """EventLoop tick: close the open round at its partial deadline."""
        current = self._round
        if current is not None and self._clock_ms() >= current.task.deadlines_ms["partial"]:
            logger.info(
                "round %d: partial deadline reached with %d of %d gateways",
                current.task.round_id,
                len(current.partials),
                len(self._gateways),
            )
            self._close_round()

    # -- rounds ---------------------------------------------------------------------------------------
    def _start_round(self) -> None:
        info = self._store.latest()
        assert info is not None
        round_id, now_ms = self._next_round, self._clock_ms()
        self._next_round += 1
        self._publish_model(info.version, round_id)
        task = build_task(
            self._config,
            round_id=round_id,
            model_version=info.version,
            model_sha256=bytes.fromhex(info.sha256),
            shape=self._shape,
            noise_multiplier=self._accountant.noise_multiplier,
            now_ms=now_ms,
            random_bytes=self._random_bytes,
        )
        record = RoundRecord(
            round=round_id,
            model_version=info.version,
            started_ms=now_ms,
            dense_fp32_bytes=self._uplink.dense_fp32_bytes,
            delta=self._config.privacy.delta,
        )
        # Durable before the task goes out: a restart never reuses this round id (docs/failure-policy.md).
        self._store.save_round(round_id, record.to_dict())
        self._round = _OpenRound(task, record)
        self._watch = RoundWatch(round_id, self._gateways, self._fleet_devices)
        self._log.add(record)
        self._publisher.publish(
            task_topic(self._identity.fleet, round_id),
            self._identity.encode(task, round_id=round_id),
            retain=True,
        )
        logger.info("round %d started on model version %d", round_id, info.version)
        self._publish_status("running")

    def _publish_model(self, version: int, round_id: int) -> None:
        """Publish model/{version} (retained) unless it is already out; clear the superseded one."""
        if self._published_model == version:
            return
        vector = self._store.load(version)
        frame = self._identity.encode(GlobalModel.from_vector(version, vector), round_id=round_id)
        self._publisher.publish(model_topic(self._identity.fleet, version), frame, retain=True)
        if self._published_model is not None:
            self._publisher.publish(
                model_topic(self._identity.fleet, self._published_model), b"", retain=True
            )
        self._published_model = version

    def _on_partial(self, topic: Topic, payload: bytes) -> None:
        gateway = topic.gateway
        if gateway not in self._gateways:
            logger.warning("partial on topic of unregistered gateway %s ignored", gateway)
            return
        header, partial = self._identity.decode(payload, PartialAggregate, senders={gateway})
        if partial.gateway != gateway or header.round_id != topic.round_id:
            raise ProtocolError(f"partial from {gateway}: gateway or round differs from its topic")
        current = self._round
        if current is None or topic.round_id != current.task.round_id:
            logger.info("late or foreign partial of round %s from %s ignored", topic.round_id, gateway)
            return
        if gateway in current.partials:
            logger.info("duplicate partial of round %d from %s ignored", topic.round_id, gateway)
            return
        if partial.model_version != current.task.model_version:
            raise ProtocolError(f"partial from {gateway} is for model {partial.model_version}")
        if partial.vector_sum.shape != (self._dimension,) or not np.all(np.isfinite(partial.vector_sum)):
            raise ProtocolError(f"partial from {gateway} has the wrong length or non-finite values")
        current.partials[gateway] = partial
        logger.info("round %d: partial from %s (%d devices)", topic.round_id, gateway, partial.count)
        if self._watch.answered(current.partials):
            self._close_round()

    def _on_gateway_abort(self, topic: Topic, payload: bytes) -> None:
        """A gateway's signed Abort: close the round once every gateway sent a partial or an abort."""
        gateway, current = topic.gateway, self._round
        if gateway not in self._gateways:
            logger.warning("abort on topic of unregistered gateway %s ignored", gateway)
            return
        header, abort = self._identity.decode(payload, Abort, senders={gateway})
        if abort.sender != gateway or header.round_id != topic.round_id or abort.round_id != topic.round_id:
            raise ProtocolError(f"abort from {gateway}: gateway or round differs from its topic")
        if current is None or topic.round_id != current.task.round_id or gateway in current.partials:
            logger.info("abort of round %s from %s ignored: not the open round", topic.round_id, gateway)
            return
        if self._watch.gateway_aborted(gateway, abort.reason):
            logger.warning("round %d: gateway %s aborted: %s", topic.round_id, gateway, abort.reason)
        if self._watch.answered(current.partials):
            logger.info("round %d: every gateway sent a partial or an abort; closing it", topic.round_id)
            self._close_round()

    def _note_sit_out(self, node: str, status: Status) -> None:
        """Log a device's sit-out of the open round; close the round when every device sat out."""
        current = self._round
        round_id = status.details.get("round")
        if status.state != "skipped" or current is None or round_id != current.task.round_id:
            return
        if self._watch.device_sat_out(node, status.reason):
            logger.info("round %d: %s sits out: %s", round_id, node, status.reason)
        if self._watch.everyone_sat_out():
            logger.warning(
                "round %d: every device (%d) sits out: %s",
                round_id,
                len(self._watch.devices),
                self._watch.sit_out_summary(),
            )
            self._close_round()

    def _close_round(self) -> None:
        current, self._round = self._round, None
        assert current is not None
        round_id, record = current.task.round_id, current.record
        self._publisher.publish(task_topic(self._identity.fleet, round_id), b"", retain=True)
        now_ms = self._clock_ms()
        record.seconds = (now_ms - record.started_ms) / 1000.0
        record.gateways = sorted(current.partials)
        usable = [p for p in current.partials.values() if p.count > 0]
        try:
            new_vector = self._global_step(current, usable) if usable else None
        except (ProtocolError, ValueError) as exc:
            logger.warning("round %d: cannot combine partials: %s", round_id, exc)
            new_vector = None
        if new_vector is None:
            self._fail_round(record)
            return
        # Commit order (a crash between two steps is settled on restart, see _settle_interrupted): the
        # privacy spend first (a crash then over-counts, never under-counts), then the model version (the
        # round's commit point), then the optimizer state and the record.
        record.survivors = sum(p.count for p in usable)
        # measured: the survivors' update frames as the gateways received them (issue 10, item 0)
        record.uplink_bytes_per_device = round(sum(p.uplink_frame_bytes for p in usable) / record.survivors)
        self._log.close(record)
        self._accountant.record_round(
            clip_norm=self._config.privacy.clip_norm,
            scale=self._shape.scale,
            sparse_length=self._shape.sparse_length,
        )
        self._store.set_meta("accountant", self._accountant.to_json())
        info = self._store.add(
            new_vector, parent=current.task.model_version, round_id=round_id, created_ms=now_ms
        )
        self._save_optimizer(info.version)
        record.state, record.new_version = COMPLETED, info.version
        self._log.close(record)
        record.epsilon = self._accountant.epsilon()
        self._store.save_round(round_id, record.to_dict())
        self._failures_in_a_row = 0
        self._publish_model(info.version, round_id)
        logger.info(
            "round %d completed: model version %d, %d survivors, ε=%s",
            round_id,
            info.version,
            record.survivors,
            record.epsilon,
        )
        if len(self._log.completed()) >= self._config.cloud.rounds:
            self._finish(success=True)
        else:
            self._start_round()

    def _global_step(self, current: _OpenRound, usable: list[PartialAggregate]) -> np.ndarray | None:
        combined = combine(usable, self._config.aggregation)
        model = self._store.load(current.task.model_version)
        new_vector = self._optimizer.step(model, combined.mean_update).astype(np.float32)
        if not np.all(np.isfinite(new_vector)):
            raise ValueError("the optimizer produced non-finite values")
        return new_vector

    def _fail_round(self, record: RoundRecord) -> None:
        record.state = FAILED
        self._log.close(record)
        record.epsilon = self._accountant.epsilon()
        self._store.save_round(record.round, record.to_dict())
        self._failures_in_a_row += 1
        if self._failures_in_a_row > self._config.cloud.max_retries:
            logger.error(
                "round %d failed; %d failures in a row exceed max_retries=%d",
                record.round,
                self._failures_in_a_row,
                self._config.cloud.max_retries,
            )
            self._finish(success=False)
            return
        logger.warning(
            "round %d failed (no usable partial); retrying from model version %d",
            record.round,
            record.model_version,
        )
        self._start_round()

    def _settle_interrupted(self) -> list[int]:
        """Records a crash left "running": completed if their model version was committed, else failed.

        Returns their round ids (their retained tasks are cleared by `start`)."""
        produced = {v.round: v.version for v in self._store.versions() if v.round is not None}
        settled = []
        for record in self._log.records():
            if record.state != RUNNING:
                continue
            version = produced.get(record.round)
            record.state, record.new_version = (FAILED, None) if version is None else (COMPLETED, version)
            self._log.close(record)
            record.epsilon = self._accountant.epsilon()
            self._store.save_round(record.round, record.to_dict())
            logger.warning(
                "round %d was interrupted by a restart: recorded as %s", record.round, record.state
            )
            settled.append(record.round)
        return settled

    # -- statuses, persistence, output -----------------------------------------------------------------
    def _on_status(self, node: str, payload: bytes) -> None:
        _header, status = self._identity.decode(payload, Status, senders={node})
        if status.node != node:
            raise ProtocolError(f"status on the topic of {node} names {status.node}")
        self._nodes[node] = {
            "state": status.state,
            "reason": status.reason,
            "time_ms": status.time_ms,
            "details": dict(status.details),
        }
        record = self._log.device_report(node, status.state, dict(status.details))
        self._note_sit_out(node, status)
        if record is not None and record.state != "running":
            self._store.save_round(record.round, record.to_dict())
        self._refresh_snapshot()

    def _restore_optimizer(self) -> None:
        info = self._store.latest()
        if info is None or self._store.get_meta("optimizer_version") != str(info.version):
            return
        state = {}
        for name in json.loads(self._store.get_meta("optimizer_keys") or "[]"):
            state[name] = np.load(self._config.cloud.store_dir / f"optimizer_{name}.npy")
        self._optimizer.load_state(state)

    def _save_optimizer(self, version: int) -> None:
        state = self._optimizer.state()
        for name, values in state.items():
            buffer = io.BytesIO()
            np.save(buffer, values, allow_pickle=False)
            write_atomic(
                self._config.cloud.store_dir / f"optimizer_{name}.npy", buffer.getvalue(), mode=PUBLIC_MODE
            )
        self._store.set_meta("optimizer_keys", json.dumps(sorted(state)))
        self._store.set_meta("optimizer_version", str(version))

    def _publish_status(self, state: str) -> None:
        current = self._round
        details: dict[str, Any] = {
            "model_version": self._published_model or 0,
            "completed": len(self._log.completed()),
        }
        if current is not None:
            details["round"] = current.task.round_id
        status = Status(self._identity.node_id, state, "", int(self._clock_ms()), details)
        frame = self._identity.encode(status, round_id=details.get("round", 0))
        self._publisher.publish(
            status_topic(self._identity.fleet, self._identity.node_id), frame, retain=True
        )
        self._refresh_snapshot()

    def _finish(self, *, success: bool) -> None:
        self._done, self._succeeded = True, success
        info = self._store.latest()
        assert info is not None
        out_dir = Path(self._config.cloud.store_dir)
        save_flat_vector(
            out_dir / "final.safetensors",
            FlatVector(self._store.load(info.version), self._bundle_id, info.version),
        )
        write_final_adapter(self._config.cloud.bundle_dir, out_dir / "final.safetensors", out_dir / "adapter")
        (out_dir / "rounds.json").write_text(json.dumps(self.report(), indent=2, sort_keys=True) + "\n")
        self._publish_status("done" if success else "failed")

    def report(self) -> dict[str, Any]:
        """rounds.json: config summary, every round record, and the final model."""
        info = self._store.latest()
        completed = self._log.completed()
        return {
            "config": {
                "rounds": self._config.cloud.rounds,
                "gateways": list(self._config.cloud.gateways),
                "optimizer": self._config.optimizer.name,
                "mechanism": self._config.privacy.mechanism,
                "noise_multiplier": self._accountant.noise_multiplier,
                "dimension": self._dimension,
            },
            "rounds": [r.to_dict() for r in self._log.records()],
            "final": {
                "model_version": None if info is None else info.version,
                "sha256": None if info is None else info.sha256,
                "epsilon": self._accountant.epsilon(),
                "delta": self._config.privacy.delta,
                "eval_loss": completed[-1].eval_loss if completed else None,
                "completed_rounds": len(completed),
                "succeeded": self._succeeded,
            },
        }

    def _refresh_snapshot(self) -> None:
        current = self._round
        self._snapshot = {
            "node": self._identity.node_id,
            "fleet": self._identity.fleet,
            "state": ("done" if self._succeeded else "failed") if self._done else "running",
            "current_round": None if current is None else current.task.round_id,
            "model_version": self._published_model,
            "rounds_planned": self._config.cloud.rounds,
            "epsilon": self._accountant.epsilon(),
            "delta": self._config.privacy.delta,
            "rounds": [r.to_dict() for r in self._log.records()],
            "nodes": {k: dict(v) for k, v in sorted(self._nodes.items())},
        }


def write_final_adapter(bundle_dir: Path, weights: Path, out_dir: Path) -> Path | None:
    """Write the final PEFT adapter next to final.safetensors (`fedlora adapter` does the same by hand).

    export.adapter needs only safetensors and fl_protocol (no torch); on a cloud installed without it
    the flat vector is kept and the log says how to convert it.
    """
    try:
        from export.adapter import write_adapter
    except ImportError as exc:
        logger.warning(
            "final PEFT adapter not written (%s); run: fedlora adapter --bundle %s --weights %s --out %s",
            exc,
            bundle_dir,
            weights,
            out_dir,
        )
        return None
    try:
        path = write_adapter(bundle_dir, weights, out_dir)
    except (FedloraError, OSError, KeyError, ValueError) as exc:  # the run succeeded; keep the vector
        logger.warning("final PEFT adapter not written: %s; the flat vector is %s", exc, weights)
        return None
    logger.info("final PEFT adapter written to %s", path)
    return path
