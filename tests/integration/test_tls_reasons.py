"""A node says why TLS failed (issue 12, finding 6): before, a device whose clock was two days behind logged
only "no connection to mqtt broker ... after 6 s". Real mosquitto, certificates from fedlora's CA module."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

import fedlora.provision.ca as ca_module
from fedlora.provision.ca import IssuedCert, build_crl, create_ca, issue_cert
from fl_transport.mqtt import MqttConnection, MqttSettings, TransportError
from tests.integration.mosquitto_fixture import HOST, free_port, start_mosquitto

pytestmark = pytest.mark.integration


def _issue_at(
    monkeypatch: pytest.MonkeyPatch, shift: dt.timedelta, issue: Callable[[], IssuedCert]
) -> IssuedCert:
    """Issue a certificate as if the clock were `shift` away from now (validity = [now+shift-5min, ...])."""
    real_now = ca_module._now
    with monkeypatch.context() as m:
        m.setattr(ca_module, "_now", lambda: real_now() + shift)
        return issue()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


class Fleet:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = create_ca("f1", valid_days=30)
        self.other_ca = create_ca("other", valid_days=30)
        _write(root / "ca.crt", self.ca.cert_pem())
        _write(root / "crl.pem", build_crl(self.ca, {}, valid_days=30))

    def broker(self, server: IssuedCert, *, revoked: IssuedCert | None = None):
        _write(self.root / "server.crt", server.cert_pem())
        _write(self.root / "server.key", server.key_pem())
        if revoked is not None:
            when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
            _write(self.root / "crl.pem", build_crl(self.ca, {revoked.serial: when}, valid_days=30))
        port = free_port()
        conf = (
            f"listener {port} {HOST}\ncafile {self.root}/ca.crt\ncertfile {self.root}/server.crt\n"
            f"keyfile {self.root}/server.key\ncrlfile {self.root}/crl.pem\nrequire_certificate true\n"
            "use_identity_as_username true\nallow_anonymous false\n"
        )
        return start_mosquitto(conf, port, workdir=self.root), port

    def node(self, port: int, client: IssuedCert) -> MqttConnection:
        cert = _write(self.root / "node.crt", client.cert_pem())
        key = _write(self.root / "node.key", client.key_pem())
        settings = MqttSettings(
            HOST, port, "dev-1", ca_file=self.root / "ca.crt", cert_file=cert, key_file=key, reconnect_min_s=1
        )
        return MqttConnection(settings, lambda _t, _p: None)


def _server(ca: IssuedCert, host: str = HOST, **kw: int) -> IssuedCert:
    return issue_cert(ca, "broker", server=True, hostnames=[host], valid_days=kw.get("days", 10))


def _client(ca: IssuedCert, name: str = "dev-1") -> IssuedCert:
    return issue_cert(ca, name, server=False, valid_days=10)


def _reason_of(fleet: Fleet, port: int, client: IssuedCert, caplog: pytest.LogCaptureFixture) -> str:
    conn = fleet.node(port, client)
    with caplog.at_level(logging.WARNING, logger="fl_transport"):
        conn.start()
        try:
            with pytest.raises(TransportError, match="no connection to mqtt broker") as info:
                conn.wait_connected(2.5)
        finally:
            conn.stop()
    warnings = [r.getMessage() for r in caplog.records if r.name == "fl_transport.tls"]
    assert warnings, "no TLS reason logged at the node"
    assert len(warnings) == len(set(warnings)), "each reason is logged once per outage, not per retry"
    assert warnings[-1].split(": ", 1)[1] in str(info.value)
    return str(info.value)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("broker_not_yet_valid", "not yet valid"),
        ("broker_expired", "has expired"),
        ("broker_other_ca", "unknown CA"),
        ("broker_wrong_host", "hostname mismatch"),
        ("node_other_ca", "refused this node's certificate"),
        ("node_expired", "refused this node's certificate"),
        ("node_revoked", "revoked"),
    ],
)
def test_node_logs_why_tls_failed(
    case: str,
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fleet = Fleet(tmp_path)
    server, client = _server(fleet.ca), _client(fleet.ca)
    revoked = None
    if case == "broker_not_yet_valid":  # the device's clock is two days behind the broker's certificate
        server = _issue_at(monkeypatch, dt.timedelta(days=2), lambda: _server(fleet.ca))
    elif case == "broker_expired":
        server = _issue_at(monkeypatch, dt.timedelta(days=-12), lambda: _server(fleet.ca, days=2))
    elif case == "broker_other_ca":
        server = _server(fleet.other_ca)
    elif case == "broker_wrong_host":
        server = _server(fleet.ca, host="broker.example.org")
    elif case == "node_other_ca":
        client = _client(fleet.other_ca)
    elif case == "node_expired":
        client = _issue_at(monkeypatch, dt.timedelta(days=-12), lambda: _client(fleet.ca))
    elif case == "node_revoked":
        revoked = client
    broker, port = fleet.broker(server, revoked=revoked)
    try:
        message = _reason_of(fleet, port, client, caplog)
    finally:
        broker.stop()
    assert expected in message, message


def test_valid_certificates_connect(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    broker, port = fleet.broker(_server(fleet.ca))
    conn = fleet.node(port, _client(fleet.ca))
    try:
        conn.start()
        conn.wait_connected(10)
    finally:
        conn.stop()
        broker.stop()
