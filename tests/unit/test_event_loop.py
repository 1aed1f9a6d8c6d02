"""EventLoop: bad messages are rejected with one line each; a role's own fault stops it (failure policy)."""

from __future__ import annotations

import logging

import pytest

from fl_protocol.errors import EXIT_ROLE_FAULT, DecodeError, ProtocolError, RoleFault
from fl_protocol.topics import Topic, status_topic, task_topic
from fl_transport.loop import EventLoop


def test_empty_payload_is_dropped_and_errors_do_not_stop_the_loop() -> None:
    seen: list[tuple[Topic, bytes]] = []

    def handler(topic: Topic, payload: bytes) -> None:
        if payload == b"bad":
            raise DecodeError()
        seen.append((topic, payload))

    loop = EventLoop(handler, tick_interval_s=0.01)
    loop.submit(task_topic("f", 3), b"")  # a cleared retained task
    loop.submit(task_topic("f", 4), b"bad")
    loop.submit("not/a/fedlora/topic", b"x")
    loop.submit(status_topic("f", "dev-1"), b"ok")
    loop.run(until=lambda: len(seen) >= 1)
    assert [(t.node, p) for t, p in seen] == [("dev-1", b"ok")]


def test_rejected_input_is_one_warning_line_each_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[bytes] = []

    def handler(topic: Topic, payload: bytes) -> None:
        if payload == b"forged":
            raise DecodeError()
        if payload == b"wrong-stage":
            raise ProtocolError("masked update before the roster")
        seen.append(payload)

    loop = EventLoop(handler, tick_interval_s=0.01)
    for payload in (b"forged", b"wrong-stage", b"ok"):
        loop.submit(status_topic("f", "dev-1"), payload)
    with caplog.at_level(logging.WARNING, logger="fl_transport.loop"):
        loop.run(until=lambda: bool(seen))
    assert seen == [b"ok"] and not loop.stopped
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING]
    assert "masked update before the roster" in caplog.records[1].getMessage()


@pytest.mark.parametrize(
    "error", [OverflowError("int too large to convert to float"), OSError(28, "disk full")]
)
def test_an_unexpected_handler_error_is_fatal_not_a_stall(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12: the loop used to log every handler exception and carry on, leaving a half-applied role."""
    handled: list[bytes] = []

    def handler(topic: Topic, payload: bytes) -> None:
        handled.append(payload)
        raise error

    loop = EventLoop(handler, tick_interval_s=0.01)
    loop.submit(status_topic("f", "dev-1"), b"first")
    loop.submit(status_topic("f", "dev-1"), b"never handled")
    with (
        caplog.at_level(logging.WARNING, logger="fl_transport.loop"),
        pytest.raises(RoleFault, match="fl/v1/f/status/dev-1 failed with") as info,
    ):
        loop.run()
    assert handled == [b"first"] and loop.stopped
    assert info.value.exit_code == EXIT_ROLE_FAULT == 70 and info.value.__cause__ is error
    assert [r.levelno for r in caplog.records] == [logging.CRITICAL]
    assert caplog.records[0].exc_info is not None


def test_an_unexpected_tick_error_is_fatal() -> None:
    def tick() -> None:
        raise OSError("cannot write the store")

    loop = EventLoop(lambda topic, payload: None, tick=tick, tick_interval_s=0.01)
    with pytest.raises(RoleFault, match="tick failed with OSError"):
        loop.run()


def test_the_cli_exits_with_the_role_fault_code(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedlora import cli

    def run(args: object) -> int:
        raise RoleFault("tick failed with OSError: disk full")

    monkeypatch.setattr("aggregator_gateway.cloud_cli.run", run)
    assert cli.main(["cloud", "--config", "x.toml"]) == EXIT_ROLE_FAULT
