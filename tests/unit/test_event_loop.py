"""EventLoop: cleared retained messages and bad messages never reach handlers or stop the loop."""

from __future__ import annotations

from fl_protocol.errors import DecodeError
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
