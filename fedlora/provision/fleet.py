"""The fleet description: who exists, in which role, behind which gateway, with which certificate serials.

Saved as `DIR/fleet.json` (no secrets) so revocation and `--add-devices` can reuse the CA and settings.
All names end up in MQTT topics and usernames, so they are restricted to `[A-Za-z0-9_-]{1,64}`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ProvisionConfigError, ProvisionError

FORMAT_VERSION = 1
ROLES = ("device", "gateway", "cloud")
MQTT_MAX_PACKET_BYTES = 268_435_455  # largest packet the MQTT remaining-length field can describe
_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HOST_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.:-]{0,252}[A-Za-z0-9])?")
_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
DEFAULT_BROKER_USER = "mosquitto"  # the user mosquitto 2.0 drops to when started as root


def check_name(name: str, what: str) -> str:
    """Return `name` if it is a safe MQTT id (`[A-Za-z0-9_-]`, 1..64 chars); else ProvisionConfigError."""
    if not _NAME_RE.fullmatch(name):
        raise ProvisionConfigError(
            f"invalid {what} {name!r}: use 1-64 characters from A-Z a-z 0-9 _ - (it becomes an MQTT "
            "topic level and username)"
        )
    return name


def check_host(host: str) -> str:
    """Return `host` if it looks like a DNS name or IP address, else raise ProvisionConfigError."""
    if not _HOST_RE.fullmatch(host):
        raise ProvisionConfigError(f"invalid host name {host!r}")
    return host


def check_port(port: int, what: str) -> int:
    """Return `port` if it is a valid TCP port, else raise ProvisionConfigError."""
    if not 1 <= port <= 65535:
        raise ProvisionConfigError(f"invalid {what} {port}: must be 1..65535")
    return port


@dataclass(frozen=True)
class FleetSettings:
    """Fleet-wide settings chosen at creation and reused by later `--add-devices` / `--revoke` runs."""

    fleet: str
    cloud_name: str
    cloud_host: str
    cloud_port: int
    gateway_port: int
    gateway_hosts: dict[str, str]
    valid_days: int
    max_packet_bytes: int
    broker_root: str  # where brokers/<name>/ lives on the broker hosts; paths in mosquitto.conf use it
    # Listener bind address per broker name; "*" is the default for brokers not named; absent or "":
    # every interface (mosquitto's default).
    bind_addresses: dict[str, str] = field(default_factory=dict)
    broker_user: str = DEFAULT_BROKER_USER  # `user` of every mosquitto.conf (privileges dropped to it)

    def __post_init__(self) -> None:
        check_name(self.fleet, "fleet name")
        check_name(self.cloud_name, "cloud name")
        check_host(self.cloud_host)
        check_port(self.cloud_port, "cloud port")
        check_port(self.gateway_port, "gateway port")
        for gw, host in self.gateway_hosts.items():
            check_name(gw, "gateway name")
            check_host(host)
        if self.valid_days < 1:
            raise ProvisionConfigError(f"--valid-days must be at least 1, got {self.valid_days}")
        if not 1024 <= self.max_packet_bytes <= MQTT_MAX_PACKET_BYTES:
            raise ProvisionConfigError(
                f"--max-packet-bytes must be 1024..{MQTT_MAX_PACKET_BYTES}, got {self.max_packet_bytes}"
            )
        for name, address in self.bind_addresses.items():
            if name != "*":
                check_name(name, "broker name")
            check_host(address)
        if not _USER_RE.fullmatch(self.broker_user):
            raise ProvisionConfigError(f"invalid broker user {self.broker_user!r}")
        if not self.broker_root.startswith("/"):
            raise ProvisionConfigError(f"broker root must be an absolute path, got {self.broker_root!r}")

    def bind_address(self, broker: str) -> str:
        """The address broker `broker`'s listener binds to ("" = every interface)."""
        return self.bind_addresses.get(broker, self.bind_addresses.get("*", ""))

    @property
    def topic_prefix(self) -> str:
        """`fl/v1/{fleet}`: the prefix of every topic of this fleet (docs/wire-format.md, "Topics")."""
        return f"fl/v1/{self.fleet}"


@dataclass
class NodeRecord:
    """One node: its role, its gateway (devices only), TLS certificate serial and revocation time."""

    id: str
    role: str
    gateway: str | None = None
    cert_serial: str = ""  # hex
    signing_public_key: str = ""  # Ed25519 raw public key, hex
    revoked_at: str | None = None  # ISO 8601 UTC

    def __post_init__(self) -> None:
        check_name(self.id, f"{self.role} name")
        if self.role not in ROLES:
            raise ProvisionConfigError(f"unknown role {self.role!r}")
        if (self.role == "device") != (self.gateway is not None):
            raise ProvisionConfigError(f"node {self.id}: exactly the devices have a gateway")

    @property
    def active(self) -> bool:
        """True unless the node has been revoked."""
        return self.revoked_at is None


@dataclass
class Fleet:
    """Settings, nodes, and the serials of the broker (server) certificates."""

    settings: FleetSettings
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    broker_serials: dict[str, str] = field(default_factory=dict)  # broker name -> server cert serial hex

    def add(self, node: NodeRecord) -> None:
        """Add a node, refusing duplicate ids across all roles."""
        if node.id in self.nodes:
            raise ProvisionConfigError(f"duplicate node id {node.id!r}")
        self.nodes[node.id] = node

    def active(self, role: str) -> list[NodeRecord]:
        """The non-revoked nodes of `role`, in id order."""
        return sorted((n for n in self.nodes.values() if n.role == role and n.active), key=lambda n: n.id)

    def devices_of(self, gateway: str) -> list[NodeRecord]:
        """The non-revoked devices attached to `gateway`, in id order."""
        return [n for n in self.active("device") if n.gateway == gateway]

    def gateway_names(self) -> list[str]:
        """Every gateway ever provisioned (revoked ones too: their broker directory still exists)."""
        return sorted(n.id for n in self.nodes.values() if n.role == "gateway")

    def to_json(self) -> str:
        """Serialise to the `fleet.json` document."""
        doc: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "settings": asdict(self.settings),
            "nodes": [asdict(n) for n in sorted(self.nodes.values(), key=lambda n: n.id)],
            "broker_serials": dict(sorted(self.broker_serials.items())),
        }
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def load(cls, path: Path) -> Fleet:
        """Load `fleet.json`; raises ProvisionError if it is missing or not a fleet of this format."""
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ProvisionError(
                f"{path} not found: is this a directory made by `fedlora provision`?"
            ) from None
        except (OSError, ValueError) as exc:
            raise ProvisionError(f"cannot read {path}: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_VERSION:
            raise ProvisionError(
                f"{path}: unsupported format {doc.get('format') if isinstance(doc, dict) else '?'}"
            )
        try:
            fleet = cls(settings=FleetSettings(**doc["settings"]))
            for raw in doc["nodes"]:
                fleet.add(NodeRecord(**raw))
            fleet.broker_serials = {str(k): str(v) for k, v in doc["broker_serials"].items()}
        except (KeyError, TypeError) as exc:
            raise ProvisionError(f"{path}: malformed ({exc})") from None
        return fleet
