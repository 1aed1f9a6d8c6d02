"""CloudCoordinator driven in-process (no broker): a recording publisher, an injected clock, signed frames.

Each test follows the cloud round state machine (`aggregator_gateway.cloud.lifecycle`) through the wired
pieces: scheduler, collector, global step, store and reporter.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregator_gateway.cloud.config import CloudConfig, CloudSection, PrivacySection
from aggregator_gateway.cloud.coordinator import CloudCoordinator
from aggregator_gateway.cloud.lifecycle import CloudState
from aggregator_gateway.cloud.store import ModelStore
from fl_protocol.config import BrokerSection, IdentitySection, NodeSection
from fl_protocol.errors import ProtocolError
from fl_protocol.identity import NodeIdentity
from fl_protocol.topics import TopicKind, parse_topic, partial_topic, status_topic
from fl_protocol.wire.messages import GlobalModelDelta, PartialAggregate, Status

FLEET, DIM, BUNDLE = "f1", 8, "b" * 64
NODES = ("cloud", "g1", "g2", "dev1", "dev2")
PARTIAL_DEADLINE_MS = 481_000  # the default stage timeouts add up to 480 s


class Recorder:
    """A Publisher that keeps (topic, payload, retain) of every publish."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, durable: bool = False
    ) -> None:
        self.sent.append((topic, payload, retain))

    def kinds(self) -> list[tuple[TopicKind, int | None, bool]]:
        """(kind, round, cleared) of every publish, in order."""
        out = []
        for topic, payload, _retain in self.sent:
            parsed = parse_topic(topic)
            out.append((parsed.kind, parsed.round_id, not payload))
        return out


class Federation:
    """A cloud over a fresh store, and the fleet's keys to sign what gateways and devices send."""

    def __init__(self, root: Path, *, max_retries: int = 1) -> None:
        self.root, self.now_ms = root, 1_000_000
        self.keys = {
            n: Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32) for i, n in enumerate(NODES)
        }
        nodes = {
            name: {
                "role": "device" if name.startswith("dev") else "x",
                "gateway": "g1" if name.startswith("dev") else None,
                "ed25519_public_key": key.public_key()
                .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
                .hex(),
            }
            for name, key in self.keys.items()
        }
        (root / "fleet_keys.json").write_text(json.dumps({"format": 1, "fleet": FLEET, "nodes": nodes}))
        self.config = CloudConfig(
            node=NodeSection("cloud", "cloud", FLEET),
            broker=BrokerSection(),
            identity=IdentitySection(root / "signing.key", root / "fleet_keys.json"),
            cloud=CloudSection(
                bundle_dir=root / "bundle",
                rounds=2,
                gateways=("g1", "g2"),
                store_dir=root / "store",
                http_port=0,
                max_retries=max_retries,
            ),
            privacy=PrivacySection(mechanism="none"),
        )
        self.publisher = Recorder()
        self.store = ModelStore(root / "store", bundle_id=BUNDLE)
        self.cloud = self.restart()

    def identity(self, name: str) -> NodeIdentity:
        public = {n: k.public_key() for n, k in self.keys.items()}
        return NodeIdentity(name, FLEET, self.keys[name], public, clock_ms=lambda: self.now_ms)

    def restart(self) -> CloudCoordinator:
        return CloudCoordinator(
            self.config,
            identity=self.identity("cloud"),
            publisher=self.publisher,
            store=self.store,
            initial_vector=np.linspace(-1, 1, DIM).astype(np.float32),
            bundle_id=BUNDLE,
            clock_ms=lambda: self.now_ms,
            random_bytes=lambda n: bytes(n),
        )

    def partial(
        self,
        gateway: str,
        round_id: int,
        model_version: int,
        count: int = 2,
        vector_sum: np.ndarray | None = None,
    ) -> None:
        survivors, weight = ("a", "b")[:count], float(count)
        vector_sum = np.full(DIM, 0.5 * count) if vector_sum is None else vector_sum
        partial = PartialAggregate(gateway, round_id, model_version, vector_sum, count, weight, survivors)
        frame = self.identity(gateway).encode(partial, round_id=round_id)
        self.cloud.handle(parse_topic(partial_topic(FLEET, round_id, gateway)), frame)

    def sit_out(self, device: str, round_id: int) -> None:
        status = Status(device, "skipped", "no local records", self.now_ms, {"round": round_id})
        frame = self.identity(device).encode(status, round_id=round_id)
        self.cloud.handle(parse_topic(status_topic(FLEET, device)), frame)

    def deadline(self) -> None:
        self.now_ms += PARTIAL_DEADLINE_MS
        self.cloud.tick()

    def report(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads((self.root / "store" / "rounds.json").read_text())
        return report

    def cloud_status(self) -> str:
        topic, payload, _ = [s for s in self.publisher.sent if parse_topic(s[0]).kind is TopicKind.STATUS][-1]
        _header, status = self.identity("g1").decode(payload, Status, senders={"cloud"})
        return status.state


def test_a_failed_attempt_is_retried_and_the_run_finishes(tmp_path: Path) -> None:
    fed = Federation(tmp_path)
    assert fed.cloud.state is CloudState.IDLE and fed.cloud.snapshot()["state"] == "running"
    fed.cloud.start()
    assert fed.cloud.state is CloudState.COLLECTING and fed.cloud_status() == "running"
    fed.deadline()  # round 1: no partial
    assert fed.cloud.state is CloudState.COLLECTING and fed.cloud.snapshot()["current_round"] == 2
    fed.partial("g1", 2, 0)
    assert fed.cloud.state is CloudState.COLLECTING  # g2 has not answered yet
    fed.partial("g2", 2, 0)
    fed.partial("g1", 3, 1)
    fed.partial("g2", 3, 1)
    assert fed.cloud.state is CloudState.FINISHED and fed.cloud.done and fed.cloud.succeeded
    assert fed.cloud_status() == "done" and fed.cloud.snapshot()["state"] == "done"
    report = fed.report()
    states = [(r["round"], r["state"], r["model_version"], r["new_version"]) for r in report["rounds"]]
    assert states == [(1, "failed", 0, None), (2, "completed", 0, 1), (3, "completed", 1, 2)]
    assert report["final"]["succeeded"] is True and report["final"]["model_version"] == 2
    tasks = [(r, cleared) for kind, r, cleared in fed.publisher.kinds() if kind is TopicKind.TASK]
    assert tasks == [(1, False), (1, True), (2, False), (2, True), (3, False), (3, True)]


def test_more_failures_than_max_retries_give_up(tmp_path: Path) -> None:
    fed = Federation(tmp_path, max_retries=1)
    fed.cloud.start()
    fed.deadline()
    assert fed.cloud.state is CloudState.COLLECTING  # one retry allowed
    fed.deadline()
    assert fed.cloud.state is CloudState.GAVE_UP and fed.cloud.done and not fed.cloud.succeeded
    assert fed.cloud_status() == "failed" and fed.cloud.snapshot()["state"] == "failed"
    assert [r["state"] for r in fed.report()["rounds"]] == ["failed", "failed"]
    assert fed.report()["final"]["succeeded"] is False


def test_every_device_sitting_out_closes_the_round_at_once(tmp_path: Path) -> None:
    fed = Federation(tmp_path)
    fed.cloud.start()
    fed.sit_out("dev1", 1)
    assert fed.cloud.state is CloudState.COLLECTING and fed.cloud.snapshot()["current_round"] == 1
    fed.sit_out("dev2", 1)
    assert fed.cloud.state is CloudState.COLLECTING and fed.cloud.snapshot()["current_round"] == 2
    assert fed.store.rounds()[0]["state"] == "failed"


def test_a_peer_error_leaves_the_round_open_and_an_own_fault_ends_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed = Federation(tmp_path)
    fed.cloud.start()
    with pytest.raises(ProtocolError, match="partial from g1 is for model 7"):
        fed.partial("g1", 1, 7)
    assert fed.cloud.state is CloudState.COLLECTING

    def full_disk(round_id: int, record: dict[str, Any]) -> None:
        raise OSError(28, "No space left on device")

    fed.partial("g1", 1, 0)
    monkeypatch.setattr(fed.store, "save_round", full_disk)
    with pytest.raises(OSError, match="No space left"):
        fed.partial("g2", 1, 0)
    assert fed.cloud.state is CloudState.ERROR and fed.cloud.done and not fed.cloud.succeeded
    monkeypatch.undo()

    # The restarted cloud finds version 1 committed: round 1 completed; its task is cleared, round 2 opens.
    fed.publisher.sent.clear()
    fed.cloud = fed.restart()
    assert [(r["round"], r["state"], r["new_version"]) for r in fed.store.rounds()] == [(1, "completed", 1)]
    fed.cloud.start()
    assert fed.publisher.kinds()[0] == (TopicKind.TASK, 1, True)
    assert fed.cloud.state is CloudState.COLLECTING and fed.cloud.snapshot()["current_round"] == 2


def _sums(round_id: int) -> dict[str, np.ndarray]:
    rngs = {g: np.random.default_rng([round_id, i]) for i, g in enumerate(("g1", "g2"))}
    return {g: rng.normal(size=DIM) * 0.3 for g, rng in rngs.items()}


def _downlink_run(root: Path, *, restart: bool = False, lose_residual: bool = False) -> Federation:
    """Two completed rounds with varied partials; optionally a restart (and a lost residual) between."""
    root.mkdir(exist_ok=True)
    fed = Federation(root)
    fed.cloud.start()
    for gateway, vector_sum in _sums(1).items():
        fed.partial(gateway, 1, 0, vector_sum=vector_sum)
    if restart:
        if lose_residual:
            (root / "store" / "downlink_residual.npy").unlink()
        fed.cloud = fed.restart()
        fed.cloud.start()
    round_id = fed.cloud.snapshot()["current_round"]
    for gateway, vector_sum in _sums(2).items():
        fed.partial(gateway, round_id, 1, vector_sum=vector_sum)
    assert fed.cloud.succeeded
    return fed


def test_each_version_goes_out_as_a_delta_that_rebuilds_it_exactly(tmp_path: Path) -> None:
    fed = _downlink_run(tmp_path)
    deltas = {}
    for topic, payload, retain in fed.publisher.sent:
        parsed = parse_topic(topic)
        if parsed.kind is TopicKind.MODEL_DELTA and payload:
            assert retain
            _header, delta = fed.identity("dev1").decode(payload, GlobalModelDelta, senders={"cloud"})
            deltas[delta.model_version] = (delta, len(payload))
    assert sorted(deltas) == [1, 2]
    for version, (delta, _size) in deltas.items():
        assert delta.base_version == version - 1 and delta.bits == 8
        rebuilt = delta.apply(fed.store.load(version - 1))
        assert rebuilt.tobytes() == fed.store.load(version).tobytes()
    rounds = fed.report()["rounds"]
    assert rounds[0]["downlink_delta_bytes"] == 0 and rounds[0]["downlink_full_bytes"] > 0
    assert rounds[1]["downlink_delta_bytes"] == deltas[1][1]


def test_a_restart_keeps_the_residual_and_a_lost_residual_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uninterrupted = _downlink_run(tmp_path / "a").store.load(2)
    restarted = _downlink_run(tmp_path / "b", restart=True).store.load(2)
    assert restarted.tobytes() == uninterrupted.tobytes()
    caplog.set_level("WARNING")
    lost = _downlink_run(tmp_path / "c", restart=True, lose_residual=True).store.load(2)
    assert "no residual stored for model version 1; error feedback starts from zeros" in caplog.text
    assert lost.tobytes() != uninterrupted.tobytes()


def test_full_models_only_publish_no_delta(tmp_path: Path) -> None:
    fed = Federation(tmp_path)
    fed.config = dataclasses.replace(fed.config, cloud=dataclasses.replace(fed.config.cloud, downlink_bits=0))
    fed.cloud = fed.restart()
    fed.cloud.start()
    for gateway, vector_sum in _sums(1).items():
        fed.partial(gateway, 1, 0, vector_sum=vector_sum)
    kinds = {kind for kind, _round, _cleared in fed.publisher.kinds()}
    assert TopicKind.MODEL in kinds and TopicKind.MODEL_DELTA not in kinds
    mean = (_sums(1)["g1"] + _sums(1)["g2"]) / 4  # FedAvg, lr 1: base + Σ sums / Σ counts, unquantized
    expected = (fed.store.load(0).astype(np.float64) + mean).astype(np.float32)
    np.testing.assert_allclose(fed.store.load(1), expected, rtol=0, atol=1e-6)
