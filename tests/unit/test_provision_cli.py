"""`fedlora provision` command line: errors, --add-devices, --revoke."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from fedlora.provision.cli import add_arguments, run
from fedlora.provision.errors import ProvisionConfigError, ProvisionError
from fl_protocol.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return run(parser.parse_args(list(argv)))


def _create(out: Path, *extra: str) -> int:
    return _run("--fleet", "f", "--out", str(out), "--gateways", "g1,g2", *extra)


def test_create_prints_progress_and_writes_the_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _create(tmp_path / "o", "--device-names", "a,b,c") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 5 and "fleet CA" in lines[0]
    assert sorted(p.name for p in (tmp_path / "o" / "nodes").iterdir()) == [
        "a",
        "b",
        "c",
        "cloud",
        "g1",
        "g2",
    ]


ONE_OF = "give exactly one of --devices N and --device-names a,b,c"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--devices", "0"), "at least one device is needed"),
        (("--devices", "2", "--device-names", "a"), ONE_OF),
        ((), ONE_OF),
        (("--device-names", "a/b"), "invalid device name 'a/b'"),
        (("--device-names", "x" * 65), "invalid device name 'x{65}'"),
        (("--device-names", "dup,dup"), "device names must be unique"),
        (("--device-names", "g1"), "node id 'g1' already exists in the fleet"),
        (("--devices", "2", "--gateway-hosts", "g9=host"), r"host given for unknown gateway\(s\): g9"),
        (("--devices", "2", "--cloud-port", "0"), "invalid cloud port 0"),
        (("--devices", "2", "--max-packet-bytes", "10"), "--max-packet-bytes must be 1024"),
    ],
)
def test_bad_arguments_are_config_errors(tmp_path: Path, extra: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _create(tmp_path / "o", *extra)
    assert not (tmp_path / "o").exists()


def test_bad_fleet_and_gateway_names(tmp_path: Path) -> None:
    with pytest.raises(
        ProvisionConfigError, match=r"invalid fleet name 'a\+b': use 1-64 characters from A-Z a-z"
    ):
        _run("--fleet", "a+b", "--out", str(tmp_path / "o"), "--gateways", "g1", "--devices", "1")
    with pytest.raises(
        ProvisionConfigError, match="invalid gateway name 'g#1': use 1-64 characters from A-Z"
    ):
        _run("--fleet", "f", "--out", str(tmp_path / "o"), "--gateways", "g#1", "--devices", "1")
    with pytest.raises(ProvisionConfigError, match=r"at least one gateway is needed \(--gateways g1,g2\)"):
        _run("--fleet", "f", "--out", str(tmp_path / "o"), "--gateways", "", "--devices", "1")


def test_non_empty_dir_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ProvisionError, match="--force"):
        _create(out, "--devices", "1")
    assert _create(out, "--devices", "1", "--force") == 0
    first_ca = (out / "ca.crt").read_bytes()
    assert _create(out, "--devices", "2", "--force") == 0
    assert (out / "ca.crt").read_bytes() != first_ca and (out / "notes.txt").read_text() == "keep me"
    assert not (out / "nodes" / "dev-0003").exists() and (out / "nodes" / "dev-0002").exists()


def test_add_devices_reuses_the_ca_and_continues_numbering(tmp_path: Path) -> None:
    out = tmp_path / "o"
    _create(out, "--devices", "3")
    ca = (out / "ca.crt").read_bytes()
    assert _run("--out", str(out), "--add-devices", "2", "--gateways", "g2") == 0
    assert (out / "ca.crt").read_bytes() == ca
    cert = x509.load_pem_x509_certificate((out / "nodes" / "dev-0005" / "node.crt").read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca))
    keys = json.loads((out / "nodes" / "dev-0001" / "fleet_keys.json").read_text())["nodes"]
    assert keys["dev-0004"]["gateway"] == keys["dev-0005"]["gateway"] == "g2"
    assert "user dev-0005" in (out / "brokers" / "g2" / "acl").read_text()
    with pytest.raises(ProvisionConfigError, match="not an active gateway of this fleet: g7"):
        _run("--out", str(out), "--add-devices", "1", "--gateways", "g7")
    with pytest.raises(ProvisionConfigError, match="only apply"):
        _run("--out", str(out), "--add-devices", "1", "--cloud-port", "1")


def test_revoke_updates_crl_acl_and_keys(tmp_path: Path) -> None:
    out = tmp_path / "o"
    _create(out, "--devices", "2")
    serial = x509.load_pem_x509_certificate(
        (out / "nodes" / "dev-0001" / "node.crt").read_bytes()
    ).serial_number
    assert _run("--out", str(out), "--revoke", "dev-0001") == 0
    for crl_path in (
        out / "crl.pem",
        out / "brokers" / "g1" / "crl.pem",
        out / "brokers" / "cloud" / "crl.pem",
    ):
        crl = x509.load_pem_x509_crl(crl_path.read_bytes())
        assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert "dev-0001" not in (out / "brokers" / "g1" / "acl").read_text()
    assert "dev-0001" not in (out / "brokers" / "cloud" / "acl").read_text()
    assert "dev-0001" not in json.loads((out / "nodes" / "dev-0002" / "fleet_keys.json").read_text())["nodes"]
    nodes = {n["id"]: n for n in json.loads((out / "fleet.json").read_text())["nodes"]}
    assert nodes["dev-0001"]["revoked_at"] and nodes["dev-0002"]["revoked_at"] is None
    with pytest.raises(ProvisionConfigError, match="already revoked"):
        _run("--out", str(out), "--revoke", "dev-0001")
    with pytest.raises(ProvisionConfigError, match="no node"):
        _run("--out", str(out), "--revoke", "dev-9999")


def test_revoke_without_ca_key_says_where_it_is(tmp_path: Path) -> None:
    out = tmp_path / "o"
    _create(out, "--devices", "1")
    offline = tmp_path / "offline.key"
    (out / "ca" / "ca.key").rename(offline)
    with pytest.raises(ProvisionError, match="--ca-key"):
        _run("--out", str(out), "--revoke", "dev-0001")
    assert _run("--out", str(out), "--revoke", "dev-0001", "--ca-key", str(offline)) == 0
    with pytest.raises(ProvisionError, match="fleet.json"):
        _run("--out", str(tmp_path / "nothing"), "--revoke", "x")


def test_module_entry_point_reports_errors_with_exit_code_1(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "fedlora.provision.cli",
        "--fleet",
        "f",
        "--out",
        str(tmp_path / "o"),
        "--gateways",
        "g1",
        "--devices",
        "0",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "at least one device" in proc.stderr
    cmd[-1] = "1"
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_cli_module_imports_only_the_standard_library() -> None:
    code = (
        "import sys; import fedlora.provision.cli; "
        "heavy = ('cryptography', 'paho', 'fedlora.provision.'); "
        "print(','.join(m for m in sys.modules if m.startswith(heavy) and m != 'fedlora.provision.cli'))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_bind_address_and_broker_user_are_kept_across_revoke_and_add_devices(tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert (
        _create(out, "--devices", "3", "--bind-address", "10.0.0.5,g2=10.0.2.7", "--broker-user", "mqtt") == 0
    )

    def confs() -> dict[str, str]:
        return {n: (out / "brokers" / n / "mosquitto.conf").read_text() for n in ("cloud", "g1", "g2")}

    def check() -> None:
        c = confs()
        port = "8883"
        assert f"\nlistener {port} 10.0.0.5\n" in c["cloud"] and f"\nlistener {port} 10.0.0.5\n" in c["g1"]
        assert f"\nlistener {port} 10.0.2.7\n" in c["g2"]
        assert all(
            "\nuser mqtt\n" in text and "\nuse_username_as_clientid true\n" in text for text in c.values()
        )

    check()
    assert _run("--out", str(out), "--revoke", "dev-0001") == 0
    check()
    assert _run("--out", str(out), "--add-devices", "1") == 0
    check()
    assert json.loads((out / "fleet.json").read_text())["settings"]["bind_addresses"] == {
        "*": "10.0.0.5",
        "g2": "10.0.2.7",
    }


def test_default_listener_binds_every_interface(tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert _create(out, "--devices", "1") == 0
    conf = (out / "brokers" / "g1" / "mosquitto.conf").read_text()
    assert "\nlistener 8883\n" in conf and "\nuser mosquitto\n" in conf


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--bind-address", "g9=10.0.0.1"), r"bind address given for unknown broker\(s\): g9"),
        (("--bind-address", "bad host!"), "invalid host name 'bad host!'"),
        (("--broker-user", "Root;rm"), "invalid broker user 'Root;rm'"),
    ],
)
def test_bad_bind_address_or_broker_user(tmp_path: Path, extra: tuple[str, ...], message: str) -> None:
    with pytest.raises(ProvisionConfigError, match=message):
        _create(tmp_path / "o", "--devices", "1", *extra)
    assert not (tmp_path / "o" / "fleet.json").exists()


def test_fleet_json_without_the_new_settings_still_loads(tmp_path: Path) -> None:
    """A fleet provisioned before --bind-address/--broker-user: defaults apply on --revoke."""
    out = tmp_path / "o"
    assert _create(out, "--devices", "2") == 0
    doc = json.loads((out / "fleet.json").read_text())
    del doc["settings"]["bind_addresses"], doc["settings"]["broker_user"]
    (out / "fleet.json").write_text(json.dumps(doc))
    assert _run("--out", str(out), "--revoke", "dev-0002") == 0
    assert "\nlistener 8883\n" in (out / "brokers" / "g1" / "mosquitto.conf").read_text()
