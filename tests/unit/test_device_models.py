"""The device's global models (edge_runtime/agent/models.py) without a broker: deltas applied to the held
base, full-model fetches (subscribe, then unsubscribe) when no delta can serve, and refusals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from aggregator_gateway.cloud.downlink import ServerDownlink
from edge_runtime.agent.models import DeviceModels
from fl_protocol.codec.compress import vector_sha256
from fl_protocol.codec.downlink import pack_values
from fl_protocol.topics import model_delta_topic, model_topic, parse_topic
from fl_protocol.wire.messages import GlobalModel, GlobalModelDelta
from tests.kit.fleet import CLOUD, FLEET, identity, public_keys
from tests.kit.tasks import round_task

D = 600
NODES = (CLOUD, "dev-1", "gw-1")


class Subscriptions:
    """A `Subscriber` that records the filters a device holds."""

    def __init__(self) -> None:
        self.active: set[str] = set()
        self.log: list[str] = []

    def subscribe(self, topic_filter: str, *, qos: int = 1) -> None:
        self.active.add(topic_filter)
        self.log.append(f"+{topic_filter}")

    def unsubscribe(self, topic_filter: str) -> None:
        self.active.discard(topic_filter)
        self.log.append(f"-{topic_filter}")


class Cloud:
    """Versions 0, 1, 2 as the cloud makes them, and their signed frames."""

    def __init__(self) -> None:
        self.identity = identity(CLOUD, public_keys(NODES))
        rng = np.random.default_rng(3)
        self.versions = [rng.normal(size=D).astype(np.float32)]
        self.deltas: dict[int, GlobalModelDelta] = {}
        downlink = ServerDownlink(8)
        for version in (1, 2):
            base = self.versions[-1]
            step = downlink.step(base, base + rng.normal(size=D).astype(np.float32) * 1e-3)
            downlink.adopt(step)
            self.versions.append(step.vector)
            message = step.message(model_version=version, base_version=version - 1)
            assert message is not None
            self.deltas[version] = message

    def full(self, version: int) -> bytes:
        return self.identity.encode(GlobalModel.from_vector(version, self.versions[version]), round_id=0)

    def delta(self, version: int, message: GlobalModelDelta | None = None) -> bytes:
        return self.identity.encode(message or self.deltas[version], round_id=0)

    def task(self, version: int, sha256: bytes | None = None):  # noqa: ANN201 - a RoundTask
        sha = vector_sha256(self.versions[version]) if sha256 is None else sha256
        return round_task(version + 1, dimension=D, model_version=version, model_sha256=sha)


@pytest.fixture
def cloud() -> Cloud:
    return Cloud()


def _device() -> tuple[DeviceModels, Subscriptions]:
    subscriber = Subscriptions()
    models = DeviceModels(identity("dev-1", public_keys(NODES)), subscriber, cloud_id=CLOUD, length=D)
    return models, subscriber


def _fetched(models: DeviceModels, subscriptions: Subscriptions, cloud: Cloud, version: int) -> None:
    """Deliver the full model of `version`, which the device subscribed to (retained: it comes at once)."""
    assert model_topic(FLEET, version) in subscriptions.active
    topic = parse_topic(model_topic(FLEET, version))
    assert models.on_model(topic, cloud.full(version), pinned=version) == version


def _delta_topic(version: int):  # noqa: ANN202 - a parsed Topic
    return parse_topic(model_delta_topic(FLEET, version))


def test_a_device_that_holds_the_base_trains_on_the_delta_without_the_full_model(cloud: Cloud) -> None:
    models, subscriptions = _device()
    assert models.vector_for(cloud.task(0)) is None  # nothing held: the full model 0 is fetched
    assert subscriptions.active == {model_topic(FLEET, 0)}
    _fetched(models, subscriptions, cloud, 0)
    assert models.vector_for(cloud.task(0)).tobytes() == cloud.versions[0].tobytes()
    models.release()
    assert subscriptions.active == set()
    for version in (1, 2):
        assert models.on_delta(_delta_topic(version), cloud.delta(version), pinned=None) == version
        vector = models.vector_for(cloud.task(version))
        assert isinstance(vector, np.ndarray) and vector.tobytes() == cloud.versions[version].tobytes()
    assert subscriptions.log == [f"+{model_topic(FLEET, 0)}", f"-{model_topic(FLEET, 0)}"]


def test_a_delta_without_its_base_waits_for_it_and_a_task_fetches_the_full_model(cloud: Cloud) -> None:
    models, subscriptions = _device()
    assert models.on_delta(_delta_topic(2), cloud.delta(2), pinned=None) is None  # base 1 not held
    assert models.vector_for(cloud.task(2)) is None
    assert subscriptions.active == {model_topic(FLEET, 2)}
    _fetched(models, subscriptions, cloud, 2)
    assert models.vector_for(cloud.task(2)).tobytes() == cloud.versions[2].tobytes()
    models.release()
    assert subscriptions.active == set()


@pytest.mark.parametrize("defect", ["wrong base", "tampered values", "not the task's"])
def test_a_bad_delta_is_never_trained_on_and_costs_the_full_model(cloud: Cloud, defect: str) -> None:
    models, subscriptions = _device()
    models.vector_for(cloud.task(0))
    _fetched(models, subscriptions, cloud, 0)
    models.release()
    message = cloud.deltas[1]
    task = cloud.task(1)
    if defect == "wrong base":
        message = dataclasses.replace(message, base_sha256=bytes(32))
    elif defect == "tampered values":
        quantized = message.quantized()
        values = quantized.values.copy()
        values[:10] = 0
        message = dataclasses.replace(
            message, packed_values=pack_values(dataclasses.replace(quantized, values=values))
        )
    else:  # a delta that applies, but the task names another model
        task = cloud.task(1, sha256=bytes(32))
    models.on_delta(_delta_topic(1), cloud.delta(1, message), pinned=None)
    assert models.vector_for(task) is None  # never the delta's result: the full model is fetched
    assert subscriptions.active == {model_topic(FLEET, 1)}
    _fetched(models, subscriptions, cloud, 1)
    result = models.vector_for(task)
    if defect == "not the task's":
        assert result == "global model 1 does not match the task's sha256"
    else:
        assert result.tobytes() == cloud.versions[1].tobytes()


def test_unsigned_or_mislabelled_messages_are_ignored(cloud: Cloud) -> None:
    models, _subscriptions = _device()
    forger = identity("gw-1", public_keys(NODES))
    forged = forger.encode(cloud.deltas[1], round_id=0)
    assert models.on_delta(_delta_topic(1), forged, pinned=None) is None
    assert models.on_delta(_delta_topic(2), cloud.delta(1), pinned=None) is None  # version 1 on topic 2
    assert models.on_delta(_delta_topic(1), b"", pinned=None) is None  # a cleared retained delta
    topic = parse_topic(model_topic(FLEET, 0))
    assert models.on_model(topic, cloud.full(0), pinned=None) is None  # not asked for


def test_a_full_model_of_another_length_is_a_sit_out(cloud: Cloud) -> None:
    models, _subscriptions = _device()
    short = cloud.identity.encode(GlobalModel.from_vector(0, cloud.versions[0][:-1]), round_id=0)
    task = cloud.task(0, sha256=vector_sha256(cloud.versions[0][:-1]))
    assert models.vector_for(task) is None
    assert models.on_model(parse_topic(model_topic(FLEET, 0)), short, pinned=0) == 0
    assert models.vector_for(task) == "global model length differs from this bundle"
