"""The files `fedlora provision` writes: modes, certificate names and chains, identity key directory."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import tomllib
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedlora.provision.fleet import FleetSettings
from fedlora.provision.provisioner import create_fleet
from fedlora.provision.signing import load_private_key_pem, public_key_hex

NODES = ["cloud", "g1", "g2", "dev-0001", "dev-0002", "dev-0003"]


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prov") / "fleet"
    settings = FleetSettings(
        fleet="f1",
        cloud_name="cloud",
        cloud_host="cloud.example.org",
        cloud_port=8883,
        gateway_port=1883,
        gateway_hosts={"g1": "10.0.0.7"},
        valid_days=30,
        max_packet_bytes=1 << 20,
        broker_root=str(root / "brokers"),
    )
    create_fleet(root, settings, ["g1", "g2"], device_count=3, progress=lambda line: None)
    return root


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_private_key_is_0600(out: Path) -> None:
    secrets = [out / "ca" / "ca.key"]
    secrets += [out / "nodes" / n / f for n in NODES for f in ("node.key", "signing.key")]
    secrets += [out / "brokers" / b / "server.key" for b in ("cloud", "g1", "g2")]
    secrets += [out / "brokers" / g / "bridge.key" for g in ("g1", "g2")]
    assert {p: _mode(p) for p in secrets} == {p: 0o600 for p in secrets}
    assert _mode(out / "ca") == 0o700
    assert _mode(out / "nodes" / "g1" / "node.crt") == 0o644


def test_node_certificates_name_the_node_and_chain_to_the_ca(out: Path) -> None:
    ca = _cert(out / "ca.crt")
    for node in NODES:
        cert = _cert(out / "nodes" / node / "node.crt")
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == node
        cert.verify_directly_issued_by(ca)  # raises if the signature or issuer does not match
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert (out / "nodes" / node / "ca.crt").read_bytes() == (out / "ca.crt").read_bytes()
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_broker_certificates_cover_their_host_names(out: Path) -> None:
    ca = _cert(out / "ca.crt")
    expected = {"cloud": "cloud.example.org", "g1": "10.0.0.7", "g2": "g2"}
    for broker, host in expected.items():
        cert = _cert(out / "brokers" / broker / "server.crt")
        cert.verify_directly_issued_by(ca)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(v) for v in san.get_values_for_type(x509.DNSName)]
        names += [str(v) for v in san.get_values_for_type(x509.IPAddress)]
        assert {host, "localhost", "127.0.0.1"} <= set(names)
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_bridge_uses_the_gateway_identity(out: Path) -> None:
    for gw in ("g1", "g2"):
        assert (out / "brokers" / gw / "bridge.crt").read_bytes() == (
            out / "nodes" / gw / "node.crt"
        ).read_bytes()


def test_fleet_keys_match_the_signing_keys(out: Path) -> None:
    top = json.loads((out / "fleet_keys.json").read_text())
    assert top["fleet"] == "f1" and set(top["nodes"]) == set(NODES)
    for node in NODES:
        key = load_private_key_pem((out / "nodes" / node / "signing.key").read_bytes())
        assert top["nodes"][node]["ed25519_public_key"] == public_key_hex(key)
        assert json.loads((out / "nodes" / node / "fleet_keys.json").read_text()) == top
    assert top["nodes"]["dev-0001"]["role"] == "device"
    assert {top["nodes"][d]["gateway"] for d in ("dev-0001", "dev-0002", "dev-0003")} == {"g1", "g2"}
    assert top["nodes"]["g1"] == {**top["nodes"]["g1"], "role": "gateway", "gateway": None}


def test_node_config_points_at_its_broker_and_files(out: Path) -> None:
    cfg = tomllib.loads((out / "nodes" / "dev-0001" / "config.toml").read_text())
    assert cfg["node"] == {"id": "dev-0001", "role": "device", "fleet": "f1", "gateway": "g1"}
    assert cfg["broker"]["host"] == "10.0.0.7" and cfg["broker"]["port"] == 1883
    for section, keys in (
        ("broker", ("ca_file", "cert_file", "key_file")),
        ("identity", ("signing_key_file", "fleet_keys_file")),
    ):
        for key in keys:
            assert (out / "nodes" / "dev-0001" / cfg[section][key]).is_file()
    cloud = tomllib.loads((out / "nodes" / "cloud" / "config.toml").read_text())
    assert cloud["node"]["role"] == "cloud" and "gateway" not in cloud["node"]
    assert (cloud["broker"]["host"], cloud["broker"]["port"]) == ("cloud.example.org", 8883)


def test_crl_is_signed_by_the_ca_and_empty(out: Path) -> None:
    crl = x509.load_pem_x509_crl((out / "crl.pem").read_bytes())
    assert crl.is_signature_valid(_cert(out / "ca.crt").public_key())  # type: ignore[arg-type]
    assert len(crl) == 0
    for broker in ("cloud", "g1", "g2"):
        assert (out / "brokers" / broker / "crl.pem").read_bytes() == (out / "crl.pem").read_bytes()
