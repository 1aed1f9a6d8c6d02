"""Waiting in tests without sleeping a fixed time.

- `wait_until(predicate, ...)`: returns as soon as the condition holds (checked every `poll_s`), fails
  with `what` at the deadline. For state another thread or process changes and that has no event to
  wait on (a process log, a file, a connection flag). Where an event exists (`threading.Event`,
  `queue.Queue.get`), wait on it directly instead.
- `assert_nothing_within(seconds, arrived, ...)` and its polling twin `assert_never_within`: the one
  bounded wait that cannot end early. That something does NOT happen can only be observed over a window;
  the window is explicit here, named at the call site, and the check fails as soon as the unwanted thing
  arrives instead of after the window.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], object], *, timeout_s: float, what: str, poll_s: float = 0.05) -> None:
    """Return once `predicate()` is truthy; AssertionError naming `what` if it is not after `timeout_s`.

    The predicate is checked at once, then every `poll_s` seconds (the last check at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{what}: not seen within {timeout_s:g} s")
        time.sleep(min(poll_s, left))


def assert_nothing_within(
    seconds: float, arrived: queue.Queue[Any] | Callable[[float], object], *, what: str
) -> None:
    """Wait `seconds`; AssertionError naming `what` as soon as something unwanted arrives.

    arrived: a queue (anything put on it is unwanted), or a callable taking the seconds left that blocks
    at most that long and returns something truthy (shown in the error) when an unwanted thing came, a
    falsy value otherwise (e.g. one message handled that was allowed).
    """
    check = _from_queue(arrived) if isinstance(arrived, queue.Queue) else arrived
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        unwanted = check(left)
        if unwanted:
            raise AssertionError(f"{what}: {unwanted!r} arrived within {seconds:g} s")


def _from_queue(inbox: queue.Queue[Any]) -> Callable[[float], object]:
    def check(left: float) -> object:
        try:
            return ("got", inbox.get(timeout=left))
        except queue.Empty:
            return None

    return check


def assert_never_within(
    seconds: float, condition: Callable[[], object], *, what: str, poll_s: float = 0.05
) -> None:
    """Check `condition()` every `poll_s` for `seconds`; AssertionError naming `what` as soon as it holds.

    The polling twin of `assert_nothing_within`, for an unwanted state with nothing to block on (a
    dropped connection, a line in a process log)."""
    deadline = time.monotonic() + seconds
    while True:
        if condition():
            raise AssertionError(f"{what}: happened within {seconds:g} s")
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(poll_s, left))
