"""`fedlora provision` output against the real mosquitto 2.0 broker: delivery, not PUBACK, is checked.

The generated configs are used as they are except for what a test on one machine must change
(`_localise`): the listener port becomes an ephemeral port bound to 127.0.0.1, persistence goes to the
test's own directory, and the bridge address points at the test's cloud broker port.
"""

from __future__ import annotations

import argparse
import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fedlora.provision.cli import add_arguments, run

try:
    from tests.integration.mosquitto_fixture import HOST, MosquittoHandle, free_port, start_mosquitto
except ModuleNotFoundError:  # plain `pytest`: tests/integration (no __init__.py) itself is on sys.path
    from mosquitto_fixture import HOST, MosquittoHandle, free_port, start_mosquitto  # type: ignore[no-redef]

pytestmark = pytest.mark.integration

FLEET = "demo"
P = f"fl/v1/{FLEET}"
CONNECT_TIMEOUT_S = 5.0
DELIVERY_TIMEOUT_S = 5.0
SILENCE_S = 1.0  # how long a message that must NOT arrive is waited for


def _provision(out: Path, *extra: str) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--out", str(out), *extra]
    if "--revoke" not in extra and "--add-devices" not in extra:
        argv += ["--fleet", FLEET, "--gateways", "g1,g2", "--devices", "4", "--broker-host", "localhost"]
    assert run(parser.parse_args(argv)) == 0


def _localise(conf: str, *, port: int, data_dir: Path, cloud_port: int | None = None) -> str:
    conf = re.sub(r"^listener \d+$", f"listener {port} {HOST}", conf, count=1, flags=re.M)
    conf = re.sub(r"^persistence_location .*$", f"persistence_location {data_dir}/", conf, flags=re.M)
    if cloud_port is None:
        return conf.split("\nconnection ")[0] + "\n"  # no bridge
    return re.sub(r"^address .*$", f"address {HOST}:{cloud_port}", conf, flags=re.M)


def _start_broker(fleet_dir: Path, name: str, tmp: Path, *, cloud_port: int | None = None) -> MosquittoHandle:
    port = free_port()
    data = tmp / f"data-{name}"
    data.mkdir(exist_ok=True)
    conf = (fleet_dir / "brokers" / name / "mosquitto.conf").read_text()
    return start_mosquitto(
        _localise(conf, port=port, data_dir=data, cloud_port=cloud_port), port, workdir=tmp
    )


@dataclass
class Client:
    """A paho 2.x client with a received-message queue and connection outcome."""

    mqttc: mqtt.Client
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)
    connected: threading.Event = field(default_factory=threading.Event)
    settled: threading.Event = field(default_factory=threading.Event)  # CONNACK or disconnect seen
    closed: threading.Event = field(default_factory=threading.Event)  # the connection ended

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.mqttc.on_subscribe = lambda *args: done.set()
        self.mqttc.subscribe(topic, qos=1)
        assert done.wait(CONNECT_TIMEOUT_S), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.mqttc.publish(topic, payload, qos=1, retain=retain).wait_for_publish(CONNECT_TIMEOUT_S)

    def received(self, timeout_s: float) -> list[tuple[str, bytes]]:
        """Messages that arrive within `timeout_s`."""
        out, deadline = [], time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.messages.get(timeout=left)
            except queue.Empty:
                break
            out.append((msg.topic, msg.payload))
        return out

    def wait_for(
        self, topic: str, payload: bytes, timeout_s: float = DELIVERY_TIMEOUT_S
    ) -> list[tuple[str, bytes]]:
        """Wait until (topic, payload) arrives; return every message seen meanwhile (it included)."""
        seen, deadline = [], time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.messages.get(timeout=left)
            except queue.Empty:
                break
            seen.append((msg.topic, msg.payload))
            if seen[-1] == (topic, payload):
                return seen
        raise AssertionError(f"{topic} {payload!r} not delivered within {timeout_s} s; got {seen}")


class Clients:
    """Creates TLS clients from node bundles and disconnects them all at teardown."""

    def __init__(self) -> None:
        self._all: list[mqtt.Client] = []

    def connect(
        self,
        port: int,
        ca: Path,
        cert: Path | None,
        key: Path | None,
        *,
        client_id: str = "",
        on_disconnect: object = None,
    ) -> Client | None:
        """Connect with TLS; the connected Client, or None if the broker refused (TLS or CONNACK)."""
        mqttc = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        mqttc.tls_set(
            ca_certs=str(ca), certfile=str(cert) if cert else None, keyfile=str(key) if key else None
        )
        client = Client(mqttc)

        def on_connect(c: mqtt.Client, u: object, f: object, rc: mqtt.ReasonCode, p: object) -> None:
            if not rc.is_failure:
                client.connected.set()
            client.settled.set()

        mqttc.on_connect = on_connect

        def disconnected(*args: object) -> None:
            client.settled.set()
            client.closed.set()
            if callable(on_disconnect):
                on_disconnect()

        mqttc.on_disconnect = disconnected
        mqttc.on_message = lambda c, u, msg: client.messages.put(msg)
        self._all.append(mqttc)
        try:
            mqttc.connect(HOST, port, keepalive=30)
        except OSError:  # ssl.SSLError included: handshake refused (TLS 1.2 path)
            return None
        mqttc.loop_start()
        client.settled.wait(CONNECT_TIMEOUT_S)
        return client if client.connected.is_set() else None

    def node(self, fleet_dir: Path, node_id: str, port: int, **kwargs: object) -> Client | None:
        d = fleet_dir / "nodes" / node_id
        return self.connect(port, d / "ca.crt", d / "node.crt", d / "node.key", **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        for mqttc in self._all:
            mqttc.disconnect()  # wakes the network loop, so loop_stop returns at once
            mqttc.loop_stop()


@pytest.fixture
def clients() -> Iterator[Clients]:
    made = Clients()
    yield made
    made.close()


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fleet") / "out"
    _provision(out)  # g1: dev-0001, dev-0003; g2: dev-0002, dev-0004
    return out


@pytest.fixture
def g1_broker(fleet_dir: Path, tmp_path: Path) -> Iterator[MosquittoHandle]:
    broker = _start_broker(fleet_dir, "g1", tmp_path)
    yield broker
    broker.stop()


def test_device_publish_on_own_topic_reaches_gateway(fleet_dir, g1_broker, clients) -> None:
    gw = clients.node(fleet_dir, "g1", g1_broker.port)
    dev = clients.node(fleet_dir, "dev-0001", g1_broker.port)
    assert gw and dev, g1_broker.log()
    gw.subscribe(f"{P}/gw/g1/round/+/+/+")
    dev.publish(f"{P}/gw/g1/round/1/masked/dev-0001", b"update")
    gw.wait_for(f"{P}/gw/g1/round/1/masked/dev-0001", b"update")


def test_publish_under_another_id_or_gateway_is_not_delivered(fleet_dir, g1_broker, clients) -> None:
    gw = clients.node(fleet_dir, "g1", g1_broker.port)
    dev1 = clients.node(fleet_dir, "dev-0001", g1_broker.port)
    other_site = clients.node(fleet_dir, "dev-0002", g1_broker.port)  # a g2 device on g1's broker
    assert gw and dev1 and other_site
    gw.subscribe(f"{P}/#")
    dev1.publish(f"{P}/gw/g1/round/1/masked/dev-0003", b"spoofed")  # another device's id
    dev1.publish(f"{P}/status/dev-0003", b"spoofed-status")
    other_site.publish(f"{P}/gw/g1/round/1/masked/dev-0002", b"foreign")  # own id, wrong gateway
    dev1.publish(f"{P}/gw/g1/round/1/masked/dev-0001", b"control")
    got = gw.wait_for(f"{P}/gw/g1/round/1/masked/dev-0001", b"control") + gw.received(SILENCE_S)
    assert not [m for m in got if m[1] in (b"spoofed", b"spoofed-status", b"foreign")], got


def test_device_reads_gateway_stage_topics_but_not_other_devices(fleet_dir, g1_broker, clients) -> None:
    gw = clients.node(fleet_dir, "g1", g1_broker.port)
    dev1 = clients.node(fleet_dir, "dev-0001", g1_broker.port)
    dev3 = clients.node(fleet_dir, "dev-0003", g1_broker.port)
    assert gw and dev1 and dev3
    dev3.subscribe(f"{P}/gw/g1/round/+/+")
    dev3.subscribe(f"{P}/gw/g1/round/+/+/+")  # other devices' uploads: must stay unreadable
    dev3.subscribe(f"{P}/gw/g1/inbox/+")
    dev1.publish(f"{P}/gw/g1/round/1/masked/dev-0001", b"private")
    gw.publish(f"{P}/gw/g1/inbox/dev-0001", b"not-for-dev3")
    gw.publish(f"{P}/gw/g1/inbox/dev-0003", b"for-dev3")
    gw.publish(f"{P}/gw/g1/round/1/roster", b"roster")
    got = dev3.wait_for(f"{P}/gw/g1/round/1/roster", b"roster") + dev3.received(SILENCE_S)
    assert (f"{P}/gw/g1/inbox/dev-0003", b"for-dev3") in got
    assert not [m for m in got if m[1] in (b"private", b"not-for-dev3")], got


def test_client_without_certificate_is_refused(fleet_dir, g1_broker, clients) -> None:
    assert clients.connect(g1_broker.port, fleet_dir / "ca.crt", None, None) is None


def test_broker_certificate_cannot_log_in_as_client(fleet_dir, g1_broker, clients) -> None:
    b = fleet_dir / "brokers" / "g1"
    assert clients.connect(g1_broker.port, b / "ca.crt", b / "server.crt", b / "server.key") is None


def test_revoked_device_is_refused_after_restart(tmp_path, clients) -> None:
    out = tmp_path / "fleet"
    _provision(out)
    broker = _start_broker(out, "g1", tmp_path)
    try:
        assert clients.node(out, "dev-0001", broker.port) is not None, broker.log()
        _provision(out, "--revoke", "dev-0001")
        broker.restart()
        assert clients.node(out, "dev-0001", broker.port) is None
        still = clients.node(out, "dev-0003", broker.port)
        assert still is not None, broker.log()
    finally:
        broker.stop()


def test_added_device_is_served_after_acl_reload(tmp_path, clients) -> None:
    out = tmp_path / "fleet"
    _provision(out)
    broker = _start_broker(out, "g1", tmp_path)
    try:
        _provision(out, "--add-devices", "1", "--gateways", "g1")  # dev-0005, same CA
        broker.reload()  # returns once the broker has re-read its files
        gw = clients.node(out, "g1", broker.port)
        dev = clients.node(out, "dev-0005", broker.port)
        assert gw and dev, broker.log()
        gw.subscribe(f"{P}/gw/g1/round/+/+/+")
        dev.publish(f"{P}/gw/g1/round/2/advertise/dev-0005", b"keys")
        gw.wait_for(f"{P}/gw/g1/round/2/advertise/dev-0005", b"keys")
    finally:
        broker.stop()


def test_bridge_carries_task_in_and_partial_and_status_out(fleet_dir, tmp_path, clients) -> None:
    cloud_broker = _start_broker(fleet_dir, "cloud", tmp_path)
    g1_broker = _start_broker(fleet_dir, "g1", tmp_path, cloud_port=cloud_broker.port)
    try:
        cloud = clients.node(fleet_dir, "cloud", cloud_broker.port)
        dev1 = clients.node(fleet_dir, "dev-0001", g1_broker.port)
        gw = clients.node(fleet_dir, "g1", g1_broker.port)
        assert cloud and dev1 and gw
        cloud.subscribe(f"{P}/round/+/partial/+")
        cloud.subscribe(f"{P}/status/+")
        dev1.subscribe(f"{P}/round/+/task")
        cloud.publish(f"{P}/round/1/task", b"task-1", retain=True)
        dev1.wait_for(f"{P}/round/1/task", b"task-1", timeout_s=15.0)  # bridge connected and subscribed
        late = clients.node(fleet_dir, "dev-0003", g1_broker.port)
        assert late is not None
        late.subscribe(f"{P}/round/+/task")  # retained on the gateway broker too
        late.wait_for(f"{P}/round/1/task", b"task-1")
        gw.publish(f"{P}/round/1/partial/g1", b"partial-g1")
        cloud.wait_for(f"{P}/round/1/partial/g1", b"partial-g1")
        cloud.subscribe(f"{P}/round/+/abort/+")
        gw.publish(f"{P}/round/2/abort/g1", b"abort-g1")  # a gateway's abort reaches the cloud
        cloud.wait_for(f"{P}/round/2/abort/g1", b"abort-g1")
        dev1.publish(f"{P}/status/dev-0001", b"online")
        cloud.wait_for(f"{P}/status/dev-0001", b"online")
    finally:
        g1_broker.stop()
        cloud_broker.stop()


def test_bridge_and_acls_carry_retained_chunk_topics(fleet_dir, tmp_path, clients) -> None:
    """Retained chunk topics (docs/transport.md, "Retained chunks"): the cloud writes them, the bridge brings
    them in retained, devices read them; a device cannot write them, and status has none."""
    cloud_broker = _start_broker(fleet_dir, "cloud", tmp_path)
    g1_broker = _start_broker(fleet_dir, "g1", tmp_path, cloud_port=cloud_broker.port)
    try:
        cloud = clients.node(fleet_dir, "cloud", cloud_broker.port)
        dev1 = clients.node(fleet_dir, "dev-0001", g1_broker.port)
        assert cloud and dev1
        dev1.subscribe(f"{P}/round/+/task/chunk/+")
        dev1.subscribe(f"{P}/model/+/chunk/+")
        cloud.publish(f"{P}/round/2/task/chunk/0", b"task-2-chunk-0", retain=True)
        dev1.wait_for(f"{P}/round/2/task/chunk/0", b"task-2-chunk-0", timeout_s=15.0)  # bridge is up
        for i in range(3):
            cloud.publish(f"{P}/model/4/chunk/{i}", b"model-4-chunk-%d" % i, retain=True)
        dev1.wait_for(f"{P}/model/4/chunk/2", b"model-4-chunk-2")
        dev1.publish(f"{P}/model/4/chunk/0", b"forged", retain=True)  # denied: devices only read them
        dev1.publish(f"{P}/status/dev-0001/chunk/0", b"forged", retain=True)  # no such right anywhere
        late = clients.node(fleet_dir, "dev-0003", g1_broker.port)
        assert late is not None
        late.subscribe(f"{P}/model/+/chunk/+")
        late.subscribe(f"{P}/status/+/chunk/+")
        got = sorted(late.received(SILENCE_S + 1.0))  # retained on the gateway broker, as bridged
        assert got == [(f"{P}/model/4/chunk/{i}", b"model-4-chunk-%d" % i) for i in range(3)]
    finally:
        g1_broker.stop()
        cloud_broker.stop()


def test_bridge_and_acls_carry_model_deltas(fleet_dir, tmp_path, clients) -> None:
    """`model/{v}/delta` (docs/update-codec.md, "Downlink") travels as `model/{v}` does: the cloud writes
    it and its chunk topics, the bridge brings them in retained, devices read them but cannot write them."""
    cloud_broker = _start_broker(fleet_dir, "cloud", tmp_path)
    g1_broker = _start_broker(fleet_dir, "g1", tmp_path, cloud_port=cloud_broker.port)
    try:
        cloud = clients.node(fleet_dir, "cloud", cloud_broker.port)
        dev1 = clients.node(fleet_dir, "dev-0001", g1_broker.port)
        assert cloud and dev1
        dev1.subscribe(f"{P}/model/+/delta")
        dev1.subscribe(f"{P}/model/+/delta/chunk/+")
        cloud.publish(f"{P}/model/5/delta", b"delta-5", retain=True)
        dev1.wait_for(f"{P}/model/5/delta", b"delta-5", timeout_s=15.0)  # bridge connected and subscribed
        cloud.publish(f"{P}/model/6/delta/chunk/0", b"delta-6-chunk-0", retain=True)
        dev1.wait_for(f"{P}/model/6/delta/chunk/0", b"delta-6-chunk-0")
        dev1.publish(f"{P}/model/5/delta", b"forged", retain=True)  # denied: devices only read them
        late = clients.node(fleet_dir, "dev-0003", g1_broker.port)
        assert late is not None
        late.subscribe(f"{P}/model/+/delta")
        late.subscribe(f"{P}/model/+/delta/chunk/+")
        got = sorted(late.received(SILENCE_S + 1.0))  # retained on the gateway broker, as bridged
        assert got == [(f"{P}/model/5/delta", b"delta-5"), (f"{P}/model/6/delta/chunk/0", b"delta-6-chunk-0")]
    finally:
        g1_broker.stop()
        cloud_broker.stop()


def test_device_certificate_cannot_take_over_the_gateway_client_id(fleet_dir, g1_broker, clients) -> None:
    """`use_username_as_clientid`: a device connecting with client id "g1" (clean session, 4 times) gets
    its own CN as client id; the gateway's connection and session stay untouched."""
    drops: list[float] = []
    gw = clients.node(fleet_dir, "g1", g1_broker.port, client_id="g1", on_disconnect=lambda: drops.append(1))
    assert gw is not None, g1_broker.log()
    gw.subscribe(f"{P}/gw/g1/round/+/+/+")
    for _ in range(4):
        thief = clients.node(fleet_dir, "dev-0001", g1_broker.port, client_id="g1")
        assert thief is not None
        thief.mqttc.disconnect()
        assert thief.closed.wait(CONNECT_TIMEOUT_S), "the thief's connection did not close"
    dev = clients.node(fleet_dir, "dev-0003", g1_broker.port, client_id="dev-0003")
    assert dev is not None
    dev.publish(f"{P}/gw/g1/round/1/advertise/dev-0003", b"still-served")
    gw.wait_for(f"{P}/gw/g1/round/1/advertise/dev-0003", b"still-served")
    assert drops == [], g1_broker.log()
    assert "as dev-0001 (" in g1_broker.log() and "as g1 (" in g1_broker.log()


def test_revocation_takes_effect_on_a_running_broker_with_sighup(tmp_path, clients) -> None:
    """mosquitto 2.0.11 re-reads the CRL and the ACL on SIGHUP: the revoked certificate is refused at
    the next TLS handshake, and its connection that is still open loses every right (no ACL entry)."""
    out = tmp_path / "fleet"
    _provision(out)
    broker = _start_broker(out, "g1", tmp_path)
    try:
        gw = clients.node(out, "g1", broker.port, client_id="g1")
        assert gw is not None, broker.log()
        gw.subscribe(f"{P}/gw/g1/round/+/+/+")
        _provision(out, "--revoke", "dev-0001")
        lingering = clients.node(out, "dev-0001", broker.port, client_id="dev-0001")
        assert lingering is not None  # not yet refused: the broker still has the old CRL
        broker.reload()  # returns once the broker has re-read its files
        assert clients.node(out, "dev-0001", broker.port) is None, broker.log()
        lingering.publish(f"{P}/gw/g1/round/3/advertise/dev-0001", b"from-revoked")
        still = clients.node(out, "dev-0003", broker.port, client_id="dev-0003")
        assert still is not None, broker.log()
        still.publish(f"{P}/gw/g1/round/3/advertise/dev-0003", b"control")
        got = gw.wait_for(f"{P}/gw/g1/round/3/advertise/dev-0003", b"control") + gw.received(SILENCE_S)
        assert not [m for m in got if m[1] == b"from-revoked"], got
    finally:
        broker.stop()


def test_diag_broker_probe_is_clean_and_names_a_revoked_certificate(tmp_path) -> None:
    """The diag probe leaves no OpenSSL "unexpected eof" in the broker log, sends no MQTT CONNECT (which
    would displace the running agent), and reports a revoked certificate as such."""
    from hardware_tests.context import DiagContext
    from hardware_tests.node_checks import check_broker

    out = tmp_path / "fleet"
    _provision(out)
    broker = _start_broker(out, "g1", tmp_path)

    def probe(node: str) -> object:
        node_dir = out / "nodes" / node
        config = node_dir / "device.toml"
        text = (node_dir / "config.toml").read_text().replace('host = "g1"', f'host = "{HOST}"')
        text = re.sub(r"^port = \d+$", f"port = {broker.port}", text, flags=re.M)
        config.write_text(text + f'\n[device]\nbundle_dir = "{tmp_path}/b"\ndata_dir = "{tmp_path}/d"\n')
        ctx = DiagContext.from_config_path(config)
        assert ctx.config is not None, ctx.config_error
        return check_broker(ctx)

    try:
        ok = probe("dev-0001")
        assert ok.status.value == "pass", ok.reason
        _provision(out, "--revoke", "dev-0003")
        broker.reload()
        refused = probe("dev-0003")
        assert refused.status.value == "fail" and "revoked" in refused.reason, refused.reason
        log = "New connection" + broker.log().split("New connection", 1)[1]  # after the fixture's TCP probe
        assert "unexpected eof" not in log.lower(), log
        assert "Client <unknown> closed its connection" in log and "New client connected" not in log
    finally:
        broker.stop()
