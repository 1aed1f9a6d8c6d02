"""Checks of the node's identity and connectivity: config, certificates against the clock, the broker
(TCP, mutual TLS and the broker's verdict on the node certificate), and the privacy ledger."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import ssl
import threading
from pathlib import Path
from typing import cast

from hardware_tests.context import DiagContext
from hardware_tests.result import CheckResult, failed, passed, skipped, warned

logger = logging.getLogger(__name__)

CERT_WARN_DAYS = 30.0
BUDGET_WARN_FRACTION = 0.9  # warn once a tier has spent this share of its ε budget
VERDICT_WAIT_S = 1.0  # how long the broker gets to refuse the node certificate after the handshake
_DAY_S = 86400.0


def check_config(ctx: DiagContext) -> CheckResult:
    """The device config loads (strict: unknown keys are errors); skip when none was given."""
    if ctx.config_path is None:
        return skipped("config", "no device config given (--config); config-dependent checks skip")
    if ctx.config is None:
        return failed("config", f"{ctx.config_path}: {ctx.config_error}")
    cfg = ctx.config
    return passed(
        "config",
        f"{ctx.config_path}: node {cfg.node.id} of fleet {cfg.node.fleet}, gateway {cfg.node.gateway}",
        node=cfg.node.id,
        fleet=cfg.node.fleet,
        bundle_dir=str(cfg.device.bundle_dir),
        data_dir=str(cfg.device.data_dir),
        state_dir=str(cfg.device.state_dir),
    )


def _certificates(ctx: DiagContext) -> dict[str, Path]:
    assert ctx.config is not None
    broker = ctx.config.broker
    return {name: path for name, path in (("node", broker.cert_file), ("ca", broker.ca_file)) if path}


def _validity(path: Path) -> tuple[dt.datetime, dt.datetime]:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.not_valid_before_utc, cert.not_valid_after_utc


def check_clock(ctx: DiagContext) -> CheckResult:
    """The system clock lies inside every certificate's validity (an unset clock breaks TLS)."""
    if ctx.config is None:
        return skipped("clock", "no device config: no certificate to compare the clock with")
    certs = _certificates(ctx)
    if not certs:
        return skipped("clock", "the config has no TLS certificates")
    now = dt.datetime.fromtimestamp(ctx.clock(), dt.timezone.utc)
    details: dict[str, object] = {"now": now.isoformat()}
    for name, path in certs.items():
        try:
            start, end = _validity(path)
        except (OSError, ValueError) as exc:
            return failed("clock", f"cannot read {name} certificate {path}: {exc}", **details)
        details[name] = {"not_before": start.isoformat(), "not_after": end.isoformat()}
        if now < start:
            return failed(
                "clock",
                f"clock reads {now:%Y-%m-%d %H:%M} UTC, before the {name} certificate's "
                f"notBefore {start:%Y-%m-%d %H:%M}: set the clock (NTP) or TLS will fail",
                **details,
            )
        if now > end:
            return failed(
                "clock",
                f"clock reads {now:%Y-%m-%d}, after the {name} certificate's notAfter "
                f"{end:%Y-%m-%d}: certificate expired or clock wrong",
                **details,
            )
    return passed("clock", f"{now:%Y-%m-%d %H:%M} UTC is inside every certificate's validity", **details)


def check_cert_expiry(ctx: DiagContext) -> CheckResult:
    """Days until the first certificate (node or CA) expires: warn under 30 days, fail when expired."""
    if ctx.config is None:
        return skipped("cert_expiry", "no device config")
    certs = _certificates(ctx)
    if not certs:
        return skipped("cert_expiry", "the config has no TLS certificates")
    now = ctx.clock()
    left = {}
    for name, path in certs.items():
        try:
            left[name] = round((_validity(path)[1].timestamp() - now) / _DAY_S, 1)
        except (OSError, ValueError) as exc:
            return failed("cert_expiry", f"cannot read {name} certificate {path}: {exc}")
    first = min(left, key=lambda k: left[k])
    days = left[first]
    if days <= 0:
        return failed(
            "cert_expiry", f"{first} certificate expired {-days:.0f} days ago: re-provision", days_left=left
        )
    if days < CERT_WARN_DAYS:
        return warned(
            "cert_expiry",
            f"{first} certificate expires in {days:.0f} days: re-provision soon",
            days_left=left,
        )
    return passed("cert_expiry", f"{first} certificate expires in {days:.0f} days", days_left=left)


def _tls_context(ctx: DiagContext) -> ssl.SSLContext:
    assert ctx.config is not None
    broker = ctx.config.broker
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(broker.ca_file))
    if broker.cert_file and broker.key_file:
        context.load_cert_chain(str(broker.cert_file), str(broker.key_file))
    return context


def _mqtt_connect(ctx: DiagContext, tls: bool) -> str | None:
    """One MQTT CONNECT with the node's identity; None on CONNACK success, else why it failed."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    assert ctx.config is not None
    broker, node = ctx.config.broker, ctx.config.node
    # Own client id: reusing the node id would kick the running agent off the broker.
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"{node.id}-diag-{os.getpid()}", protocol=mqtt.MQTTv311
    )
    if tls:
        client.tls_set_context(_tls_context(ctx))
    outcome: list[str | None] = []
    done = threading.Event()

    def on_connect(_c: object, _u: object, _f: object, reason: object, _p: object) -> None:
        failure = getattr(reason, "is_failure", False)
        outcome.append(f"CONNACK refused: {reason}" if failure else None)
        done.set()

    def on_disconnect(*_args: object) -> None:
        if not done.is_set():
            outcome.append("broker closed the connection before CONNACK (ACL or certificate refused?)")
            done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect(broker.host, broker.port, keepalive=10)
    except (OSError, ssl.SSLError) as exc:
        return f"connect failed: {exc}"
    client.loop_start()
    try:
        if not done.wait(ctx.broker_timeout_s):
            return f"no CONNACK within {ctx.broker_timeout_s:.0f} s"
        return outcome[0]
    finally:
        client.disconnect()
        client.loop_stop()


def _tls_probe(ctx: DiagContext, sock: socket.socket, details: dict[str, object]) -> str | None:
    """Mutual-TLS handshake, then wait briefly for the broker's verdict on our certificate (TLS 1.3
    servers check it after the handshake and answer with an alert: revoked, unknown CA, ...), then a
    clean close_notify, so the broker logs a closed connection rather than an OpenSSL "unexpected eof".
    None when the broker accepted the certificate, else why not.

    No MQTT CONNECT: the brokers bind the client id to the certificate (`use_username_as_clientid`), so a
    CONNECT with the node's certificate would displace the running agent's session."""
    assert ctx.config is not None
    host = ctx.config.broker.host
    try:
        tls_sock = _tls_context(ctx).wrap_socket(sock, server_hostname=host)
    except (OSError, ssl.SSLError, ValueError) as exc:
        return f"TLS handshake failed: {exc}"
    details["tls_version"] = tls_sock.version()
    peer = tls_sock.getpeercert() or {}
    # the subject as the ssl docs give it: a tuple of RDNs, each a tuple of (attribute, value) pairs
    subject = cast("tuple[tuple[tuple[str, str], ...], ...]", peer.get("subject", ()))
    details["broker_subject"] = dict(rdn[0] for rdn in subject)
    tls_sock.settimeout(min(VERDICT_WAIT_S, ctx.broker_timeout_s))
    problem = None
    try:
        if tls_sock.recv(1) == b"":
            problem = "the broker closed the connection after the TLS handshake"
    except TimeoutError:
        pass  # silence: the broker accepted the certificate and waits for CONNECT
    except ssl.SSLError as exc:
        why = (exc.reason or "").lower().replace("_", " ") or str(exc)  # "sslv3 alert certificate revoked"
        problem = f"the broker refused the node certificate: {why}"
    except OSError as exc:
        problem = f"the broker dropped the connection after the TLS handshake: {exc}"
    try:
        tls_sock.unwrap()
    except (OSError, ssl.SSLError, ValueError):
        pass  # already refused or closed: nothing to say goodbye to
    return problem


def check_broker(ctx: DiagContext) -> CheckResult:
    """TCP connect, then (with TLS) a mutual-TLS handshake with the node certificate and the broker's
    verdict on it; without TLS an MQTT CONNECT under a diag client id."""
    if ctx.config is None:
        return skipped("broker", "no device config: broker unknown")
    broker = ctx.config.broker
    tls = broker.ca_file is not None
    details = {"host": broker.host, "port": broker.port, "tls": tls}
    try:
        sock = socket.create_connection((broker.host, broker.port), timeout=ctx.broker_timeout_s)
    except OSError as exc:
        return failed("broker", f"cannot reach {broker.host}:{broker.port}: {exc}", **details)
    with sock:
        if tls:
            problem = _tls_probe(ctx, sock, details)
            if problem is not None:
                return failed("broker", f"{broker.host}:{broker.port}: {problem}", **details)
            return passed(
                "broker",
                f"{broker.host}:{broker.port} accepted the node certificate over mutual TLS "
                f"({details.get('tls_version')})",
                **details,
            )
    problem = _mqtt_connect(ctx, tls)
    if problem is not None:
        return failed("broker", f"MQTT CONNECT to {broker.host}:{broker.port}: {problem}", **details)
    return passed("broker", f"{broker.host}:{broker.port} accepted MQTT CONNECT over plain TCP", **details)


def check_ledger(ctx: DiagContext) -> CheckResult:
    """The privacy ledger loads (an unreadable ledger stops the agent); warn when a tier's budget is spent."""
    if ctx.config is None:
        return skipped("ledger", "no device config: state directory unknown")
    path = ctx.config.device.state_dir / "ledger.json"
    from edge_runtime.ledger import open_device_ledger

    try:
        config = ctx.config
        summary = open_device_ledger(
            config.device.state_dir, config.identity.signing_key_file, config.tiers
        ).summary()
    except Exception as exc:  # noqa: BLE001 - the ledger's own message says why (incl. a deleted ledger)
        return failed("ledger", str(exc), path=str(path))
    if not path.exists():
        return skipped("ledger", f"no ledger yet at {path} (the device has not taken part in a round)")
    spent = [t for t, s in summary.items() if s["epsilon_spent"] >= s["epsilon_budget"]]
    if spent:
        return warned(
            "ledger",
            f"privacy budget spent for tier(s) {', '.join(spent)}: those rounds are refused",
            path=str(path),
            tiers=summary,
        )
    near = {
        t: s["epsilon_spent"] / s["epsilon_budget"]
        for t, s in summary.items()
        if 0 < s["epsilon_budget"] < float("inf")
        and s["epsilon_spent"] >= BUDGET_WARN_FRACTION * s["epsilon_budget"]
    }
    if near:
        shares = ", ".join(f"{t} {100 * share:.1f}%" for t, share in sorted(near.items()))
        return warned(
            "ledger",
            f"privacy budget nearly spent ({shares} of ε): rounds of those tiers will soon be refused",
            path=str(path),
            tiers=summary,
        )
    return passed("ledger", f"readable, {len(summary)} tier(s) charged", path=str(path), tiers=summary)
