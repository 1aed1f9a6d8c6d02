"""The demo's federation on disk: the provisioned fleet, each node's config file and its process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedlora.demo.configs import (
    EMBEDDED_BROKER_MQTT_VERSION,
    DemoSettings,
    cloud_config,
    device_config,
    gateway_config,
)
from fedlora.demo.options import DemoOptions, parse_broker
from fedlora.demo.processes import NodeProcess

FLEET = "demo"


@dataclass
class Federation:
    """The demo's node processes, the cloud's model store directory and the fleet's public keys."""

    cloud: NodeProcess
    gateways: list[NodeProcess]
    devices: list[NodeProcess]
    store_dir: Path
    fleet_keys_file: Path

    @property
    def all(self) -> list[NodeProcess]:
        """Devices, then gateways, then the cloud."""
        return [*self.devices, *self.gateways, self.cloud]


def provision_fleet(work: Path, options: DemoOptions) -> tuple[list[str], dict[str, str]]:
    """Provision fleet FLEET under work/fleet (CA, certificates, keys, broker configs) for 127.0.0.1.

    Returns the gateway ids (g1, g2, ...) and each device id's gateway.
    """
    from fedlora.provision.fleet import FleetSettings
    from fedlora.provision.provisioner import create_fleet

    gateways = [f"g{i + 1}" for i in range(options.gateways)]
    settings = FleetSettings(
        fleet=FLEET,
        cloud_name="cloud",
        cloud_host="127.0.0.1",
        cloud_port=8883,
        gateway_port=8883,
        gateway_hosts={},
        valid_days=30,
        max_packet_bytes=64 * 1024 * 1024,
        broker_root=str(work / "fleet" / "brokers"),
    )
    fleet = create_fleet(
        work / "fleet", settings, gateways, device_count=options.devices, progress=lambda _m: None
    )
    device_gateway = {d.id: str(d.gateway) for d in fleet.active("device")}
    return gateways, device_gateway


class _NodeWriter:
    """Writes each node's config under work/fleet/nodes/<id>/ and makes its process (log: work/logs)."""

    def __init__(
        self,
        work: Path,
        options: DemoOptions,
        broker: tuple[str, int],
        bundle: Path,
        settings: DemoSettings,
    ) -> None:
        self.work, self.options, self.settings = work, options, settings
        self.broker, self.bundle = broker, bundle
        self.nodes = work / "fleet" / "nodes"
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.mqtt_version = EMBEDDED_BROKER_MQTT_VERSION if parse_broker(options.broker) is None else None
        self.test_hooks = options.test_hooks_dir is not None  # gateways and devices only

    def _process(self, node_id: str, role: str, file_name: str, text: str, *, hooks: bool) -> NodeProcess:
        path = self.nodes / node_id / file_name
        path.write_text(text)
        log = self.logs / f"{node_id}.log"
        return NodeProcess(
            node_id, role, path, log, verbose=self.options.verbose, test_hooks=hooks and self.test_hooks
        )

    def cloud(self, store_dir: Path, http_port: int) -> NodeProcess:
        text = cloud_config(
            self.nodes / "cloud",
            fleet=FLEET,
            broker=self.broker,
            bundle_dir=self.bundle,
            store_dir=store_dir,
            settings=self.settings,
            http_port=http_port,
            mqtt_version=self.mqtt_version,
        )
        return self._process("cloud", "cloud", "cloud.toml", text, hooks=False)

    def gateway(self, gw: str) -> NodeProcess:
        text = gateway_config(
            self.nodes / gw,
            gw,
            fleet=FLEET,
            broker=self.broker,
            state_db=self.work / f"{gw}-state.sqlite3",
            min_cohort=self.settings.min_survivors,
            hooks_dir=self.options.test_hooks_dir,
            mqtt_version=self.mqtt_version,
            keepalive_s=self.settings.keepalive_s,
        )
        return self._process(gw, "gateway", "gateway.toml", text, hooks=True)

    def device(self, index: int, dev: str, gw: str, data_dir: Path) -> NodeProcess:
        text = device_config(
            self.nodes / dev,
            dev,
            gw,
            fleet=FLEET,
            broker=self.broker,
            bundle_dir=self.bundle,
            data_dir=data_dir,
            state_dir=self.work / "device-state" / dev,
            tier=self.settings.tier,
            data_seed=self.options.seed + index,
            hooks_dir=self.options.test_hooks_dir,
            mqtt_version=self.mqtt_version,
            keepalive_s=self.settings.keepalive_s,
        )
        return self._process(dev, "device", "device.toml", text, hooks=True)


def write_configs(
    work: Path,
    options: DemoOptions,
    broker: tuple[str, int],
    bundle: Path,
    data_dirs: list[Path],
    settings: DemoSettings,
    device_gateway: dict[str, str],
    http_port: int,
) -> Federation:
    """Write the cloud's, every gateway's and every device's config; return their (unstarted) processes.

    Device i (in id order) reads `data_dirs[i]`; the status page listens on `http_port` (0: none).
    """
    writer = _NodeWriter(work, options, broker, bundle, settings)
    store_dir = work / "cloud-store"
    cloud = writer.cloud(store_dir, http_port)
    gateways = [writer.gateway(gw) for gw in settings.gateways]
    devices = [
        writer.device(index, dev, gw, data_dirs[index])
        for index, (dev, gw) in enumerate(sorted(device_gateway.items()))
    ]
    return Federation(cloud, gateways, devices, store_dir, writer.nodes / "cloud" / "fleet_keys.json")
