"""`fedlora cloud` against a real mosquitto with scripted gateways (tests/integration/mosquitto_fixture.py).

The cloud runs through `aggregator_gateway.cloud_cli.run` (config file, bundle, store, MQTT) on a thread.
Scripted gateways are fresh subscribers: they receive the retained task, decode and verify it, and answer
with signed PartialAggregates built from known vectors. Round 1 gets no answer (failed, retried as round 2);
in round 2 a device key forges g1's partial first (ignored); rounds 2 and 3 complete.
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregator_gateway import cloud_cli
from fl_protocol.flatvec import load_flat_vector
from fl_protocol.identity import NodeIdentity
from fl_protocol.topics import Topic, TopicKind, parse_topic, partial_topic, status_topic
from fl_protocol.wire.messages import GlobalModel, GlobalModelDelta, PartialAggregate, RoundTask, Status
from tests.integration.mosquitto_fixture import MosquittoHandle
from tests.kit.cloud import cloud_config, write_cloud_dir
from tests.kit.fleet import Role, device, identity, public_keys, wall_clock_ms
from tests.kit.mqtt import connect

pytestmark = pytest.mark.integration
FLEET, DIM = "f1", 8
ROLES = {"cloud": Role("cloud"), "g1": Role("gateway"), "g2": Role("gateway"), "dev1": device(None)}
SERVER_LR, BETA1, BETA2, TAU = 0.5, 0.9, 0.99, 0.01
TASK_FILTER = f"fl/v1/{FLEET}/round/+/task"


def write_federation(root: Path, port: int, initial: np.ndarray) -> tuple[Path, dict[str, Ed25519PrivateKey]]:
    """The cloud's directory (two gateways, two rounds, stage timeouts under a second, FedAdam);
    returns (its config path, every node's private key)."""
    config = cloud_config(
        fleet=FLEET,
        port=port,
        cloud='rounds = 2\ngateways = ["g1", "g2"]\ntotal_devices = 10\nmax_retries = 2',
        extra=f"""
[cloud.stage_timeouts_s]
advertise = 0.2
shares = 0.2
masked = 0.5
consistency = 0.2
unmask = 0.2
partial = 0.5
[privacy]
mechanism = "gaussian"
noise_multiplier = 1.0
[optimizer]
name = "fedadam"
server_lr = {SERVER_LR}
beta1 = {BETA1}
beta2 = {BETA2}
tau = {TAU}
""",
    )
    return write_cloud_dir(root, fleet=FLEET, roles=ROLES, initial=initial, config=config)


def _identity(name: str) -> NodeIdentity:
    return identity(name, public_keys(ROLES), fleet=FLEET, clock_ms=wall_clock_ms)


def _sums(round_id: int) -> dict[str, tuple[np.ndarray, int]]:
    rng = np.random.default_rng(round_id)
    return {"g1": (rng.normal(size=DIM) * 2, 2), "g2": (rng.normal(size=DIM) * 3, 3)}


def scripted_gateways(port: int, stop: threading.Event, seen: list[RoundTask]) -> None:
    """Answer every task except round 1; in round 2 a device forges g1's partial before g1 answers."""
    conn, inbox = connect(port, "script", [TASK_FILTER])
    gateways = {g: _identity(g) for g in ("g1", "g2")}
    forger = _identity("dev1")
    try:
        while not stop.is_set():
            try:
                topic_text, payload = inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if not payload:
                continue  # a cleared retained task
            _header, task = gateways["g1"].decode(payload, RoundTask, senders={"cloud"})
            seen.append(task)
            if task.round_id == 1:
                continue
            if task.round_id == 2:
                forged = PartialAggregate("g1", 2, task.model_version, np.full(DIM, 1e6), 1, 1.0, ("dev1",))
                # the forgery comes first: one connection, one topic, one QoS, so MQTT keeps the order
                conn.publish(partial_topic(FLEET, 2, "g1"), forger.encode(forged, round_id=2))
            for name, (vector_sum, count) in _sums(task.round_id).items():
                survivors = tuple(f"{name}-d{i}" for i in range(count))
                partial = PartialAggregate(
                    name, task.round_id, task.model_version, vector_sum, count, float(count), survivors
                )
                conn.publish(
                    partial_topic(FLEET, task.round_id, name),
                    gateways[name].encode(partial, round_id=task.round_id),
                )
    finally:
        conn.stop()


def _expected_fedadam(initial: np.ndarray, rounds: list[int]) -> np.ndarray:
    x = initial.astype(np.float64)
    m, v = np.zeros(DIM), np.full(DIM, TAU**2)
    for round_id in rounds:
        sums = _sums(round_id)
        delta = (sums["g1"][0] + sums["g2"][0]) / (sums["g1"][1] + sums["g2"][1])
        m = BETA1 * m + (1 - BETA1) * delta
        v = BETA2 * v + (1 - BETA2) * delta**2
        x = (x + SERVER_LR * m / (np.sqrt(v) + TAU)).astype(np.float32).astype(np.float64)
    return x


def test_cloud_runs_rounds_with_scripted_gateways(mosquitto: MosquittoHandle, tmp_path: Path) -> None:
    port = mosquitto.port
    initial = np.linspace(-1, 1, DIM).astype(np.float32)
    config, _keys = write_federation(tmp_path, port, initial)
    result: dict[str, int] = {}
    args = argparse.Namespace(config=config)
    cloud = threading.Thread(target=lambda: result.update(rc=cloud_cli.run(args)))
    stop, seen = threading.Event(), []
    watcher, tasks = connect(port, "watcher", [TASK_FILTER])
    try:
        cloud.start()
        tasks.get(timeout=10)  # round 1's task is out: the scripted gateways join late, it is retained
        device, _ = connect(port, "dev1")
        status = Status("dev1", "idle", "", 1, {"round": 2, "train_loss": 2.5, "eval_loss": 2.75})
        device.publish(status_topic(FLEET, "dev1"), _identity("dev1").encode(status, round_id=2), retain=True)
        script = threading.Thread(target=scripted_gateways, args=(port, stop, seen))
        script.start()
        cloud.join(timeout=30)
        assert not cloud.is_alive(), "the cloud did not finish its rounds"
        assert result["rc"] == 0
        _check_outputs(tmp_path, initial, seen)
        _check_retained(port, tmp_path)
        assert_final_model(port, tmp_path, initial)
        device.stop()
    finally:
        stop.set()
        watcher.stop()


def _check_outputs(root: Path, initial: np.ndarray, seen: list[RoundTask]) -> None:
    report = json.loads((root / "store" / "rounds.json").read_text())
    states = [(r["round"], r["state"], r["model_version"]) for r in report["rounds"]]
    assert states == [(1, "failed", 0), (2, "completed", 0), (3, "completed", 1)]
    second = report["rounds"][1]
    assert second["survivors"] == 5 and second["train_loss"] == 2.5 and second["eval_loss"] == 2.75
    assert second["epsilon"] > 0 and second["dense_fp32_bytes"] == 4 * DIM
    assert report["final"]["model_version"] == 2 and report["final"]["succeeded"] is True
    assert second["downlink_full_bytes"] > 0 and second["downlink_delta_bytes"] == 0  # version 0: no delta
    assert report["rounds"][2]["downlink_delta_bytes"] > 0  # version 1 went out as a delta too

    assert [t.round_id for t in seen][:3] == [1, 2, 3]
    assert seen[1].model_version == 0 and seen[2].model_version == 1  # the retry reused version 0
    assert seen[0].codec.index_seed != seen[1].codec.index_seed  # fresh seeds per attempt
    assert all(t.model_dimension == DIM for t in seen)


def _check_retained(port: int, root: Path) -> None:
    """A fresh subscriber gets the final model (valid, signed frame), its delta and no stale task.

    A broker sends the retained messages of a subscription before it handles that connection's next
    packet, so once `connect` has its probe back (tests/kit/mqtt.py) every retained message is in."""
    conn, inbox = connect(
        port, "fresh", [f"fl/v1/{FLEET}/model/+", f"fl/v1/{FLEET}/model/+/delta", TASK_FILTER]
    )
    try:
        got: list[tuple[Topic, bytes]] = []
        while not inbox.empty():
            topic_text, payload = inbox.get_nowait()
            got.append((parse_topic(topic_text), payload))
        assert [t.kind for t, _ in got] == [TopicKind.MODEL, TopicKind.MODEL_DELTA]
        topic, payload = got[0]
        _header, model = _identity("g1").decode(payload, GlobalModel, senders={"cloud"})
        assert topic.model_version == model.model_version == 2
        final = load_flat_vector(root / "store" / "final.safetensors").values
        assert np.array_equal(model.vector(max_elements=DIM), final)
    finally:
        conn.stop()


def assert_final_model(port: int, root: Path, initial: np.ndarray) -> None:
    """The final model (version 2) is the FedAdam trajectory of the scripted sums up to the downlink's
    last residual: within half a quantization step of its delta (docs/update-codec.md, "Downlink"), and
    the retained delta rebuilds it bit for bit from version 1 (read from the store's hash-addressed file)."""
    conn, inbox = connect(port, "delta-reader", [f"fl/v1/{FLEET}/model/+/delta"])
    try:
        _topic, payload = inbox.get_nowait()
    finally:
        conn.stop()
    _header, delta = _identity("g1").decode(payload, GlobalModelDelta, senders={"cloud"})
    assert (delta.model_version, delta.base_version, delta.bits) == (2, 1, 8)
    base = load_flat_vector(root / "store" / "vectors" / f"{delta.base_sha256.hex()}.safetensors").values
    final = load_flat_vector(root / "store" / "final.safetensors").values
    assert delta.apply(base).tobytes() == final.tobytes()
    half_step = float(delta.quantized().scales.max()) / 2
    error = float(np.max(np.abs(final.astype(np.float64) - _expected_fedadam(initial, [2, 3]))))
    assert 0 < error <= half_step + 1e-6, (error, half_step)
