"""Test helpers for the field diagnostics and install.sh: a provisioned device, its gateway's real
mosquitto (mutual TLS) on an ephemeral 127.0.0.1 port (the tiny-llama bundle: tests/conftest.py)."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

from fedlora.provision.cli import add_arguments, run

try:
    from tests.integration.mosquitto_fixture import HOST, MosquittoHandle, free_port, start_mosquitto
except ModuleNotFoundError:  # plain `pytest`: tests/integration itself is on sys.path
    from mosquitto_fixture import HOST, MosquittoHandle, free_port, start_mosquitto  # type: ignore[no-redef]


@dataclass
class Fleet:
    """A one-device fleet whose gateway broker runs here."""

    fleet_dir: Path
    node_dir: Path
    broker: MosquittoHandle


def start_fleet(tmp: Path) -> Fleet:
    """Provision fleet `demo` (gateway g1 at 127.0.0.1:<free port>, device dev-0001) and start g1's broker."""
    port = free_port()
    fleet_dir = tmp / "fleet"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--out",
            str(fleet_dir),
            "--fleet",
            "demo",
            "--gateways",
            "g1",
            "--devices",
            "1",
            "--gateway-hosts",
            f"g1={HOST}",
            "--gateway-port",
            str(port),
        ]
    )
    assert run(args) == 0
    conf = (fleet_dir / "brokers" / "g1" / "mosquitto.conf").read_text()
    conf = re.sub(r"^listener \d+$", f"listener {port} {HOST}", conf, count=1, flags=re.M)
    data = tmp / "broker-data"
    data.mkdir()
    conf = re.sub(r"^persistence_location .*$", f"persistence_location {data}/", conf, flags=re.M)
    conf = conf.split("\nconnection ")[0] + "\n"  # no bridge: there is no cloud broker in these tests
    broker = start_mosquitto(conf, port, workdir=tmp)
    return Fleet(fleet_dir, fleet_dir / "nodes" / "dev-0001", broker)


def write_device_config(node_dir: Path, bundle: Path, tmp: Path) -> Path:
    """device.toml beside the node's config.toml (relative key paths resolve) plus a [device] section."""
    path = node_dir / "device.toml"
    text = (node_dir / "config.toml").read_text()
    text += (
        f'\n[device]\nbundle_dir = "{bundle}"\ndata_dir = "{tmp / "data"}"\nstate_dir = "{tmp / "state"}"\n'
    )
    path.write_text(text)
    return path
