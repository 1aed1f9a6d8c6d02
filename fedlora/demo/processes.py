"""The demo's node processes: each role runs as `python -m fedlora.cli ROLE --config FILE`, as in
production."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


class NodeProcess:
    """One node (cloud, gateway or device) as a child process with its own log file."""

    def __init__(
        self,
        node_id: str,
        role: str,
        config: Path,
        log_path: Path,
        *,
        verbose: bool = False,
        test_hooks: bool = False,
    ) -> None:
        self.node_id = node_id
        self.verbose = verbose
        self.test_hooks = test_hooks
        self.role = role
        self.config = config
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        """Start (or restart) the node; its stdout and stderr append to its log file."""
        if self.running:
            return
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.test_hooks:
            env["FEDLORA_TEST_HOOKS"] = "1"  # the nodes refuse their debug hooks without this opt-in
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fedlora.cli",
                    *(["-v"] if self.verbose else []),
                    self.role,
                    "--config",
                    str(self.config),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl-C on the demo must not reach the nodes before we stop them
            )

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit code once it exited, else None."""
        return None if self._proc is None else self._proc.poll()

    def kill(self) -> None:
        """SIGKILL: the dropout the demo injects (no goodbye, no last words but the broker's LWT)."""
        if self.running and self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self.kills += 1

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if not self.running or self._proc is None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait for the process to exit and return its code."""
        assert self._proc is not None
        return self._proc.wait(timeout=timeout_s)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the node's log (shown when something fails)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""
