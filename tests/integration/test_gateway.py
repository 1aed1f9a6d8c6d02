"""The gateway process against a real mosquitto, scripted devices (real SecAggClient objects over MQTT)
and a scripted cloud: exact partial under dropouts, forged advertise ignored, kill -9 and resume."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fl_protocol.identity import NodeIdentity
from fl_protocol.message_types import MessageType
from fl_protocol.secagg import AdvertiseKeys, Roster, RoutedShares, SecAggClient, Survivors, UnmaskRequest
from fl_protocol.topics import (
    Stage,
    TopicKind,
    cloud_partial_filter,
    device_downlink_filters,
    device_stage_topic,
    parse_topic,
    task_topic,
)
from fl_protocol.wire.framing import peek_header
from fl_protocol.wire.messages import PartialAggregate, PlainUpdate, RoundTask
from fl_transport.mqtt import MqttConnection, MqttSettings
from tests.integration.mosquitto_fixture import HOST, MosquittoHandle
from tests.kit.fleet import (
    CLOUD,
    FLEET,
    GATEWAY,
    Role,
    device,
    public_keys,
    signing_key,
    wall_clock_ms,
    write_fleet,
)
from tests.kit.secagg_round import decoded_updates, device_update, make_client, plain_sum, trusted_updates
from tests.kit.tasks import STAGES, round_task
from tests.kit.waits import assert_nothing_within, wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DEVICES = [f"dev-{i}" for i in range(5)]
KEYS = public_keys([CLOUD, GATEWAY, *DEVICES])


def _identity(name: str) -> NodeIdentity:
    return NodeIdentity(name, FLEET, signing_key(name), KEYS, wall_clock_ms)


def _connect(port: int, name: str, on_message: Callable[[str, bytes], None]) -> MqttConnection:
    settings = MqttSettings(HOST, port, name, reconnect_min_s=0.2, reconnect_max_s=1.0, clean_session=True)
    return MqttConnection(settings, on_message)


class ScriptedDevice:
    """A device reduced to its SecAgg+ part: advertise (repeated until a roster comes), answer each stage.

    `hold` keeps the masked upload until `release()` (stands in for training time)."""

    def __init__(
        self, name: str, port: int, *, drop_before: bool = False, drop_after: bool = False, hold: bool = False
    ) -> None:
        self.name, self.drop_before, self.drop_after, self.hold = name, drop_before, drop_after, hold
        self.identity = _identity(name)
        self.lock = threading.Lock()
        self.client: SecAggClient | None = None
        self.task: RoundTask | None = None
        self.update = np.zeros(0, dtype=np.uint32)
        self.has_roster = threading.Event()
        self.has_shares = threading.Event()
        self.uploaded = False
        self.masked_frame_bytes = 0
        self.conn = _connect(port, name, self._on_message)
        for topic_filter in device_downlink_filters(FLEET, GATEWAY, name):
            self.conn.subscribe(topic_filter)
        self.conn.start()
        self.conn.wait_connected(10)

    def join(self, task: RoundTask) -> None:
        with self.lock:
            self.task, self.uploaded = task, False
            self.client = make_client(self.name, task, KEYS)
            self.update = device_update(self.name, task)
            self.has_roster.clear()
            self.has_shares.clear()
        threading.Thread(target=self._advertise_until_roster, daemon=True).start()

    def _advertise_until_roster(self) -> None:
        """Advertise, again every 0.3 s until a roster names this device (as a device retransmits)."""
        while True:
            with self.lock:
                assert self.client is not None
                self._send(Stage.ADVERTISE, self.client.advertise())
            if self.has_roster.wait(0.3):
                return

    def _send(self, stage: Stage, message: object) -> None:
        assert self.task is not None
        topic = device_stage_topic(FLEET, GATEWAY, self.task.round_id, stage, self.name)
        frame = self.identity.encode(message, round_id=self.task.round_id)  # type: ignore[arg-type]
        if stage is Stage.MASKED:
            self.masked_frame_bytes = len(frame)
        self.conn.publish(topic, frame)

    def release(self) -> None:
        with self.lock:
            self.hold = False
            self._maybe_upload()

    def _maybe_upload(self) -> None:
        if self.has_shares.is_set() and not self.hold and not self.uploaded and not self.drop_before:
            assert self.client is not None
            self.uploaded = True
            self._send(Stage.MASKED, self.client.mask(self.update))

    def _on_message(self, topic_text: str, payload: bytes) -> None:
        topic = parse_topic(topic_text)
        with self.lock:
            client = self.client
            if client is None or topic.kind not in (TopicKind.GATEWAY_STAGE, TopicKind.INBOX):
                return
            if topic.kind is TopicKind.INBOX:
                _h, routed = self.identity.decode(payload, RoutedShares, senders={GATEWAY})
                if routed.round_id == client.round_id:
                    client.on_routed_shares(routed)
                    self.has_shares.set()
                    self._maybe_upload()
            elif topic.round_id == client.round_id:
                self._on_stage(topic.stage, payload, client)

    def _on_stage(self, stage: Stage | None, payload: bytes, client: SecAggClient) -> None:
        if stage is Stage.ROSTER and peek_header(payload).message_type is MessageType.ROSTER:
            _h, roster = self.identity.decode(payload, Roster, senders={GATEWAY})
            if self.name in {m.sender for m in roster.members}:
                self.has_roster.set()
                self._send(Stage.SHARES, client.on_roster(roster))
        elif stage is Stage.SURVIVORS and not self.drop_after:
            _h, survivors = self.identity.decode(payload, Survivors, senders={GATEWAY})
            if self.name in survivors.survivors:
                self._send(Stage.CONSISTENCY, client.on_survivors(survivors))
        elif stage is Stage.UNMASK_REQUEST and not self.drop_after:
            _h, request = self.identity.decode(payload, UnmaskRequest, senders={GATEWAY})
            if self.name in request.signatures:
                self._send(Stage.UNMASK, client.on_unmask_request(request))


class ScriptedCloud:
    """Publishes signed retained tasks and collects the gateway's partials."""

    def __init__(self, port: int) -> None:
        self.identity = _identity(CLOUD)
        self.partials: queue.Queue[PartialAggregate] = queue.Queue()
        self.conn = _connect(port, CLOUD, self._on_message)
        self.conn.subscribe(cloud_partial_filter(FLEET))
        self.conn.start()
        self.conn.wait_connected(10)

    def publish_task(self, task: RoundTask) -> None:
        frame = self.identity.encode(task, round_id=task.round_id)
        self.conn.publish(task_topic(FLEET, task.round_id), frame, retain=True)

    def forge(self, topic: str, message: object, round_id: int) -> None:
        """Publish `message` claiming to be its sender but signed with an outsider's key."""
        forger = NodeIdentity("dev-0", FLEET, signing_key("mallory"), KEYS, wall_clock_ms)
        self.conn.publish(topic, forger.encode(message, round_id=round_id))  # type: ignore[arg-type]

    def _on_message(self, topic_text: str, payload: bytes) -> None:
        _h, partial = self.identity.decode(payload, PartialAggregate, senders={GATEWAY})
        self.partials.put(partial)

    def next_partial(self, timeout_s: float) -> PartialAggregate:
        return self.partials.get(timeout=timeout_s)


def _write_gateway_dir(root: Path, port: int, gateway_extra: str = "") -> Path:
    roles = {CLOUD: Role("cloud"), GATEWAY: Role("gateway"), **{name: device(GATEWAY) for name in DEVICES}}
    write_fleet(root, roles, fleet=FLEET, signer=GATEWAY)
    (root / "config.toml").write_text(
        f'[node]\nid = "{GATEWAY}"\nrole = "gateway"\nfleet = "{FLEET}"\n'
        f'[broker]\nhost = "{HOST}"\nport = {port}\n'
        '[identity]\nsigning_key_file = "signing.key"\nfleet_keys_file = "fleet_keys.json"\n'
        f'[gateway]\ncloud_id = "{CLOUD}"\nstate_db = "state.sqlite3"\nresume_grace_s = 1.0\n'
        f'tick_interval_s = 0.05\n{gateway_extra}[debug]\nunmasked_sums_dir = "sums"\n'
    )
    return root / "config.toml"


def _start_gateway(config: Path) -> subprocess.Popen[bytes]:
    log = open(config.parent / "gateway.log", "ab")  # noqa: SIM115 - handed to the child
    env = {**os.environ, "FEDLORA_TEST_HOOKS": "1", "PYTHONPATH": str(ROOT)}
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "aggregator_gateway.gateway_cli", "-v", "--config", str(config)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


def _deadlines(offsets_s: dict[str, float]) -> dict[str, int]:
    now = wall_clock_ms()
    return {stage: now + int(1000 * offsets_s[stage]) for stage in STAGES}


def _check_partial(
    partial: PartialAggregate,
    task: RoundTask,
    survivors: list[str],
    sums_dir: Path,
    devices: list[ScriptedDevice],
) -> None:
    ring, decoded = plain_sum(task, [device_update(name, task) for name in survivors])
    sent = sum(d.masked_frame_bytes for d in devices if d.name in survivors)
    assert partial.uplink_frame_bytes == sent  # measured frames, bit-packed (issue 10, item 0)
    assert partial.survivors == tuple(sorted(survivors))
    assert partial.count == len(survivors) and partial.weight_sum == float(len(survivors))
    assert np.allclose(partial.vector_sum, decoded, rtol=0, atol=1e-12)
    assert np.array_equal(np.load(sums_dir / f"round-{task.round_id}-{GATEWAY}.npy"), ring)


@pytest.fixture
def broker(mosquitto: MosquittoHandle) -> int:
    """The port of a plain mosquitto (tests/integration/conftest.py), stopped at teardown."""
    return mosquitto.port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_partial_is_exact_with_dropouts_and_forged_advertise_ignored(broker: int, tmp_path: Path) -> None:
    config = _write_gateway_dir(tmp_path / "gw", broker)
    gateway = _start_gateway(config)
    cloud = ScriptedCloud(broker)
    devices = [
        ScriptedDevice(name, broker, drop_before=name == "dev-1", drop_after=name == "dev-3")
        for name in DEVICES
    ]
    try:
        task = round_task(
            1,
            deadlines_ms=_deadlines(
                {"advertise": 8, "shares": 8, "masked": 4.5, "consistency": 6, "unmask": 9, "partial": 12}
            ),
        )
        cloud.publish_task(task)
        forged = make_client("dev-0", task, KEYS).advertise()  # valid inner keys, frame signed by mallory
        forged_topic = device_stage_topic(FLEET, GATEWAY, 1, Stage.ADVERTISE, "dev-0")
        forged_message = AdvertiseKeys(1, "dev-0", forged.c_public, forged.s_public, forged.signature)

        def forge_until_roster() -> None:
            cloud.forge(forged_topic, forged_message, 1)
            while not devices[0].has_roster.wait(0.1):
                cloud.forge(forged_topic, forged_message, 1)

        threading.Thread(target=forge_until_roster, daemon=True).start()
        # the genuine dev-0 joins only after the gateway refused a forgery: it must not take its place
        _wait_for_log(tmp_path / "gw" / "gateway.log", "wrongly signed", timeout_s=10)
        for device in devices:
            device.join(task)
        partial = cloud.next_partial(timeout_s=15)
        survivors = [d for d in DEVICES if d != "dev-1"]
        _check_partial(partial, task, survivors, tmp_path / "gw" / "sums", devices)
    finally:
        _stop(gateway)
        for device in devices:
            device.conn.stop()
        cloud.conn.stop()
    log = (tmp_path / "gw" / "gateway.log").read_text()
    assert "wrongly signed" in log


def test_killed_gateway_resumes_the_round_and_the_next_round_succeeds(broker: int, tmp_path: Path) -> None:
    config = _write_gateway_dir(tmp_path / "gw", broker)
    gateway = _start_gateway(config)
    cloud = ScriptedCloud(broker)
    names = DEVICES
    devices = [ScriptedDevice(name, broker, hold=True) for name in names]
    try:
        task = round_task(
            1,
            deadlines_ms=_deadlines(
                {"advertise": 8, "shares": 9, "masked": 14, "consistency": 15, "unmask": 16, "partial": 18}
            ),
        )
        cloud.publish_task(task)
        for device in devices:
            device.join(task)
        for device in devices:
            assert device.has_shares.wait(10), "routed shares never arrived"
        gateway.send_signal(signal.SIGKILL)  # mid-round: shares routed, no masked update yet
        gateway.wait(timeout=5)
        for device in devices:
            device.release()  # uploads go to the broker, queued for the gateway's persistent session
        gateway = _start_gateway(config)
        partial = cloud.next_partial(timeout_s=15)
        _check_partial(partial, task, names, tmp_path / "gw" / "sums", devices)

        task2 = round_task(
            2,
            deadlines_ms=_deadlines(
                {"advertise": 5, "shares": 6, "masked": 7, "consistency": 8, "unmask": 9, "partial": 10}
            ),
        )
        cloud.publish_task(task2)
        for device in devices:
            device.hold = False
            device.join(task2)
        partial2 = cloud.next_partial(timeout_s=12)
        assert partial2.round_id == 2
        _check_partial(partial2, task2, names, tmp_path / "gw" / "sums", devices)
        assert_nothing_within(0.3, cloud.partials, what="a second partial (a round published twice)")
    finally:
        _stop(gateway)
        for device in devices:
            device.conn.stop()
        cloud.conn.stop()
    log = (tmp_path / "gw" / "gateway.log").read_text()
    assert "round 1: resumed in stage masked" in log


def test_trusted_gateway_publishes_the_median_of_plain_updates(broker: int, tmp_path: Path) -> None:
    """Trusted mode: devices publish PlainUpdates (one poisoned ×20), the partial is median × count."""
    config = _write_gateway_dir(tmp_path / "gw", broker, 'trusted_mode = true\ntrusted_rule = "median"\n')
    gateway = _start_gateway(config)
    cloud = ScriptedCloud(broker)
    connections = {name: _connect(broker, name, lambda _t, _p: None) for name in DEVICES}
    try:
        for conn in connections.values():
            conn.start()
            conn.wait_connected(10)
        deadlines = _deadlines(
            {"advertise": 1, "shares": 2, "masked": 10, "consistency": 11, "unmask": 12, "partial": 14}
        )
        task = round_task(1, deadlines_ms=deadlines, mode="trusted")
        cloud.publish_task(task)
        updates = trusted_updates(task, DEVICES, poisoned=["dev-2"])
        _wait_for_log(tmp_path / "gw" / "gateway.log", "round 1: started in trusted mode", timeout_s=10)
        for name, conn in connections.items():
            message = PlainUpdate(1, name, task.codec.ring_bits, updates[name])
            topic = device_stage_topic(FLEET, GATEWAY, 1, Stage.MASKED, name)
            conn.publish(topic, _identity(name).encode(message, round_id=1))
        partial = cloud.next_partial(timeout_s=8)  # every device answered: well before the deadline
        decoded = decoded_updates(task, updates)
        assert partial.survivors == tuple(DEVICES) and partial.count == len(DEVICES)
        assert np.allclose(partial.vector_sum, np.median(decoded, axis=0) * len(DEVICES), rtol=0, atol=1e-12)
        assert not np.allclose(partial.vector_sum, decoded.sum(axis=0), atol=1e-3)
    finally:
        _stop(gateway)
        for conn in connections.values():
            conn.stop()
        cloud.conn.stop()


def _wait_for_log(path: Path, text: str, *, timeout_s: float) -> None:
    """Return once the process log at `path` contains `text`; AssertionError after `timeout_s`."""
    wait_until(lambda: text in path.read_text(), timeout_s=timeout_s, what=f"{text!r} in {path.name}")
