"""Gateway (no broker: a publish callable collects frames): task checks, abort on the roster topic,
restart from the store without double counting."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator_gateway.gateway.gateway import Gateway
from fl_protocol.errors import DecodeError
from fl_protocol.secagg import Abort
from fl_protocol.topics import (
    Stage,
    abort_topic,
    device_stage_topic,
    gateway_stage_topic,
    parse_topic,
)
from fl_protocol.wire.messages import RoundTask
from tests.kit.fleet import CLOUD, FLEET, GATEWAY, ManualClock, identity, public_keys
from tests.kit.gateway import Sent, make_gateway, send_task
from tests.kit.secagg_round import make_client
from tests.kit.tasks import round_task, staggered_deadlines_ms

DEVICES = ["d0", "d1", "d2"]
KEYS = public_keys([CLOUD, GATEWAY, "other", *DEVICES])


def _gateway(tmp_path: Path, clock: ManualClock, sent: Sent) -> Gateway:
    """The gateway under test (its store in `tmp_path`, so a second one is a restart); fixed seeds."""
    return make_gateway(
        tmp_path, keys=KEYS, devices=DEVICES, clock=clock, sent=sent, seed_bytes=lambda n: b"\x05" * n
    )


def _send_task(gateway: Gateway, round_id: int, sender: str = CLOUD) -> RoundTask:
    task = round_task(round_id, deadlines_ms=staggered_deadlines_ms())
    send_task(gateway, task, KEYS, sender)
    return task


def _advertise(gateway: Gateway, task: RoundTask, node: str) -> None:
    message = make_client(node, task, KEYS).advertise()
    frame = identity(node, KEYS).encode(message, round_id=task.round_id)
    gateway.handle(
        parse_topic(device_stage_topic(FLEET, GATEWAY, task.round_id, Stage.ADVERTISE, node)), frame
    )


def test_task_from_another_sender_is_refused(tmp_path: Path) -> None:
    gateway = _gateway(tmp_path, ManualClock(), [])
    with pytest.raises(DecodeError, match="invalid message"):  # the event loop logs and drops it
        _send_task(gateway, 1, sender="other")
    assert gateway.driver is None


def test_cohort_below_minimum_publishes_abort_on_the_roster_topic_and_to_the_cloud(tmp_path: Path) -> None:
    clock, sent = ManualClock(), []
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
    clock, sent = ManualClock(), []
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
