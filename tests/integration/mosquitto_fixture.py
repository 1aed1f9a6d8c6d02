"""Run a real mosquitto broker on 127.0.0.1 for integration tests (reusable by every test module).

    from tests.integration.mosquitto_fixture import free_port, start_mosquitto
    port = free_port()
    broker = start_mosquitto(f"listener {port} 127.0.0.1\\nallow_anonymous true\\n", port, workdir=tmp_path)
    ...
    broker.reload()    # SIGHUP (returns once the broker took it), e.g. after rewriting the ACL
    broker.restart()   # e.g. after rewriting the CRL
    broker.stop()

or the pytest fixture `mosquitto` (tests/integration/conftest.py): a plain broker, stopped at teardown.

Only the config text given is used, with one change: when the tests run as root, mosquitto 2.0 would drop
privileges to the `mosquitto` user (or the config's `user`) and could no longer read 0600 key files owned
by root in the test's 0700 temporary directory, so any `user` line is replaced by `user <current user>`.
(tests/integration/test_operator_path.py starts brokers exactly as docs/provisioning.md says instead.)
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.kit.waits import wait_until

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
HOST = "127.0.0.1"
RELOAD_LOG_LINE = "Reloading config."  # mosquitto 2.0 logs it when it handles SIGHUP


def free_port() -> int:
    """An ephemeral TCP port on 127.0.0.1 that was free a moment ago (bind to 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, timeout_s: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until 127.0.0.1:`port` accepts TCP connections; raise if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {HOST}:{port} after {timeout_s} s")


class MosquittoHandle:
    """A running mosquitto process started from a config file; its log goes to `log_path`."""

    def __init__(self, conf_path: Path, port: int, *, startup_timeout_s: float = 10.0) -> None:
        self.conf_path = conf_path
        self.port = port
        self.log_path = conf_path.with_suffix(".log")
        self.startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start the broker (if not running) and wait until its port accepts connections."""
        if self._proc is not None and self._proc.poll() is None:
            return
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self._proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.conf_path.parent,
            )
        finally:
            log.close()
        try:
            wait_for_port(self.port, timeout_s=self.startup_timeout_s, proc=self._proc)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n--- mosquitto log ---\n{self.log()}") from exc

    def stop(self) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after 5 s) and wait for it."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def reload(self, *, timeout_s: float = 10.0) -> None:
        """Send SIGHUP and return once mosquitto has taken it, i.e. logged RELOAD_LOG_LINE: it
        re-reads its config, ACL and (2.0.11) CRL files in that same turn of its single-threaded loop, so
        every packet or connection it handles after the line sees the new files. AssertionError after
        `timeout_s`."""
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError("mosquitto is not running")
        before = self.log().count(RELOAD_LOG_LINE)
        self._proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: self.log().count(RELOAD_LOG_LINE) > before,
            timeout_s=timeout_s,
            what=f"{RELOAD_LOG_LINE!r} in the log of the broker on port {self.port}",
        )

    def restart(self) -> None:
        """Stop and start again from the same config file (picks up changed CRL, ACL, certificates)."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        """The broker's log so far (for assertion messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def _with_user_line(text: str) -> str:
    if os.geteuid() != 0:
        return text
    kept = [line for line in text.splitlines() if line.split()[:1] != ["user"]]
    return "\n".join(kept).rstrip("\n") + f"\nuser {getpass.getuser()}\n"


def start_mosquitto(
    config: str | Path, port: int, *, workdir: Path | None = None, startup_timeout_s: float = 10.0
) -> MosquittoHandle:
    """Start mosquitto with `config` (config text, or the path of a config file) listening on `port`.

    The config is written to `workdir/mosquitto-<port>.conf` (default: the given file's directory, or a
    fresh temporary directory for text); the broker runs with that directory as cwd.
    """
    if isinstance(config, Path):
        text = config.read_text()
        workdir = workdir or config.parent
    else:
        text = config
        if workdir is None:
            import tempfile

            workdir = Path(tempfile.mkdtemp(prefix="mosquitto-"))
    conf_path = workdir / f"mosquitto-{port}.conf"
    conf_path.write_text(_with_user_line(text))
    return MosquittoHandle(conf_path, port, startup_timeout_s=startup_timeout_s)
