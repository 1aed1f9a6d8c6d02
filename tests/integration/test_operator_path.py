"""The documented operator path end to end on one machine (docs/operations.md), with no hand edits:
provision with a bind address, both mosquitto brokers started as docs/provisioning.md says (as root here,
so they drop to the `mosquitto` user), the bridge over mutual TLS, the cloud from a minimal cloud.toml, the
gateway from its provisioned config.toml as it is, three devices with the default device configuration.

- quick (default suite): devices run from this tree with the device.toml install.sh would write; 1 round;
  the final adapter loads from another directory.
- slow: devices installed by install.sh from a wheelhouse built as docs/install.md says, started as
  install.sh prints; 2 rounds; the final adapter loads from another directory with AutoPeftModelForCausalLM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    from tests.integration.operator_fleet import (
        DEVICES,
        ENV,
        GATEWAY,
        ROOT,
        OperatorFleet,
        device_toml,
        fedlora,
        write_device_data,
    )
except ModuleNotFoundError:  # plain `pytest`: tests/integration itself is on sys.path
    from operator_fleet import (  # type: ignore[no-redef]
        DEVICES,
        ENV,
        GATEWAY,
        ROOT,
        OperatorFleet,
        device_toml,
        fedlora,
        write_device_data,
    )

pytestmark = pytest.mark.integration
INSTALL_SH = ROOT / "install.sh"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[OperatorFleet]:
    handle = OperatorFleet.create()
    yield handle
    logs = tmp_path / "logs"
    logs.mkdir()
    handle.close(keep_logs_in=logs)


@pytest.fixture(scope="module")
def bundle(tiny_llama_bundle: Path) -> Path:
    """The session's tiny-llama bundle (tests/conftest.py)."""
    return tiny_llama_bundle


def _start_infrastructure(fleet: OperatorFleet, bundle: Path) -> None:
    """Provision, brokers, gateway: the start order of docs/operations.md (devices next, the cloud last)."""
    out = fleet.provision().stdout
    assert (
        f"listener {fleet.cloud_port} 127.0.0.1"
        in (fleet.fleet_dir / "brokers/cloud/mosquitto.conf").read_text()
    )
    if os.geteuid() == 0:
        assert "brokers/: owned by mosquitto" in out
    fleet.start_brokers()
    if os.geteuid() == 0:  # started as root exactly as documented: dropped privileges, read its keys
        assert fleet.broker_runs_as_broker_user("cloud") and fleet.broker_runs_as_broker_user(GATEWAY)
    fleet.start("gateway", fedlora("gateway", "--config", str(fleet.node_dir(GATEWAY) / "config.toml")))


def _start_cloud(fleet: OperatorFleet, bundle: Path, rounds: int) -> None:
    """The cloud last, once the devices are connected: it publishes the first task at start."""
    for dev in DEVICES:
        fleet.wait_for_log(dev, "mqtt connected", timeout_s=300)
    cloud_toml = fleet.write_cloud_config(bundle, rounds)
    fleet.start("cloud", fedlora("cloud", "--config", str(cloud_toml)))


def _check_run(fleet: OperatorFleet, rounds: int) -> dict:
    assert fleet.wait("cloud", 420) == 0, fleet.log("cloud")
    report = json.loads((fleet.node_dir("cloud") / "store" / "rounds.json").read_text())
    assert [r["state"] for r in report["rounds"]] == ["completed"] * rounds, report["rounds"]
    assert all(r["survivors"] == len(DEVICES) for r in report["rounds"])
    cloud_log, gateway_log = fleet.log("cloud"), fleet.log("gateway")
    # Lifecycle at INFO without -v: round opened, partial received, round closed; the gateway's cohort.
    for line in ("round 1 started", f"round 1: partial from {GATEWAY} (3 devices)", "round 1 completed"):
        assert line in cloud_log, cloud_log
    assert "round 1: started" in gateway_log and "round 1: partial published (3 survivors" in gateway_log
    assert "Traceback" not in cloud_log + gateway_log
    return report


def test_minimal_cloud_toml_and_default_device_configs_complete_a_round(
    fleet: OperatorFleet, bundle: Path, tmp_path: Path
) -> None:
    _start_infrastructure(fleet, bundle)
    for dev in DEVICES:
        data, state = fleet.base / "data" / dev, fleet.base / "state" / dev
        write_device_data(data, dev)  # untagged records: the device's default tier
        config = device_toml(fleet.node_dir(dev), bundle, data, state)
        fleet.start(dev, fedlora("device", "--config", str(config)))
    _start_cloud(fleet, bundle, rounds=1)
    _check_run(fleet, rounds=1)
    _adapter_loads_from_elsewhere(fleet, tmp_path)


def _adapter_loads_from_elsewhere(fleet: OperatorFleet, tmp_path: Path) -> None:
    """The cloud's final adapter loads with AutoPeftModelForCausalLM from another working directory,
    offline (HF_HUB_OFFLINE=1): its base_model_name_or_path resolves from anywhere."""
    adapter = fleet.node_dir("cloud") / "store" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]).is_absolute()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import sys; from peft import AutoPeftModelForCausalLM;"
        "m = AutoPeftModelForCausalLM.from_pretrained(sys.argv[1]); print(type(m).__name__)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script, str(adapter)],
        cwd=elsewhere,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,  # importing torch + peft took > 300 s at load 20 on 2 cores
    )
    assert loaded.returncode == 0 and "PeftModel" in loaded.stdout, loaded.stderr[-3000:]


def _install_device(fleet: OperatorFleet, dev: str, bundle: Path, wheelhouse: Path) -> subprocess.Popen[str]:
    data = fleet.base / "data" / dev
    write_device_data(data, dev)
    argv = ["bash", str(INSTALL_SH), "--wheelhouse", str(wheelhouse), "--prefix", str(fleet.base / dev)]
    argv += ["--node", str(fleet.node_dir(dev)), "--bundle", str(bundle), "--data-dir", str(data)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.slow
def test_operator_path_end_to_end_with_install_sh(
    fleet: OperatorFleet, bundle: Path, wheelhouse: Path, tmp_path: Path
) -> None:
    _start_infrastructure(fleet, bundle)
    installs = {dev: _install_device(fleet, dev, bundle, wheelhouse) for dev in DEVICES}
    for dev, proc in installs.items():
        out, _ = proc.communicate(timeout=1500)  # a loaded 2-core machine needed > 900 s
        assert proc.returncode == 0, out
        assert "broker: reachable" in out, out
        start = f"{fleet.base / dev}/venv/bin/fedlora device --config {fleet.base / dev}/etc/device.toml"
        assert f"start the device (no systemd unit): {start}" in out, out
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        fleet.start(dev, start.split(), env=env)  # exactly the printed command, the installed wheel
    _start_cloud(fleet, bundle, rounds=2)
    _check_run(fleet, rounds=2)
    _adapter_loads_from_elsewhere(fleet, tmp_path)
