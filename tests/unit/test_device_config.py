"""device.toml: a provisioned config.toml plus the device sections; strict keys; test-hook guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.agent.config import TEST_HOOKS_ENV, load_device_config
from fl_protocol.errors import ConfigError

DEVICE_SECTIONS = """
[device]
bundle_dir = "bundle"
data_dir = "/data/fl"
default_tier = "personal"

[gates]
max_temp_c = 70
require_charging = true

[privacy.tiers.health]
epsilon_budget = 1.5
"""


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fedlora.provision.cli import main as provision

    out = tmp_path_factory.mktemp("fleet")
    assert (
        provision(["--fleet", "f1", "--out", str(out / "fleet"), "--gateways", "gw1", "--devices", "1"]) == 0
    )
    (node_dir,) = [p for p in (out / "fleet" / "nodes").iterdir() if p.name.startswith("dev")]
    return node_dir


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_provisioned_config_plus_device_sections_loads(provisioned: Path) -> None:
    config_file = _write(
        provisioned / "device.toml", (provisioned / "config.toml").read_text() + DEVICE_SECTIONS
    )
    config = load_device_config(config_file, environ={})
    assert config.node.role == "device" and config.node.gateway == "gw1"
    assert config.broker.ca_file == provisioned / "ca.crt"  # relative paths resolve against the file
    assert config.identity.signing_key_file == provisioned / "signing.key"
    assert config.device.bundle_dir == provisioned / "bundle"
    assert config.device.data_dir == Path("/data/fl")
    assert config.device.state_dir == provisioned / "state"
    assert config.device.cloud_id == "cloud"
    assert config.device.thread_spinning is True  # ONNX Runtime's default: a device trains alone
    assert config.gates.max_temp_c == 70.0 and config.gates.require_charging
    assert config.tiers.policy("health").epsilon_budget == 1.5
    assert config.tiers.policy("health").max_clip_norm == 0.5  # default kept


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[device]\nbundle_dir='b'\ndata_dir='d'\nbatch = 3\n", r"unknown key\(s\) batch"),
        ("[device]\nbundle_dir='b'\ndata_dir='d'\n[gates]\nmax_temp = 3\n", r"unknown key\(s\) max_temp"),
        ("[device]\nbundle_dir='b'\ndata_dir='d'\n[telemetry]\nx = 1\n", r"unknown section\(s\) telemetry"),
        ("[device]\nbundle_dir='b'\ndata_dir='d'\n[privacy.tiers.health]\neps = 1\n", "unknown keys"),
        ("[device]\nbundle_dir='b'\ndata_dir='d'\nbackend = 'tpu'\n", "backend must be one of"),
        ("[device]\nbundle_dir='b'\ndata_dir='d'\nthread_spinning = 'no'\n", "expected bool"),
        ("[device]\nbundle_dir='b'\ndata_dir='d'\ndefault_tier = 'secret'\n", "unknown sensitivity tier"),
        ("[device]\ndata_dir='d'\n", "missing required key bundle_dir"),
    ],
)
def test_bad_device_config_is_refused(provisioned: Path, tmp_path: Path, extra: str, message: str) -> None:
    config_file = _write(tmp_path / "device.toml", (provisioned / "config.toml").read_text() + extra)
    with pytest.raises(ConfigError, match=message):
        load_device_config(config_file, environ={})


def test_gateway_config_is_refused(provisioned: Path, tmp_path: Path) -> None:
    text = (provisioned / "config.toml").read_text().replace('role = "device"', 'role = "gateway"')
    with pytest.raises(ConfigError, match="needs a device config"):
        load_device_config(_write(tmp_path / "d.toml", text + DEVICE_SECTIONS), environ={})


def test_debug_hooks_need_the_environment_opt_in(provisioned: Path, tmp_path: Path) -> None:
    text = (
        (provisioned / "config.toml").read_text()
        + DEVICE_SECTIONS
        + "\n[debug]\nplain_updates_dir = 'plain'\n"
    )
    config_file = _write(tmp_path / "d.toml", text)
    with pytest.raises(ConfigError, match=TEST_HOOKS_ENV):
        load_device_config(config_file, environ={})
    config = load_device_config(config_file, environ={TEST_HOOKS_ENV: "1"})
    assert config.debug.plain_updates_dir == tmp_path / "plain"


def test_demo_devices_share_the_cores_so_their_pool_threads_sleep(provisioned: Path) -> None:
    """The demo's devices train at the same time on one machine: ORT spinning off (docs/device.md)."""
    from fedlora.demo.configs import device_config

    node_id = provisioned.name
    text = device_config(
        provisioned,
        node_id,
        "gw1",
        fleet="f1",
        broker=("127.0.0.1", 1883),
        bundle_dir=provisioned / "bundle",
        data_dir=provisioned / "data",
        state_dir=provisioned / "state",
        tier="personal",
        data_seed=0,
    )
    config = load_device_config(_write(provisioned / "demo-device.toml", text), environ={})
    assert config.device.thread_spinning is False
