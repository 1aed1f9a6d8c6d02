"""A local MQTT broker for `fedlora demo` when no real broker is given.

`start_local_broker()` prefers a real mosquitto when one is installed (a child process bound to 127.0.0.1
on a free port, anonymous, its log in a file) and falls back to amqtt's asyncio broker running in-process
on its own thread. Either exists so a new user can see a whole federation on one machine: anonymous
access on 127.0.0.1 only. Production fleets use mosquitto with TLS and ACLs (`fedlora provision`).

amqtt 0.12 iterates its subscription, retained-message and session dicts across `await`s, so a client
subscribing while a retained message is delivered raises "dictionary changed size during iteration" inside
the broker's tasks (and asyncio prints the traceback). `EmbeddedBroker` gives those three dicts snapshot
iteration and routes any remaining task error to this module's logger at DEBUG: the demo's console output
stays clean.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fl_protocol.errors import FedloraError

if TYPE_CHECKING:  # the concrete view types dict itself returns (typeshed names them here)
    from _collections_abc import dict_items, dict_keys, dict_values

logger = logging.getLogger(__name__)


class LocalBroker(Protocol):
    """What the demo needs from a local broker."""

    host: str
    port: int
    kind: str  # "mosquitto" or "amqtt"
    mqtt_version: str  # what clients should speak: amqtt 0.12 never answers an MQTT 5 CONNECT

    def stop(self) -> None: ...


class _SnapshotDict(dict):  # type: ignore[type-arg]
    """A dict whose iteration walks a snapshot, so amqtt's coroutines may change it mid-loop."""

    def __iter__(self) -> Iterator[Any]:
        return iter(list(super().keys()))

    def keys(self) -> dict_keys[Any, Any]:
        return dict.fromkeys(list(super().keys())).keys()

    def items(self) -> dict_items[Any, Any]:
        return dict(super().items()).items()

    def values(self) -> dict_values[Any, Any]:
        return dict(super().items()).values()


class EmbeddedBroker:
    """amqtt in-process. Start with `start()`, stop with `stop()`; clients connect to 127.0.0.1:`port`."""

    kind = "amqtt"
    mqtt_version = "3.1.1"  # amqtt 0.12 leaves an MQTT 5 CONNECT unanswered

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
        loop.set_exception_handler(_log_task_error)
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
            for name in ("_subscriptions", "_retained_messages", "_sessions"):
                setattr(broker, name, _SnapshotDict(getattr(broker, name)))
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
            logger.debug("embedded broker shutdown: %s", exc)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout_s)


def _log_task_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    logger.debug("embedded broker task error: %s %r", context.get("message"), exc)


class MosquittoBroker:
    """A mosquitto child process on 127.0.0.1:`port`, anonymous, no persistence; log in `workdir`."""

    kind = "mosquitto"
    mqtt_version = "5"

    def __init__(self, workdir: Path, *, executable: str, port: int = 0, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or _free_port(host)
        self.workdir = Path(workdir)
        self.executable = executable
        self.log_path = self.workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 15.0) -> None:
        """Write the config, start mosquitto and wait for its port; FedloraError if it does not come up."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        text = (
            f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n"
            f"log_dest file {self.log_path}\nlog_type error\nlog_type warning\n"
        )
        if os.geteuid() == 0:  # as root mosquitto would switch to user 'mosquitto' and lose the log file
            text += f"user {getpass.getuser()}\n"
        conf.write_text(text)
        self._proc = subprocess.Popen(
            [self.executable, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            start_new_session=True,  # Ctrl-C on the demo reaches the broker only through stop()
        )
        try:
            _wait_for_port(self.host, self.port, timeout_s, proc=self._proc)
        except FedloraError:
            self.stop()
            raise
        logger.info("mosquitto listening on %s:%d (log %s)", self.host, self.port, self.log_path)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate mosquitto (SIGTERM, then SIGKILL)."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def start_local_broker(workdir: Path, *, prefer: str = "auto") -> EmbeddedBroker | MosquittoBroker:
    """Start mosquitto if `prefer` is "auto" and it is installed (or "mosquitto"), else amqtt in-process.

    Raises FedloraError if the chosen broker does not come up, or `prefer` is "mosquitto" and none is
    installed.
    """
    executable = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).is_file()), None
    )
    if prefer == "mosquitto" and executable is None:
        raise FedloraError("mosquitto is not installed (apt-get install -y mosquitto)")
    broker: EmbeddedBroker | MosquittoBroker
    if prefer != "amqtt" and executable is not None:
        broker = MosquittoBroker(workdir, executable=executable)
    else:
        broker = EmbeddedBroker()
    broker.start()
    return broker


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_for_port(
    host: str, port: int, timeout_s: float, *, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise FedloraError(f"local MQTT broker exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise FedloraError(f"local MQTT broker not reachable on {host}:{port}")
