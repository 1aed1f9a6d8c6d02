"""Gateway (no broker: a publish callable collects frames): task checks, abort on the roster topic,
restart from the store without double counting."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator_gateway.gateway.config import GatewaySection
from aggregator_gateway.gateway.gateway import Gateway
from aggregator_gateway.gateway.store import RoundStore
from fl_protocol.errors import DecodeError
from fl_protocol.identity import NodeIdentity
from fl_protocol.secagg import Abort
from fl_protocol.topics import (
    Stage,
    abort_topic,
    device_stage_topic,
    gateway_stage_topic,
    parse_topic,
    task_topic,
)
from fl_protocol.wire.messages import RoundTask
from tests.integration.gateway_scripted import (
    CLOUD,
    FLEET,
    GATEWAY,
    STAGES,
    make_client,
    make_task,
    public_keys,
    signing_key,
)

DEVICES = ["d0", "d1", "d2"]
KEYS = public_keys([CLOUD, GATEWAY, "other", *DEVICES])


class Clock:
    def __init__(self) -> None:
        self.now_ms = 1_000

    def __call__(self) -> int:
        return self.now_ms


def _gateway(tmp_path: Path, clock: Clock, sent: list[tuple[str, bytes]]) -> Gateway:
    identity = NodeIdentity(GATEWAY, FLEET, signing_key(GATEWAY), KEYS, clock)
    return Gateway(
        identity=identity,
        settings=GatewaySection(resume_grace_s=0.0),
        expected_devices=frozenset(DEVICES),
        store=RoundStore(tmp_path / "s.sqlite3"),
        publish=lambda topic, payload: sent.append((topic, payload)),
        clock_ms=clock,
        seed_bytes=lambda n: b"\x05" * n,
    )


def _task(round_id: int, sender: str = CLOUD) -> tuple[RoundTask, bytes]:
    task = make_task(round_id, deadlines_ms={s: 2_000 + 1_000 * i for i, s in enumerate(STAGES)})
    frame = NodeIdentity(sender, FLEET, signing_key(sender), KEYS).encode(task, round_id=round_id)
    return task, frame


def _send_task(gateway: Gateway, round_id: int, sender: str = CLOUD) -> RoundTask:
    task, frame = _task(round_id, sender)
    gateway.handle(parse_topic(task_topic(FLEET, round_id)), frame)
    return task


def _advertise(gateway: Gateway, task: RoundTask, node: str) -> None:
    message = make_client(node, task, KEYS).advertise()
    frame = NodeIdentity(node, FLEET, signing_key(node), KEYS).encode(message, round_id=task.round_id)
    gateway.handle(
        parse_topic(device_stage_topic(FLEET, GATEWAY, task.round_id, Stage.ADVERTISE, node)), frame
    )


def test_task_from_another_sender_is_refused(tmp_path: Path) -> None:
    gateway = _gateway(tmp_path, Clock(), [])
    with pytest.raises(DecodeError):  # the event loop logs and drops it
        _send_task(gateway, 1, sender="other")
    assert gateway.driver is None


def test_cohort_below_minimum_publishes_abort_on_the_roster_topic_and_to_the_cloud(tmp_path: Path) -> None:
    clock, sent = Clock(), []
    gateway = _gateway(tmp_path, clock, sent)
    task = _send_task(gateway, 1)
    _advertise(gateway, task, "d0")
    _advertise(gateway, task, "d1")
    clock.now_ms = task.deadlines_ms["advertise"]
    gateway.tick()
    assert [topic for topic, _ in sent] == [
        gateway_stage_topic(FLEET, GATEWAY, 1, Stage.ROSTER),
        abort_topic(FLEET, 1, GATEWAY),  # bridged to the cloud, which closes the round early
    ]
    for _topic, frame in sent:
        _h, abort = gateway.identity.decode(frame, Abort, senders={GATEWAY})
        assert "below the minimum" in abort.reason and abort.round_id == 1
    assert gateway.store.latest_round().state == "aborted"  # type: ignore[union-attr]
    _send_task(gateway, 1)  # the retained task again: stale, ignored
    assert len(sent) == 2 and gateway.driver is not None and gateway.driver.finished


def test_restart_replays_the_log_and_republishes_the_roster(tmp_path: Path) -> None:
    clock, sent = Clock(), []
    gateway = _gateway(tmp_path, clock, sent)
    task = _send_task(gateway, 1)
    for node in DEVICES:
        _advertise(gateway, task, node)
    _advertise(gateway, task, "d0")  # duplicate: neither logged nor counted
    gateway.tick()  # everyone advertised: the roster goes out before the deadline
    assert len(sent) == 1
    gateway.store.close()
    resent: list[tuple[str, bytes]] = []
    restarted = _gateway(tmp_path, clock, resent)
    restarted.resume()
    assert restarted.driver is not None and restarted.driver.stage is Stage.SHARES
    assert [topic for topic, _ in resent] == [topic for topic, _ in sent]
    assert len(restarted.store.events(1)) == 4  # three advertisements and one close
    _send_task(restarted, 2)  # a newer task supersedes the unfinished round: it is aborted
    assert restarted.store.latest_round().round_id == 2  # type: ignore[union-attr]
    assert [t for t, _ in resent[-2:]] == [
        gateway_stage_topic(FLEET, GATEWAY, 1, Stage.ROSTER),
        abort_topic(FLEET, 1, GATEWAY),
    ]
