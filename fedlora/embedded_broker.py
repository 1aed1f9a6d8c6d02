"""An in-process MQTT broker (amqtt) for `fedlora demo` when no real broker is given.

Runs amqtt's asyncio broker on its own thread and event loop, bound to 127.0.0.1 on a chosen port, with
anonymous access: it exists so a new user can see a whole federation on one machine without installing
mosquitto. Production fleets use mosquitto with TLS and ACLs (`fedlora provision`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

from fl_protocol.errors import FedloraError

logger = logging.getLogger(__name__)


class EmbeddedBroker:
    """Start with `start()`, stop with `stop()`; `port` is where clients connect on 127.0.0.1."""

    def __init__(self, port: int = 0, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or _free_port(host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._broker: object | None = None

    def start(self, timeout_s: float = 15.0) -> None:
        """Start serving; FedloraError if the broker does not come up within `timeout_s`."""
        self._thread = threading.Thread(target=self._run, name="embedded-mqtt-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            raise FedloraError(
                f"embedded MQTT broker failed to start on {self.host}:{self.port}: {self._error}"
            )
        _wait_for_port(self.host, self.port, timeout_s)
        logger.info("embedded MQTT broker listening on %s:%d", self.host, self.port)

    def _run(self) -> None:
        from amqtt.broker import Broker

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        config = {
            "listeners": {
                "default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 0}
            },
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        for name in ("amqtt", "transitions"):
            # amqtt logs every probe connection and client hiccup at WARNING/ERROR; the demo's own
            # progress output is what users read.
            logging.getLogger(name).setLevel(logging.CRITICAL)

        async def serve() -> None:
            broker = Broker(config, loop=loop)
            self._broker = broker
            await broker.start()

        try:
            loop.run_until_complete(serve())
        except BaseException as exc:  # surfaced to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Shut the broker down and join its thread."""
        loop, broker = self._loop, self._broker
        if loop is None or broker is None:
            return
        future = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)  # type: ignore[attr-defined]
        try:
            future.result(timeout_s)
        except Exception as exc:  # shutting down anyway
            logger.warning("embedded broker shutdown: %s", exc)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout_s)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_for_port(host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise FedloraError(f"embedded MQTT broker not reachable on {host}:{port}")
