"""Trusted-gateway mode (no broker: a publish callable collects frames): per-device robust rules against
poisoned updates, mode agreement between gateway and task, min cohort, strict inputs, restart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aggregator_gateway.gateway.gateway import Gateway
from aggregator_gateway.gateway.lifecycle import CohortState
from aggregator_gateway.gateway.trusted import TrustedRoundDriver, krum_byzantine
from fl_protocol.errors import DecodeError
from fl_protocol.secagg import Abort, MaskedUpdate
from fl_protocol.topics import (
    Stage,
    abort_topic,
    device_stage_topic,
    gateway_stage_topic,
    parse_topic,
    partial_topic,
)
from fl_protocol.wire.messages import PartialAggregate, PlainUpdate, RoundTask
from tests.kit.fleet import CLOUD, FLEET, GATEWAY, ManualClock, identity, public_keys
from tests.kit.gateway import Sent, make_gateway, send_task
from tests.kit.secagg_round import decoded_updates, trusted_updates
from tests.kit.tasks import round_task, staggered_deadlines_ms

DEVICES = [f"d{i}" for i in range(10)]
POISONED = ["d3", "d7"]
KEYS = public_keys([CLOUD, GATEWAY, "outsider", *DEVICES])


def _gateway(tmp_path: Path, clock: ManualClock, sent: Sent, **settings: object) -> Gateway:
    return make_gateway(tmp_path, keys=KEYS, devices=DEVICES, clock=clock, sent=sent, **settings)


def _send_task(gateway: Gateway, round_id: int = 1, *, mode: str = "trusted") -> RoundTask:
    task = round_task(round_id, mode=mode, deadlines_ms=staggered_deadlines_ms())
    send_task(gateway, task, KEYS)
    return task


def _upload(
    gateway: Gateway, task: RoundTask, node: str, values: np.ndarray, *, kind: type = PlainUpdate
) -> None:
    message = kind(task.round_id, node, task.codec.ring_bits, values)
    frame = identity(node, KEYS).encode(message, round_id=task.round_id)
    gateway.handle(parse_topic(device_stage_topic(FLEET, GATEWAY, task.round_id, Stage.MASKED, node)), frame)


def _partial(gateway: Gateway, sent: list[tuple[str, bytes]], round_id: int = 1) -> PartialAggregate:
    frames = [payload for topic, payload in sent if topic == partial_topic(FLEET, round_id, GATEWAY)]
    assert len(frames) == 1, "exactly one partial expected"
    return gateway.identity.decode(frames[0], PartialAggregate, senders={GATEWAY})[1]


def _run_round(tmp_path: Path, rule: str) -> tuple[PartialAggregate, np.ndarray]:
    clock, sent = ManualClock(), []
    gateway = _gateway(tmp_path, clock, sent, trusted_mode=True, trusted_rule=rule)
    task = _send_task(gateway)
    updates = trusted_updates(task, DEVICES, poisoned=POISONED)
    for node in DEVICES:
        _upload(gateway, task, node, updates[node])
    gateway.tick()  # every expected device answered: closes before the masked deadline
    honest = {n: v for n, v in updates.items() if n not in POISONED}
    return _partial(gateway, sent), decoded_updates(task, honest).mean(axis=0)


@pytest.mark.parametrize("rule", ["krum", "median", "trimmed_mean"])
def test_robust_rule_stays_near_the_honest_mean(tmp_path: Path, rule: str) -> None:
    partial, honest_mean = _run_round(tmp_path, rule)
    assert partial.count == 10 and partial.survivors == tuple(sorted(DEVICES))
    error = np.linalg.norm(partial.vector_sum / partial.count - honest_mean)
    assert error < 0.3 * np.linalg.norm(honest_mean), f"{rule}: error {error}"


def test_plain_sum_is_dragged_by_the_poisoned_devices(tmp_path: Path) -> None:
    partial, honest_mean = _run_round(tmp_path, "none")
    error = np.linalg.norm(partial.vector_sum / partial.count - honest_mean)
    assert error > 2.0 * np.linalg.norm(honest_mean)


def test_none_rule_is_the_exact_sum_of_decoded_updates(tmp_path: Path) -> None:
    clock, sent = ManualClock(), []
    gateway = _gateway(tmp_path, clock, sent, trusted_mode=True, trusted_rule="none")
    task = _send_task(gateway)
    updates = trusted_updates(task, DEVICES[:4])
    for node in DEVICES[:4]:
        _upload(gateway, task, node, updates[node])
    clock.now_ms = task.deadlines_ms["masked"]  # not everyone answered: closes at the deadline
    gateway.tick()
    partial = _partial(gateway, sent)
    assert partial.survivors == tuple(DEVICES[:4]) and partial.weight_sum == 4.0
    assert gateway.driver is not None and gateway.driver.state is CohortState.DONE
    assert np.allclose(partial.vector_sum, decoded_updates(task, updates).sum(axis=0), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("trusted_gateway", "mode"), [(False, "trusted"), (True, "secagg")])
def test_gateway_refuses_a_task_whose_mode_disagrees(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, trusted_gateway: bool, mode: str
) -> None:
    sent: list[tuple[str, bytes]] = []
    gateway = _gateway(tmp_path, ManualClock(), sent, trusted_mode=trusted_gateway)
    _send_task(gateway, mode=mode)
    assert gateway.driver is None and sent == [] and gateway.store.latest_round() is None
    assert "refused task of round 1" in caplog.text and "trusted_mode" in caplog.text


def test_below_min_cohort_aborts_and_releases_nothing(tmp_path: Path) -> None:
    clock, sent = ManualClock(), []
    gateway = _gateway(tmp_path, clock, sent, trusted_mode=True)
    task = _send_task(gateway)  # min_cohort 3
    updates = trusted_updates(task, DEVICES[:2])
    for node in DEVICES[:2]:
        _upload(gateway, task, node, updates[node])
    clock.now_ms = task.deadlines_ms["masked"]
    gateway.tick()
    # The signed Abort goes to the devices (roster topic) and to the cloud (abort topic), nothing else.
    roster_topic = gateway_stage_topic(FLEET, GATEWAY, 1, Stage.ROSTER)
    assert sorted(topic for topic, _ in sent) == sorted([roster_topic, abort_topic(FLEET, 1, GATEWAY)])
    frame = next(payload for topic, payload in sent if topic == roster_topic)
    _h, abort = gateway.identity.decode(frame, Abort, senders={GATEWAY})
    assert "below the minimum cohort" in abort.reason
    assert gateway.store.latest_round().state == "aborted"  # type: ignore[union-attr]
    assert gateway.driver is not None and gateway.driver.state is CohortState.ABORTED


def test_refuses_masked_updates_wrong_lengths_duplicates_and_strangers(tmp_path: Path) -> None:
    gateway = _gateway(tmp_path, ManualClock(), [], trusted_mode=True)
    task = _send_task(gateway)
    driver = gateway.driver
    assert isinstance(driver, TrustedRoundDriver)
    good = trusted_updates(task, ["d0"])["d0"]
    with pytest.raises(
        DecodeError, match="invalid message"
    ):  # a MaskedUpdate is not what a trusted round takes
        _upload(gateway, task, "d0", good, kind=MaskedUpdate)
    _upload(gateway, task, "d1", good[:-1])  # wrong length: ignored, not logged
    _upload(gateway, task, "d0", good)
    _upload(gateway, task, "d0", good + np.uint32(1))  # duplicate: the first one counts
    assert not driver.accept(Stage.MASKED, PlainUpdate(1, "outsider", 20, good))
    assert [e.sender for e in gateway.store.events(1)] == ["d0"]


def test_restart_replays_the_plain_updates(tmp_path: Path) -> None:
    clock, sent = ManualClock(), []
    gateway = _gateway(tmp_path, clock, sent, trusted_mode=True, trusted_rule="median")
    task = _send_task(gateway)
    updates = trusted_updates(task, DEVICES)
    for node in DEVICES[:6]:
        _upload(gateway, task, node, updates[node])
    gateway.store.close()
    resent: list[tuple[str, bytes]] = []
    restarted = _gateway(tmp_path, clock, resent, trusted_mode=True, trusted_rule="median")
    restarted.resume()
    assert isinstance(restarted.driver, TrustedRoundDriver) and not restarted.driver.finished
    for node in DEVICES[6:]:
        _upload(restarted, task, node, updates[node])
    restarted.tick()
    partial = _partial(restarted, resent)
    expected = np.median(decoded_updates(task, updates), axis=0) * 10
    assert np.allclose(partial.vector_sum, expected, rtol=0, atol=1e-12)


def test_krum_byzantine_count() -> None:
    assert [krum_byzantine(n, 0) for n in (3, 4, 5, 10)] == [0, 0, 1, 3]
    assert krum_byzantine(10, 1) == 1 and krum_byzantine(5, 4) == 1
