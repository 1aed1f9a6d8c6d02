"""The operator's path of docs/operations.md on one machine, as processes: `fedlora provision` (with a bind
address), the cloud and gateway mosquitto brokers started exactly as docs/provisioning.md says (as root:
`mosquitto -c brokers/<name>/mosquitto.conf`, privileges dropped to the `mosquitto` user), the bridge over
mutual TLS, `fedlora cloud` with a minimal cloud.toml, `fedlora gateway` with its provisioned config.toml
as it is, and devices with the default device configuration (install.sh's, or the same written here).

Everything lives under a fresh 0755 directory in /tmp (the broker user must be able to reach its files;
pytest's own temporary directories are 0700) that `close()` removes. Only processes started here are
stopped, by their own handles.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    from tests.integration.mosquitto_fixture import HOST, MOSQUITTO, free_port, wait_for_port
except ModuleNotFoundError:  # plain `pytest`: tests/integration itself is on sys.path
    from mosquitto_fixture import HOST, MOSQUITTO, free_port, wait_for_port  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[2]
FLEET = "op"
GATEWAY = "g1"
DEVICES = ("dev-0001", "dev-0002", "dev-0003")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def fedlora(*args: str) -> list[str]:
    """`fedlora ARGS` from the tree under test (the entry point module, no installed script needed)."""
    return [sys.executable, "-m", "fedlora.cli", *args]


def minimal_cloud_toml(node_config: str, bundle: Path, rounds: int) -> str:
    """docs/operations.md's minimal cloud.toml: the provisioned sections plus [cloud] and [privacy]."""
    return (
        node_config
        + f'\n[cloud]\nbundle_dir = "{bundle}"\nrounds = {rounds}\ngateways = ["{GATEWAY}"]\n'
        + f'store_dir = "store"\ntotal_devices = {len(DEVICES)}\n\n[privacy]\nnoise_multiplier = 3.0\n'
    )


def write_device_data(data_dir: Path, device: str, records: int = 40) -> None:
    """Untagged JSONL records (they take the device's default tier), different per device."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f'{{"text": "{device} note {i}: the meeting moved to room {i % 7}, bring the {i % 5} reports"}}'
        for i in range(records)
    ]
    (data_dir / "notes.jsonl").write_text("\n".join(lines) + "\n")


def device_toml(node_dir: Path, bundle: Path, data_dir: Path, state_dir: Path) -> Path:
    """What install.sh writes: the node's config.toml plus a [device] section of paths, nothing else."""
    path = node_dir / "device.toml"
    path.write_text(
        (node_dir / "config.toml").read_text()
        + f'\n[device]\nbundle_dir = "{bundle}"\ndata_dir = "{data_dir}"\nstate_dir = "{state_dir}"\n'
    )
    return path


def process_uid(pid: int) -> int:
    """The real uid of a running process (/proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Uid line for {pid}")


@dataclass
class OperatorFleet:
    """Provisioned fleet + running brokers and roles under `base`; see the module docstring."""

    base: Path
    cloud_port: int = field(default_factory=free_port)
    gateway_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @classmethod
    def create(cls) -> OperatorFleet:
        base = Path(tempfile.mkdtemp(prefix="fedlora-operator-", dir="/tmp"))
        base.chmod(0o755)
        return cls(base)

    @property
    def fleet_dir(self) -> Path:
        return self.base / "fleet"

    def node_dir(self, node: str) -> Path:
        return self.fleet_dir / "nodes" / node

    def log(self, name: str) -> str:
        path = self.base / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def provision(self) -> subprocess.CompletedProcess[str]:
        """`fedlora provision` as docs/operations.md shows it, listeners bound to 127.0.0.1."""
        args = fedlora(
            "provision",
            "--fleet",
            FLEET,
            "--out",
            str(self.fleet_dir),
            "--gateways",
            GATEWAY,
            "--device-names",
            ",".join(DEVICES),
            "--broker-host",
            HOST,
            "--gateway-hosts",
            f"{GATEWAY}={HOST}",
            "--cloud-port",
            str(self.cloud_port),
            "--gateway-port",
            str(self.gateway_port),
            "--bind-address",
            HOST,
        )
        return subprocess.run(args, env=ENV, capture_output=True, text=True, check=True, timeout=120)

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None) -> None:
        log = open(self.base / f"{name}.log", "wb")  # noqa: SIM115 - handed to the child
        try:
            self.procs[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=ENV if env is None else env, cwd=self.base
            )
        finally:
            log.close()

    def start_brokers(self) -> None:
        """docs/provisioning.md, "Running the brokers", run in place: cloud broker first, then g1's."""
        for name, port in (("cloud", self.cloud_port), (GATEWAY, self.gateway_port)):
            conf = self.fleet_dir / "brokers" / name / "mosquitto.conf"
            self.start(f"broker-{name}", [MOSQUITTO, "-c", str(conf)])
            try:
                wait_for_port(port, timeout_s=10, proc=self.procs[f"broker-{name}"])
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(f"{exc}\n{self.log(f'broker-{name}')}") from exc

    def broker_runs_as_broker_user(self, name: str) -> bool:
        """Started as root, mosquitto dropped to the `mosquitto` user (it could read its 0600 keys)."""
        return process_uid(self.procs[f"broker-{name}"].pid) == pwd.getpwnam("mosquitto").pw_uid

    def write_cloud_config(self, bundle: Path, rounds: int) -> Path:
        node = self.node_dir("cloud")
        path = node / "cloud.toml"
        path.write_text(minimal_cloud_toml((node / "config.toml").read_text(), bundle, rounds))
        return path

    def wait(self, name: str, timeout_s: float) -> int:
        """Exit code of role `name`; raises with its log if it is still running after `timeout_s`."""
        try:
            return self.procs[name].wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{name} still running after {timeout_s:.0f} s\n--- {name} ---\n{self.log(name)}\n"
                + "\n".join(f"--- {n} ---\n{self.log(n)[-3000:]}" for n in self.procs if n != name)
            ) from None

    def wait_for_log(self, name: str, text: str, timeout_s: float) -> None:
        """Wait until role `name`'s log contains `text`; AssertionError with the log otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log(name):
                return
            if self.procs[name].poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not in the log of {name}:\n{self.log(name)[-3000:]}")

    def stop(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def close(self, keep_logs_in: Path | None = None) -> None:
        """Stop every process started here (roles first, brokers last), copy the logs to `keep_logs_in`,
        and remove `base`."""
        for name in sorted(self.procs, key=lambda n: n.startswith("broker-")):
            self.stop(name)
        if keep_logs_in is not None:
            for log in self.base.glob("*.log"):
                shutil.copy(log, keep_logs_in / log.name)
        shutil.rmtree(self.base, ignore_errors=True)
