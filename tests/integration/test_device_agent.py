"""The device agent against a real mosquitto, with a scripted cloud + gateway written here.

The scripted side signs the model and task as the cloud and runs a real `SecAggServer` as the gateway;
devices are real `DeviceAgent`s (threads) or real `fedlora device` processes where a SIGKILL is needed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from aggregator_gateway.cloud.downlink import ServerDownlink
from edge_runtime.agent.agent import DeviceAgent
from edge_runtime.agent.config import TEST_HOOKS_ENV, load_device_config
from fl_protocol.codec.compress import vector_sha256
from fl_protocol.codec.downlink import pack_values
from fl_protocol.codec.pipeline import encoded_length
from fl_protocol.codec.quantize import ring_sum
from fl_protocol.codec.settings import CodecSettings, default_scale
from fl_protocol.flatvec import load_flat_vector
from fl_protocol.identity import NodeIdentity
from fl_protocol.secagg import (
    AdvertiseKeys,
    ConsistencySignature,
    MaskedUpdate,
    SecAggServer,
    ShareKeys,
    UnmaskShares,
)
from fl_protocol.topics import (
    Stage,
    TopicKind,
    gateway_stage_topic,
    gateway_uplink_filter,
    inbox_topic,
    model_delta_topic,
    model_topic,
    parse_topic,
    task_topic,
)
from fl_protocol.wire.messages import GlobalModel, GlobalModelDelta, PlainUpdate, RoundTask, Status
from fl_protocol.wire.task_settings import DpSettings, SecAggSettings, TrainingSettings
from fl_transport.mqtt import MqttConnection, MqttSettings
from tests.integration.mosquitto_fixture import HOST, free_port, start_mosquitto
from tests.kit.fleet import Role, device, write_fleet, write_signing_key
from tests.kit.mqtt import wait_subscribed
from tests.kit.waits import assert_nothing_within

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
FLEET, GW, CLOUD = "fleet1", "gw1", "cloud"
DEVICES = ("dev-1", "dev-2", "dev-3")
STAGE_CLASSES = {
    Stage.ADVERTISE: AdvertiseKeys,
    Stage.SHARES: ShareKeys,
    Stage.MASKED: MaskedUpdate,
    Stage.CONSISTENCY: ConsistencySignature,
    Stage.UNMASK: UnmaskShares,
}
TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "federated learning keeps data on the device",
    "secure aggregation hides each update",
    "a tiny llama learns a few bytes",
    "edge devices train lora",
]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, tiny_llama_bundle: Path) -> dict[str, object]:
    """A copy of the session's tiny-llama bundle, identity keys (`<node>.key`), fleet_keys.json and one
    data directory."""
    root = tmp_path_factory.mktemp("fleet")
    shutil.copytree(tiny_llama_bundle, root / "bundle")
    roles = {CLOUD: Role("cloud"), GW: Role("gateway"), **{node: device(GW) for node in DEVICES}}
    keys = write_fleet(root, roles, fleet=FLEET)
    for node in keys:
        write_signing_key(root / f"{node}.key", node)
    data = root / "data"
    data.mkdir()
    (data / "notes.jsonl").write_text("".join(json.dumps({"text": t * 3}) + "\n" for t in TEXTS))
    return {"root": root, "keys": keys}


def device_config(
    fleet: dict[str, object], tmp: Path, node: str, port: int, *, allow_trusted_gateway: bool = False
) -> Path:
    """A device.toml for `node` (plain TCP broker, test hook writing plain updates into tmp/plain).

    The keys are shared by the module's tests but each test's device starts fresh: without a state
    directory there must be no privacy-ledger marker either (it would read as a deleted ledger)."""
    root = fleet["root"]
    if not (tmp / f"state-{node}").exists():
        Path(f"{root}/{node}.key.ledger-marker").unlink(missing_ok=True)
    text = f"""
[node]
id = "{node}"
role = "device"
fleet = "{FLEET}"
gateway = "{GW}"
[broker]
host = "{HOST}"
port = {port}
[identity]
signing_key_file = "{root}/{node}.key"
fleet_keys_file = "{root}/fleet_keys.json"
[device]
bundle_dir = "{root}/bundle"
data_dir = "{root}/data"
state_dir = "{tmp}/state-{node}"
default_tier = "public"
eval_fraction = 0.2
reconnect_min_s = 0.5
reconnect_max_s = 1.0
allow_trusted_gateway = {str(allow_trusted_gateway).lower()}
[gates]
min_free_memory_mb = 0
min_battery_percent = 0
[debug]
plain_updates_dir = "{tmp}/plain"
"""
    path = tmp / f"{node}.toml"
    path.write_text(text)
    return path


class Scripted:
    """Cloud + gateway played by the test: one MQTT connection, two identities, a real SecAggServer."""

    def __init__(self, fleet: dict[str, object], port: int) -> None:
        root = Path(fleet["root"])  # type: ignore[arg-type]
        from fl_protocol.config import load_fleet_keys

        self.fleet_keys = load_fleet_keys(root / "fleet_keys.json")
        keys = fleet["keys"]
        self.cloud = NodeIdentity(CLOUD, FLEET, keys[CLOUD], self.fleet_keys, lambda: int(time.time() * 1000))  # type: ignore[index]
        self.gw = NodeIdentity(GW, FLEET, keys[GW], self.fleet_keys, lambda: int(time.time() * 1000))  # type: ignore[index]
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.status: dict[str, list[Status]] = defaultdict(list)
        self.received: dict[tuple[Stage, str], list[bytes]] = defaultdict(list)
        self.conn = MqttConnection(
            MqttSettings(HOST, port, "scripted", reconnect_min_s=0.2, reconnect_max_s=1.0),
            lambda t, p: self.inbox.put((t, p)),
        )
        self.conn.subscribe(gateway_uplink_filter(FLEET, GW))
        self.conn.subscribe(f"fl/v1/{FLEET}/status/+")
        self.conn.start()
        self.conn.wait_connected(10)
        wait_subscribed(self.conn, self.inbox)
        bundle = root / "bundle"
        self.vector = load_flat_vector(bundle / "initial_vector.safetensors").values.astype(np.float32)

    def make_task(
        self,
        round_id: int,
        *,
        tier: str = "public",
        noise: float = 0.3,
        mode: str = "secagg",
        model_version: int = 0,
        model_sha256: bytes | None = None,
    ) -> RoundTask:
        d = self.vector.shape[0]
        k = encoded_length(
            d,
            CodecSettings(
                clip_norm=1.0,
                keep_fraction=0.25,
                index_seed=bytes(32),
                rotate=True,
                rotation_seed=bytes(32),
                quant_bits=12,
                ring_bits=32,
                scale=1.0,
                error_feedback=True,
            ),
        )
        codec = CodecSettings(
            clip_norm=0.5,
            keep_fraction=0.25,
            index_seed=os.urandom(32),
            rotate=True,
            rotation_seed=os.urandom(32),
            quant_bits=12,
            ring_bits=32,
            scale=default_scale(0.5, 12, k, rotate=True),
            error_feedback=True,
        )
        now = int(time.time() * 1000)
        model = GlobalModel.from_vector(0, self.vector)
        return RoundTask(
            round_id=round_id,
            model_version=model_version,
            model_sha256=model.model_sha256 if model_sha256 is None else model_sha256,
            training=TrainingSettings(local_steps=3, batch_size=2, learning_rate=1e-3),
            codec=codec,
            dp=DpSettings(
                mechanism="skellam", noise_multiplier=noise, clip_norm=0.5, min_survivors=2, target_delta=1e-5
            ),
            secagg=SecAggSettings(threshold_fraction=0.5, neighbour_degree=2, ring_bits=32, mode=mode),
            min_cohort=3,
            deadlines_ms={"masked": now + 60_000, "unmask": now + 90_000},
            tier=tier,
            model_dimension=d,
        )

    def publish_task(self, task: RoundTask) -> None:
        model = GlobalModel.from_vector(0, self.vector)
        self.conn.publish(model_topic(FLEET, 0), self.cloud.encode(model, round_id=0), retain=True)
        self.conn.publish(
            task_topic(FLEET, task.round_id), self.cloud.encode(task, round_id=task.round_id), retain=True
        )

    def collect(self, stage: Stage, senders: set[str], timeout_s: float = 30.0) -> dict[str, object]:
        """Wait until every node in `senders` sent `stage` (messages of other stages are recorded too)."""
        deadline = time.monotonic() + timeout_s
        while not senders <= {d for (s, d) in self.received if s is stage}:
            self.pump(max(0.01, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{stage.value}: only {sorted(d for s, d in self.received if s is stage)}"
                )
        return {
            d: self.gw.decode(self.received[(stage, d)][0], STAGE_CLASSES[stage], senders={d})[1]
            for d in senders
        }

    def wait_status(self, node: str, predicate: Callable[[Status], bool], timeout_s: float = 30.0) -> Status:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for status in self.status[node]:
                if predicate(status):
                    return status
            self.pump(0.2)
        raise AssertionError(f"no matching status from {node}: {self.status[node]}")

    def pump(self, timeout_s: float) -> None:
        try:
            topic_text, payload = self.inbox.get(timeout=timeout_s)
        except queue.Empty:
            return
        topic = parse_topic(topic_text)
        if topic.kind is TopicKind.STATUS:
            self.status[str(topic.node)].append(self.gw.decode(payload, Status, senders={topic.node})[1])
        elif topic.kind is TopicKind.DEVICE_STAGE:
            self.received[(topic.stage, str(topic.device))].append(payload)  # type: ignore[index]

    def assert_silent(self, seconds: float, unwanted: Callable[[], object], what: str) -> None:
        """Pump messages for `seconds`; AssertionError naming `what` as soon as `unwanted()` holds.

        A bounded wait on purpose: that a device sends nothing more can only be observed over a window."""

        def arrived(left: float) -> object:
            self.pump(left)
            return unwanted()

        assert_nothing_within(seconds, arrived, what=what)

    def run_round(
        self,
        task: RoundTask,
        devices: tuple[str, ...],
        *,
        after_advertise: Callable[[], None] = lambda: None,
        after_masked: Callable[[], None] = lambda: None,
        signers: tuple[str, ...] | None = None,
    ) -> np.ndarray:
        """Play the gateway through every stage; returns the unmasked ring sum."""
        r = task.round_id
        server = SecAggServer(
            GW,
            fleet=FLEET,
            round_id=r,
            dimension=encoded_length(task.model_dimension, task.codec),
            ring_bits=32,
            graph_seed=os.urandom(32),
            verify_key=self.fleet_keys.get,
            model_hash=task.model_sha256,
            min_cohort=3,
            degree=2,
            threshold=2,
        )
        for message in self.collect(Stage.ADVERTISE, set(devices)).values():
            assert server.on_advertise(message)  # type: ignore[arg-type]
        after_advertise()
        self._broadcast(r, Stage.ROSTER, server.close_advertise())
        for message in self.collect(Stage.SHARES, set(devices)).values():
            assert server.on_share_keys(message)  # type: ignore[arg-type]
        for node, routed in server.close_share_keys().items():  # type: ignore[union-attr]
            self.conn.publish(inbox_topic(FLEET, GW, node), self.gw.encode(routed, round_id=r))
        for message in self.collect(Stage.MASKED, set(devices), timeout_s=60).values():
            assert server.on_masked_update(message)  # type: ignore[arg-type]
        after_masked()
        self._broadcast(r, Stage.SURVIVORS, server.close_masked_collection())
        for message in self.collect(Stage.CONSISTENCY, set(signers or devices)).values():
            assert server.on_consistency_signature(message)  # type: ignore[arg-type]
        self._broadcast(r, Stage.UNMASK_REQUEST, server.unmask_request())
        for message in self.collect(Stage.UNMASK, set(signers or devices)).values():
            assert server.on_unmask_shares(message)  # type: ignore[arg-type]
        result = server.finalize()
        return result.values  # type: ignore[union-attr]

    def _broadcast(self, round_id: int, stage: Stage, message: object) -> None:
        assert type(message).__name__ != "Abort", message
        self.conn.publish(
            gateway_stage_topic(FLEET, GW, round_id, stage), self.gw.encode(message, round_id=round_id)
        )  # type: ignore[arg-type]


class AgentThread:
    """A DeviceAgent running in a thread of the test process."""

    def __init__(self, config_path: Path) -> None:
        self.agent = DeviceAgent(load_device_config(config_path, environ={TEST_HOOKS_ENV: "1"}))
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.agent.stop()
        self.thread.join(timeout=10)


def plain_sum(tmp: Path, round_id: int, devices: tuple[str, ...]) -> np.ndarray:
    values = [np.load(tmp / "plain" / f"round-{round_id}-{d}.npy") for d in devices]
    assert all(v.dtype == np.uint32 for v in values)
    return ring_sum(np.stack(values), 32)


@pytest.fixture
def broker(tmp_path: Path):
    port = free_port()
    (tmp_path / "mq").mkdir()
    conf = f"listener {port} {HOST}\nallow_anonymous true\n"
    conf += f"persistence true\npersistence_location {tmp_path}/mq/\n"
    handle = start_mosquitto(conf, port, workdir=tmp_path)
    yield handle
    handle.stop()


def _ledger_charges(tmp: Path, node: str) -> list[dict[str, object]]:
    return json.loads((tmp / f"state-{node}" / "ledger.json").read_text())["charges"]


def test_three_agents_complete_a_round_and_the_sum_unmasks(fleet, broker, tmp_path: Path) -> None:
    agents = [AgentThread(device_config(fleet, tmp_path, d, broker.port)) for d in DEVICES]
    scripted = Scripted(fleet, broker.port)
    try:
        task = scripted.make_task(1)
        scripted.publish_task(task)
        total = scripted.run_round(task, DEVICES)
        assert np.array_equal(total, plain_sum(tmp_path, 1, DEVICES))
        for node in DEVICES:
            done = scripted.wait_status(node, lambda s: s.state == "idle" and s.details.get("round") == 1)
            assert done.details["backend"] == "ort" and done.details["train_loss"] > 0
            assert "epsilon_public" in done.details
            assert len(_ledger_charges(tmp_path, node)) == 1
    finally:
        for agent in agents:
            agent.stop()
        scripted.conn.stop()


def _spawn(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, TEST_HOOKS_ENV: "1", "PYTHONPATH": str(ROOT)}
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "edge_runtime.cli", "--config", str(config)],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


def test_killed_after_upload_and_restarted_neither_recharges_nor_resends_another_update(
    fleet, broker, tmp_path: Path
) -> None:
    config = device_config(fleet, tmp_path, "dev-1", broker.port)
    log = tmp_path / "dev-1.log"
    proc = _spawn(config, log)
    agents = [AgentThread(device_config(fleet, tmp_path, d, broker.port)) for d in DEVICES[1:]]
    scripted = Scripted(fleet, broker.port)
    restarted: list[subprocess.Popen[bytes]] = []

    def kill_and_restart() -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        restarted.append(_spawn(config, log))
        scripted.wait_status("dev-1", lambda s: s.state == "withdrawn")

    try:
        task = scripted.make_task(1)
        scripted.publish_task(task)
        total = scripted.run_round(task, DEVICES, after_masked=kill_and_restart, signers=DEVICES[1:])
        assert np.array_equal(total, plain_sum(tmp_path, 1, DEVICES))  # dev-1 dropped after upload: recovered
        charges = _ledger_charges(tmp_path, "dev-1")
        assert [c["round_id"] for c in charges] == [1]
        masked = scripted.received[(Stage.MASKED, "dev-1")]
        advertised = scripted.received[(Stage.ADVERTISE, "dev-1")]
        scripted.assert_silent(
            1.5,
            lambda: len(set(masked)) > 1 or len(advertised) > 1,
            "a second masked update or advertise from the restarted dev-1",
        )
        assert len(set(masked)) == 1, "a restarted device must never send a different masked update"
        assert len(scripted.received[(Stage.ADVERTISE, "dev-1")]) == 1, "no re-advertise after restart"
        assert restarted[0].poll() is None, log.read_text()[-3000:]
    finally:
        for p in (proc, *restarted):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        for agent in agents:
            agent.stop()
        scripted.conn.stop()


def test_broker_restart_mid_round_agents_reconnect_and_finish(fleet, broker, tmp_path: Path) -> None:
    agents = [AgentThread(device_config(fleet, tmp_path, d, broker.port)) for d in DEVICES]
    scripted = Scripted(fleet, broker.port)
    try:
        task = scripted.make_task(1)
        scripted.publish_task(task)
        total = scripted.run_round(task, DEVICES, after_advertise=broker.restart)
        assert np.array_equal(total, plain_sum(tmp_path, 1, DEVICES))
    finally:
        for agent in agents:
            agent.stop()
        scripted.conn.stop()


def test_malformed_or_wrongly_signed_task_is_ignored(fleet, broker, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    agent = AgentThread(device_config(fleet, tmp_path, "dev-1", broker.port))
    scripted = Scripted(fleet, broker.port)
    try:
        scripted.wait_status("dev-1", lambda s: s.state == "idle")
        task = scripted.make_task(1)
        scripted.publish_task(task)  # model + a valid task, then the bad ones replace the retained task
        forged = scripted.gw.encode(scripted.make_task(2), round_id=2)  # valid frame, signed by the gateway
        scripted.conn.publish(task_topic(FLEET, 2), forged, retain=True)
        scripted.conn.publish(task_topic(FLEET, 3), b"\x00garbage", retain=True)
        scripted.collect(Stage.ADVERTISE, {"dev-1"})  # the genuine task of round 1 is taken
        advertised = scripted.received[(Stage.ADVERTISE, "dev-1")]
        scripted.assert_silent(
            1.7, lambda: len(advertised) > 1, "an advertise for a forged or malformed task"
        )
        assert len(advertised) == 1
        messages = [r.getMessage() for r in caplog.records]
        assert any("ignored task for round 2" in m and f"not signed by {CLOUD}" in m for m in messages)
        assert any("ignored task for round 3" in m for m in messages)
    finally:
        agent.stop()
        scripted.conn.stop()


def test_ledger_refusal_publishes_skipped_with_the_reason(fleet, broker, tmp_path: Path) -> None:
    agent = AgentThread(device_config(fleet, tmp_path, "dev-1", broker.port))
    scripted = Scripted(fleet, broker.port)
    try:
        scripted.publish_task(scripted.make_task(1, tier="health", noise=0.5))  # health needs z >= 6.0
        skipped = scripted.wait_status("dev-1", lambda s: s.state == "skipped")
        assert "privacy ledger" in skipped.reason and "min_noise_multiplier=6" in skipped.reason
        assert skipped.details["round"] == 1 and "temp_c" in skipped.details
        scripted.assert_silent(
            0.7, lambda: scripted.received.get((Stage.ADVERTISE, "dev-1")), "an advertise after the refusal"
        )
    finally:
        agent.stop()
        scripted.conn.stop()


def test_trusted_task_is_sat_out_without_the_operator_opt_in(fleet, broker, tmp_path: Path) -> None:
    agent = AgentThread(device_config(fleet, tmp_path, "dev-1", broker.port))
    scripted = Scripted(fleet, broker.port)
    try:
        scripted.publish_task(scripted.make_task(1, mode="trusted"))
        skipped = scripted.wait_status("dev-1", lambda s: s.state == "skipped")
        assert "allow_trusted_gateway is false" in skipped.reason and skipped.details["round"] == 1
        scripted.assert_silent(0.7, lambda: scripted.received, "a message from a device without the opt-in")
        assert not (tmp_path / "state-dev-1" / "ledger.json").exists() or not _ledger_charges(
            tmp_path, "dev-1"
        )
    finally:
        agent.stop()
        scripted.conn.stop()


def test_trusted_task_with_the_opt_in_sends_one_plain_update_and_finishes(
    fleet, broker, tmp_path: Path
) -> None:
    agent = AgentThread(device_config(fleet, tmp_path, "dev-1", broker.port, allow_trusted_gateway=True))
    scripted = Scripted(fleet, broker.port)
    try:
        task = scripted.make_task(1, mode="trusted")
        scripted.publish_task(task)
        done = scripted.wait_status("dev-1", lambda s: s.state == "idle" and s.details.get("round") == 1, 60)
        assert done.details["train_loss"] > 0
        scripted.pump(0.5)
        assert set(scripted.received) == {(Stage.MASKED, "dev-1")}, "only the update, no SecAgg stage"
        frames = scripted.received[(Stage.MASKED, "dev-1")]
        _h, update = scripted.gw.decode(frames[0], PlainUpdate, senders={"dev-1"})
        assert update.round_id == 1 and update.ring_bits == 32
        assert update.values.shape == (encoded_length(task.model_dimension, task.codec),)
        assert np.array_equal(update.values, np.load(tmp_path / "plain" / "round-1-dev-1.npy"))
        assert len(_ledger_charges(tmp_path, "dev-1")) == 1  # DP and the ledger as in a masked round
    finally:
        agent.stop()
        scripted.conn.stop()


def _next_version(scripted: Scripted) -> tuple[np.ndarray, GlobalModelDelta]:
    """Version 1 as the cloud makes it from version 0 (`scripted.vector`), and its delta."""
    update = np.random.default_rng(11).normal(size=scripted.vector.shape[0]) * 1e-3
    step = ServerDownlink(8).step(scripted.vector, scripted.vector + update)
    delta = step.message(model_version=1, base_version=0)
    assert delta is not None
    return step.vector, delta


def _publish_version_1(scripted: Scripted, vector: np.ndarray, delta: GlobalModelDelta) -> RoundTask:
    """What the cloud publishes for version 1 (delta, full model, then the task of round 2)."""
    cloud = scripted.cloud
    scripted.conn.publish(model_delta_topic(FLEET, 1), cloud.encode(delta, round_id=1), retain=True)
    full = GlobalModel.from_vector(1, vector)
    scripted.conn.publish(model_topic(FLEET, 1), cloud.encode(full, round_id=1), retain=True)
    task = scripted.make_task(2, model_version=1, model_sha256=vector_sha256(vector))
    scripted.conn.publish(task_topic(FLEET, 2), cloud.encode(task, round_id=2), retain=True)
    return task


@pytest.mark.parametrize("delta_kind", ["good", "tampered", "wrong base"])
def test_a_task_trains_on_its_delta_and_a_bad_delta_costs_only_the_full_model(
    fleet, broker, tmp_path: Path, caplog, delta_kind: str
) -> None:
    """Round 1 needs version 0: the device has none, so it fetches the full model 0. Round 2 needs
    version 1: with a good delta the device builds it from version 0 and never fetches model/1; a
    tampered delta (its result does not hash to model_sha256) or one for another base is refused and
    the device fetches the full model/1 instead. Either way it joins round 2 on version 1's bytes."""
    caplog.set_level(logging.INFO)
    agent = AgentThread(device_config(fleet, tmp_path, "dev-1", broker.port))
    scripted = Scripted(fleet, broker.port)
    try:
        scripted.publish_task(scripted.make_task(1))
        scripted.collect(Stage.ADVERTISE, {"dev-1"})
        vector, delta = _next_version(scripted)
        if delta_kind == "tampered":
            quantized = delta.quantized()
            values = quantized.values.copy()
            values[:64] = 0
            delta = dataclasses.replace(
                delta, packed_values=pack_values(dataclasses.replace(quantized, values=values))
            )
        elif delta_kind == "wrong base":
            delta = dataclasses.replace(delta, base_sha256=bytes(32))
        _publish_version_1(scripted, vector, delta)
        wait_status = scripted.wait_status
        training = wait_status("dev-1", lambda s: s.state == "training" and s.details.get("round") == 2)
        assert training.details["round"] == 2  # joined: the held version 1 matched the task's sha256
        messages = [r.getMessage() for r in caplog.records]
        fetched = [m for m in messages if "subscribing to the full model" in m]
        assert fetched[0] == "global model 0: subscribing to the full model"
        if delta_kind == "good":
            assert "global model 1 built from its delta" in messages
            assert fetched == ["global model 0: subscribing to the full model"], "model/1 was not needed"
        else:
            assert "global model 1 built from its delta" not in messages
            assert "global model 1: subscribing to the full model" in fetched
            refusal = "refused (bad values or hash mismatch)" if delta_kind == "tampered" else "another base"
            assert any(refusal in m for m in messages), messages
    finally:
        agent.stop()
        scripted.conn.stop()
