"""A role's event loop: MQTT messages arrive on paho's thread, all protocol logic runs on one thread.

Roles (device, gateway, cloud) register handlers by topic kind and a periodic `tick` that enforces
deadlines with the injected clock. The failure policy (docs/failure-policy.md) is enforced here:

- a message a peer got wrong (`DecodeError`: malformed, unsigned, over its size budget; `ProtocolError`:
  wrong stage, round or set) is rejected with one WARNING line and the loop goes on: no peer can stop a node;
- any other exception from a handler or the tick is the role's own fault (a bug, a failed write, a broken
  store): it is logged once with its traceback and `run` raises `RoleFault`, so the process exits with
  code 70 and its supervisor restarts it from durable state. A role never runs on with half-applied state
  and never stalls.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from fl_protocol.errors import DecodeError, ProtocolError, RoleFault
from fl_protocol.topics import Topic, parse_topic

logger = logging.getLogger(__name__)

TopicHandler = Callable[[Topic, bytes], None]


class EventLoop:
    """Queue of (topic, payload) from the transport, dispatched on the caller's thread by `run`."""

    def __init__(
        self, handler: TopicHandler, *, tick: Callable[[], None] | None = None, tick_interval_s: float = 0.1
    ) -> None:
        self._handler = handler
        self._tick = tick
        self._tick_interval_s = tick_interval_s
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self._stopped = threading.Event()

    def submit(self, topic: str, payload: bytes) -> None:
        """Called from the transport's thread for every incoming message."""
        self._queue.put((topic, payload))

    def stop(self) -> None:
        """Ask `run` to return after the message it is handling (thread-safe)."""
        self._stopped.set()
        self._queue.put(None)

    @property
    def stopped(self) -> bool:
        """True once `stop` was called."""
        return self._stopped.is_set()

    def run(self, *, until: Callable[[], bool] | None = None) -> None:
        """Dispatch messages and ticks until `stop()` or `until()` is true.

        Raises RoleFault (after logging the cause with its traceback) when a handler or the tick raises
        anything but DecodeError or ProtocolError; the loop is stopped then.
        """
        while not self._stopped.is_set() and not (until is not None and until()):
            try:
                item = self._queue.get(timeout=self._tick_interval_s)
            except queue.Empty:
                item = None
            if item is not None:
                self._dispatch(*item)
            if self._tick is not None:
                self._guard("tick", self._tick)

    def _dispatch(self, topic_text: str, payload: bytes) -> None:
        if not payload:
            # A zero-length retained message is how MQTT clears a retained topic (the cloud clears
            # superseded tasks and models); it carries no protocol message.
            logger.debug("retained message cleared on %s", topic_text)
            return
        try:
            topic = parse_topic(topic_text)
        except DecodeError:
            logger.warning("ignored message on unexpected topic %s", topic_text)
            return
        self._guard(topic_text, lambda: self._handler(topic, payload))

    def _guard(self, what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except DecodeError:
            logger.warning("ignored %s: invalid, unsigned, oversized or wrongly signed message", what)
        except ProtocolError as exc:
            logger.warning("ignored %s: %s", what, exc)
        except Exception as exc:
            self._stopped.set()
            logger.critical(
                "fatal: %s failed with %s; stopping this process so it restarts from durable state",
                what,
                type(exc).__name__,
                exc_info=True,
            )
            raise RoleFault(f"{what} failed with {type(exc).__name__}: {exc}") from exc
