"""`fedlora provision`: create a fleet, add devices to it, or revoke a node.

    fedlora provision --fleet NAME --out DIR --gateways g1,g2 (--devices N | --device-names a,b,c)
    fedlora provision --out DIR --add-devices N [--gateways g1]
    fedlora provision --out DIR --revoke NODE_ID

Only argparse and the standard library are imported at module level; the crypto code loads in `run`.
Exit codes: 0 done; 1 provisioning error (message on stderr); 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real import waits until `run`, keeping `fedlora --help` light
    from .fleet import FleetSettings

# Options that only make sense when creating a fleet (defaults applied in `_settings`).
_CREATE_ONLY = {
    "cloud_name": "cloud",
    "broker_host": None,  # default: the cloud name
    "gateway_hosts": "",
    "cloud_port": 8883,
    "gateway_port": 8883,
    "valid_days": 365,
    "max_packet_bytes": 32 * 1024 * 1024,
    "broker_root": None,  # default: absolute path of DIR/brokers
    "bind_address": "",  # default: every interface
    "broker_user": "mosquitto",
    "device_names": None,
    "devices": None,
    "force": False,
}


# One line in `fedlora --help` and this command's description (fl_transport/command.py).
HELP = "fleet CA, TLS certs, Ed25519 identities, mosquitto configs and ACLs, node bundles"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the provision options on `parser` (called by the `fedlora` entry point)."""
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--fleet", metavar="NAME", help="create a new fleet named NAME in DIR")
    mode.add_argument("--add-devices", type=int, metavar="N", help="add N devices to the fleet in DIR")
    mode.add_argument(
        "--revoke", metavar="NODE_ID", help="revoke a node of the fleet in DIR (CRL, ACL, keys)"
    )
    _add_create_arguments(parser)
    parser.add_argument(
        "--ca-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="CA private key for --add-devices/--revoke (default: DIR/ca/ca.key)",
    )


def _add_create_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gateways",
        default="",
        help="comma-separated gateway names (create: required; --add-devices: restrict to these gateways)",
    )
    parser.add_argument(
        "--devices", type=int, default=None, metavar="N", help="number of devices (dev-0001..)"
    )
    parser.add_argument("--device-names", default=None, metavar="A,B,C", help="explicit device names")
    parser.add_argument("--cloud-name", default=None, help="node id of the cloud (default: cloud)")
    parser.add_argument(
        "--broker-host",
        default=None,
        metavar="HOST",
        help="host name of the cloud broker (default: the cloud name)",
    )
    parser.add_argument(
        "--gateway-hosts",
        default=None,
        metavar="G=HOST,...",
        help="host names of gateway brokers (default: the gateway name)",
    )
    parser.add_argument("--cloud-port", type=int, default=None, help="cloud broker TLS port (default 8883)")
    parser.add_argument(
        "--gateway-port", type=int, default=None, help="gateway broker TLS port (default 8883)"
    )
    parser.add_argument(
        "--valid-days",
        type=int,
        default=None,
        help="validity of certificates and of the CRL, days (default 365)",
    )
    parser.add_argument(
        "--max-packet-bytes", type=int, default=None, help="mosquitto max_packet_size (default 33554432)"
    )
    parser.add_argument(
        "--broker-root",
        default=None,
        metavar="PATH",
        help="where brokers/ will be installed on broker hosts; mosquitto.conf paths use it "
        "(default: absolute path of DIR/brokers)",
    )
    parser.add_argument(
        "--bind-address",
        default=None,
        metavar="ADDR|NAME=ADDR,...",
        help="address the brokers' listeners bind to: one for every broker, or per broker name "
        "(default: every interface); kept by --add-devices and --revoke",
    )
    parser.add_argument(
        "--broker-user",
        default=None,
        metavar="USER",
        help="user mosquitto drops to when started as root (default mosquitto); as root with the "
        "default --broker-root, brokers/ is given to this user",
    )
    parser.add_argument(
        "--force", action="store_true", default=None, help="replace a previous provisioning in DIR"
    )


def _split(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _settings(args: argparse.Namespace) -> FleetSettings:
    from .errors import ProvisionConfigError
    from .fleet import FleetSettings

    def opt(name: str) -> Any:  # the value given, else the create-mode default
        value = getattr(args, name)
        return _CREATE_ONLY[name] if value is None else value

    hosts: dict[str, str] = {}
    for item in _split(opt("gateway_hosts")):
        gw, sep, host = item.partition("=")
        if not sep:
            raise ProvisionConfigError(f"--gateway-hosts entry {item!r} is not NAME=HOST")
        hosts[gw] = host
    binds: dict[str, str] = {}
    for item in _split(opt("bind_address")):
        name, sep, address = item.rpartition("=")
        binds[name if sep else "*"] = address
    cloud_name = opt("cloud_name")
    return FleetSettings(
        fleet=args.fleet,
        cloud_name=cloud_name,
        cloud_host=opt("broker_host") or cloud_name,
        cloud_port=opt("cloud_port"),
        gateway_port=opt("gateway_port"),
        gateway_hosts=hosts,
        valid_days=opt("valid_days"),
        max_packet_bytes=opt("max_packet_bytes"),
        broker_root=opt("broker_root") or str((args.out / "brokers").resolve()),
        bind_addresses=binds,
        broker_user=opt("broker_user"),
    )


def run(args: argparse.Namespace) -> int:
    """Execute the chosen mode, printing one progress line per step on stdout."""
    from . import provisioner
    from .errors import ProvisionConfigError

    def progress(line: str) -> None:
        print(line, flush=True)

    if args.fleet is None:
        misplaced = [name for name in _CREATE_ONLY if getattr(args, name) is not None]
        if misplaced:
            flags = ", ".join("--" + n.replace("_", "-") for n in misplaced)
            raise ProvisionConfigError(f"{flags} only apply when creating a fleet (--fleet)")
    if args.revoke is not None:
        node = provisioner.revoke_node(args.out, args.revoke, ca_key=args.ca_key, progress=progress)
        progress(
            f"revoked {node.id}; copy crl.pem and acl to every broker and reload it "
            "(SIGHUP: kill -HUP <mosquitto pid>, or systemctl reload); docs/provisioning.md"
        )
        return 0
    if args.add_devices is not None:
        new = provisioner.add_devices(
            args.out,
            count=args.add_devices,
            gateways=_split(args.gateways),
            ca_key=args.ca_key,
            progress=progress,
        )
        progress(
            f"added {len(new)} device(s); copy nodes/<id>/ to them and reload the gateway brokers (SIGHUP)"
        )
        return 0
    if (args.devices is None) == (args.device_names is None):
        raise ProvisionConfigError("give exactly one of --devices N and --device-names a,b,c")
    fleet = provisioner.create_fleet(
        args.out,
        _settings(args),
        _split(args.gateways),
        device_count=args.devices,
        device_names=_split(args.device_names) if args.device_names is not None else (),
        force=bool(args.force),
        progress=progress,
    )
    progress(f"fleet {fleet.settings.fleet}: {len(fleet.nodes)} nodes provisioned in {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (`python -m fedlora.provision.cli`): exactly `fedlora provision ...`."""
    from fl_transport.command import standalone

    return standalone("provision", "fedlora.provision.cli", argv)


if __name__ == "__main__":
    sys.exit(main())
