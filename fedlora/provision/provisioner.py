"""Provisioning operations: create a fleet, add devices to it, revoke a node.

Each operation ends with `_refresh`, which rewrites everything derived from the fleet state (CRL,
fleet_keys.json everywhere, broker configs and ACLs, fleet.json), so the output directory is always
consistent with `fleet.json` whichever operation ran last.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import pwd
import shutil
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from . import mosquitto_conf as mc
from .bundle import FLEET_KEYS_FILE, fleet_keys_json, write_node_bundle
from .ca import IssuedCert, build_crl, create_ca, issue_cert, load_ca
from .errors import ProvisionConfigError, ProvisionError
from .files import make_private_dir, write_public, write_secret
from .fleet import Fleet, FleetSettings, NodeRecord, check_name
from .signing import generate_signing_key, private_key_pem, public_key_hex

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
DEVICE_PREFIX = "dev-"
LOOPBACK_NAMES = ("localhost", "127.0.0.1")


class Layout:
    """Paths inside a provisioning output directory (documented in docs/provisioning.md)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fleet_json = root / "fleet.json"
        self.ca_cert = root / "ca.crt"
        self.ca_dir = root / "ca"
        self.ca_key = self.ca_dir / "ca.key"
        self.crl = root / "crl.pem"
        self.fleet_keys = root / FLEET_KEYS_FILE
        self.brokers = root / "brokers"
        self.nodes = root / "nodes"

    def generated(self) -> list[Path]:
        """Every top-level entry a provisioning run creates (what --force replaces)."""
        return [
            self.fleet_json,
            self.ca_cert,
            self.ca_dir,
            self.crl,
            self.fleet_keys,
            self.brokers,
            self.nodes,
        ]

    def broker_dir(self, name: str) -> Path:
        """brokers/<name>/: everything one mosquitto instance needs."""
        return self.brokers / name

    def node_dir(self, node_id: str) -> Path:
        """nodes/<id>/: the bundle copied onto one node."""
        return self.nodes / node_id


def _prepare_out_dir(layout: Layout, *, force: bool) -> None:
    root = layout.root
    if root.exists() and not root.is_dir():
        raise ProvisionError(f"{root} exists and is not a directory")
    if root.exists() and any(root.iterdir()):
        if not force:
            raise ProvisionError(f"{root} is not empty; pass --force to replace a previous provisioning")
        for path in layout.generated():
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    root.mkdir(parents=True, exist_ok=True)


def plan_devices(
    fleet: Fleet, gateways: Sequence[str], *, count: int | None = None, names: Sequence[str] = ()
) -> list[NodeRecord]:
    """New device records, each attached to the target gateway with the fewest active devices.

    Either `count` devices named `dev-NNNN` (numbering continues after the highest existing one) or
    the given `names`. Raises ProvisionConfigError for zero devices, bad or duplicate names.
    """
    if names:
        new_ids = [check_name(n, "device name") for n in names]
    else:
        if count is None or count < 1:
            raise ProvisionConfigError("at least one device is needed (--devices N with N >= 1)")
        taken = [
            int(i[len(DEVICE_PREFIX) :])
            for i in fleet.nodes
            if i[len(DEVICE_PREFIX) :].isdigit() and i.startswith(DEVICE_PREFIX)
        ]
        start = max(taken, default=0) + 1
        new_ids = [f"{DEVICE_PREFIX}{i:04d}" for i in range(start, start + count)]
    if len(set(new_ids)) != len(new_ids):
        raise ProvisionConfigError("device names must be unique")
    load = {gw: len(fleet.devices_of(gw)) for gw in gateways}
    records = []
    for dev_id in new_ids:
        if dev_id in fleet.nodes:
            raise ProvisionConfigError(f"node id {dev_id!r} already exists in the fleet")
        gw = min(gateways, key=lambda g: load[g])
        load[gw] += 1
        records.append(NodeRecord(id=dev_id, role="device", gateway=gw))
    return records


def _broker_hostnames(settings: FleetSettings, name: str) -> list[str]:
    host = settings.cloud_host if name == settings.cloud_name else settings.gateway_hosts.get(name, name)
    return [host, name, *LOOPBACK_NAMES]


def _issue_broker(layout: Layout, fleet: Fleet, ca: IssuedCert, name: str) -> None:
    s = fleet.settings
    bdir = layout.broker_dir(name)
    (bdir / mc.DATA_DIR).mkdir(parents=True, exist_ok=True)
    server = issue_cert(
        ca, f"{name}-broker", server=True, hostnames=_broker_hostnames(s, name), valid_days=s.valid_days
    )
    write_public(bdir / mc.SERVER_CERT, server.cert_pem())
    write_secret(bdir / mc.SERVER_KEY, server.key_pem())
    fleet.broker_serials[name] = format(server.serial, "x")


def _issue_node(layout: Layout, fleet: Fleet, ca: IssuedCert, node: NodeRecord) -> None:
    tls = issue_cert(ca, node.id, server=False, valid_days=fleet.settings.valid_days)
    signing = generate_signing_key()
    node.cert_serial = format(tls.serial, "x")
    node.signing_public_key = public_key_hex(signing)
    write_node_bundle(
        layout.node_dir(node.id),
        fleet.settings,
        node,
        ca_pem=ca.cert_pem(),
        cert_pem=tls.cert_pem(),
        tls_key_pem=tls.key_pem(),
        signing_key_pem=private_key_pem(signing),
    )
    if node.role == "gateway":  # the gateway's broker bridges to the cloud under the gateway's identity
        bdir = layout.broker_dir(node.id)
        write_public(bdir / mc.BRIDGE_CERT, tls.cert_pem())
        write_secret(bdir / mc.BRIDGE_KEY, tls.key_pem())


def _refresh(layout: Layout, fleet: Fleet, ca: IssuedCert, progress: Progress) -> None:
    s = fleet.settings
    revoked = {
        int(n.cert_serial, 16): dt.datetime.fromisoformat(n.revoked_at)
        for n in fleet.nodes.values()
        if n.revoked_at is not None
    }
    crl = build_crl(ca, revoked, valid_days=s.valid_days)
    write_public(layout.crl, crl)
    progress(f"CRL: {len(revoked)} revoked certificate(s) -> {layout.crl}")
    keys = fleet_keys_json(fleet)
    write_public(layout.fleet_keys, keys)
    for node in fleet.nodes.values():
        if node.active:
            write_public(layout.node_dir(node.id) / FLEET_KEYS_FILE, keys)
    brokers: list[tuple[str, int, mc.BridgeSpec | None, str]] = [
        (s.cloud_name, s.cloud_port, None, mc.render_cloud_acl(fleet))
    ]
    for gw in fleet.gateway_names():
        spec = mc.BridgeSpec(gateway=gw, cloud_host=s.cloud_host, cloud_port=s.cloud_port)
        brokers.append((gw, s.gateway_port, spec, mc.render_gateway_acl(fleet, gw)))
    for name, port, bridge, acl in brokers:
        bdir = layout.broker_dir(name)
        write_public(bdir / mc.CONF_FILE, mc.render_conf(s, name, port=port, bridge=bridge))
        write_public(bdir / mc.ACL_FILE, acl)
        write_public(bdir / mc.CA_FILE, ca.cert_pem())
        write_public(bdir / mc.CRL_FILE, crl)
        progress(f"broker {name}: {bdir / mc.CONF_FILE}")
    _hand_brokers_to_user(layout, fleet, progress)
    write_public(layout.fleet_json, fleet.to_json())


def _hand_brokers_to_user(layout: Layout, fleet: Fleet, progress: Progress) -> None:
    """Run in place as root: give brokers/<name>/ to the broker user, so that mosquitto, which drops to
    that user (`user` line) before it loads its keys, can read them and write its persistence.

    Only when the configs point at this directory (default --broker-root) and this process is root;
    a broker root elsewhere is installed by the operator (docs/provisioning.md, "Running the brokers")."""
    s = fleet.settings
    if os.geteuid() != 0 or Path(s.broker_root) != layout.brokers.resolve():
        return
    try:
        user = pwd.getpwnam(s.broker_user)
    except KeyError:
        progress(f"note: no user {s.broker_user!r} here; brokers/ stays owned by root")
        return
    for name in [s.cloud_name, *fleet.gateway_names()]:
        for path in [layout.broker_dir(name), *layout.broker_dir(name).rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
    progress(f"brokers/: owned by {s.broker_user} (mosquitto drops to that user when started as root)")
    closed = [p for p in layout.brokers.resolve().parents if not p.stat().st_mode & stat.S_IXOTH]
    if closed:
        progress(
            f"warning: {closed[0]} is not searchable by other users: mosquitto running as "
            f"{s.broker_user} cannot reach its files there (chmod o+x, or install brokers/ elsewhere)"
        )


def create_fleet(
    out_dir: Path,
    settings: FleetSettings,
    gateways: Sequence[str],
    *,
    device_count: int | None = None,
    device_names: Sequence[str] = (),
    force: bool = False,
    progress: Progress = logger.info,
) -> Fleet:
    """Provision a new fleet into `out_dir`: CA, broker certificates and configs, one bundle per node."""
    if not gateways:
        raise ProvisionConfigError("at least one gateway is needed (--gateways g1,g2)")
    fleet = Fleet(settings=settings)
    fleet.add(NodeRecord(id=settings.cloud_name, role="cloud"))
    for gw in gateways:
        fleet.add(NodeRecord(id=check_name(gw, "gateway name"), role="gateway"))
    for dev in plan_devices(fleet, gateways, count=device_count, names=device_names):
        fleet.add(dev)
    unknown = set(settings.gateway_hosts) - set(gateways)
    if unknown:
        raise ProvisionConfigError(f"host given for unknown gateway(s): {', '.join(sorted(unknown))}")
    unknown = set(settings.bind_addresses) - {"*", settings.cloud_name, *gateways}
    if unknown:
        raise ProvisionConfigError(f"bind address given for unknown broker(s): {', '.join(sorted(unknown))}")
    layout = Layout(out_dir)
    _prepare_out_dir(layout, force=force)
    ca = create_ca(settings.fleet, valid_days=settings.valid_days)
    write_public(layout.ca_cert, ca.cert_pem())
    make_private_dir(layout.ca_dir)
    write_secret(layout.ca_key, ca.key_pem())
    progress(f"fleet CA -> {layout.ca_cert} (private key {layout.ca_key}: move it offline)")
    for name in [settings.cloud_name, *gateways]:
        _issue_broker(layout, fleet, ca, name)
    progress(f"broker certificates: {1 + len(gateways)}")
    for node in sorted(fleet.nodes.values(), key=lambda n: (n.role, n.id)):
        _issue_node(layout, fleet, ca, node)
    progress(f"node bundles: {len(fleet.nodes)} in {layout.nodes}")
    _refresh(layout, fleet, ca, progress)
    return fleet


def _load_fleet_and_ca(out_dir: Path, ca_key: Path | None) -> tuple[Layout, Fleet, IssuedCert]:
    layout = Layout(out_dir)
    fleet = Fleet.load(layout.fleet_json)
    key_path = ca_key or layout.ca_key
    try:
        ca = load_ca(layout.ca_cert.read_bytes(), key_path.read_bytes())
    except FileNotFoundError as exc:
        raise ProvisionError(
            f"CA material not found ({exc.filename}); bring the offline CA key back or pass --ca-key"
        ) from None
    except ValueError as exc:
        raise ProvisionError(f"cannot load the CA: {exc}") from None
    return layout, fleet, ca


def add_devices(
    out_dir: Path,
    *,
    count: int | None = None,
    names: Sequence[str] = (),
    gateways: Sequence[str] = (),
    ca_key: Path | None = None,
    progress: Progress = logger.info,
) -> list[str]:
    """Add devices to an existing fleet (same CA), spread over `gateways` (default: all active ones).

    Broker ACLs change: the brokers must reload (SIGHUP) or restart. Returns the new device ids."""
    layout, fleet, ca = _load_fleet_and_ca(out_dir, ca_key)
    active_gws = [n.id for n in fleet.active("gateway")]
    targets = list(gateways) or active_gws
    bad = [g for g in targets if g not in active_gws]
    if bad or not targets:
        raise ProvisionConfigError(f"not an active gateway of this fleet: {', '.join(bad) or '(none)'}")
    new = plan_devices(fleet, targets, count=count, names=names)
    for dev in new:
        fleet.add(dev)
        _issue_node(layout, fleet, ca, dev)
        progress(f"device {dev.id} -> gateway {dev.gateway}")
    _refresh(layout, fleet, ca, progress)
    return [d.id for d in new]


def revoke_node(
    out_dir: Path, node_id: str, *, ca_key: Path | None = None, progress: Progress = logger.info
) -> NodeRecord:
    """Revoke `node_id`: its certificate goes on the CRL, it leaves the ACLs and fleet_keys.json.

    Running brokers load the new CRL and ACL on SIGHUP (mosquitto 2.0 re-reads both on reload; tested in
    tests/integration/test_provision_broker.py); see docs/provisioning.md."""
    layout, fleet, ca = _load_fleet_and_ca(out_dir, ca_key)
    node = fleet.nodes.get(node_id)
    if node is None:
        raise ProvisionConfigError(f"no node {node_id!r} in this fleet")
    if not node.active:
        raise ProvisionConfigError(f"node {node_id!r} was already revoked at {node.revoked_at}")
    node.revoked_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    progress(f"revoking {node.role} {node.id} (certificate serial {node.cert_serial})")
    _refresh(layout, fleet, ca, progress)
    return node
