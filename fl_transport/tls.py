"""TLS for the MQTT connection, with the reason of a failed handshake logged at the node.

paho swallows the exception of a failed connection attempt and just retries, so a device whose clock is
two days behind would only ever say "no connection". The SSL context built here uses a socket class that
records every TLS error (`ssl.SSLContext.sslsocket_class`, a documented hook) on the handshake and on reads
(with TLS 1.3 the broker's rejection of *our* certificate arrives after the handshake, as an alert), turns
it into words (expired, not yet valid, unknown CA, revoked, hostname mismatch) and logs each distinct reason
once per outage at WARNING. `last_reason` is also put into the "no connection" error.
"""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# OpenSSL X509_V_ERR_* codes of a broker certificate we refuse.
_VERIFY_REASONS = {
    9: "the broker's certificate is not yet valid (is this node's clock behind?)",
    10: "the broker's certificate has expired (or this node's clock is ahead)",
    2: "the broker's certificate is from an unknown CA (not the fleet CA in ca_file)",
    18: "the broker's certificate is self-signed and not the fleet CA (unknown CA)",
    19: "the broker's certificate chain ends at an unknown CA (not the fleet CA in ca_file)",
    20: "the broker's certificate is from an unknown CA (not the fleet CA in ca_file)",
    21: "the broker's certificate is from an unknown CA (not the fleet CA in ca_file)",
    23: "the broker's certificate is revoked",
    62: "the broker's certificate does not name the host we connect to (hostname mismatch)",
    64: "the broker's certificate does not name the IP address we connect to (hostname mismatch)",
}
# TLS alerts the broker sends when it refuses this node's certificate.
_ALERT_REASONS = {
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the broker refused this node's certificate: expired or not yet valid",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "the broker refused this node's certificate: revoked",
    "TLSV1_ALERT_UNKNOWN_CA": "the broker refused this node's certificate: unknown CA (another fleet?)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the broker refused this node's certificate (bad certificate)",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "the broker refused this node's certificate (unsupported)",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the broker refused this node's certificate (certificate unknown)",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the broker requires a client certificate and got none",
    "TLSV1_ALERT_DECRYPT_ERROR": "the broker could not verify this node's certificate key",
}


def describe_tls_error(exc: BaseException) -> str:
    """Plain-words reason of a TLS failure (falls back to OpenSSL's own text)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        text = _VERIFY_REASONS.get(code) if isinstance(code, int) else None
        return f"TLS: {text or exc.verify_message or exc}"
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason in _ALERT_REASONS:
        return f"TLS: {_ALERT_REASONS[reason]}"
    return f"TLS: {reason or exc}"


class TlsDiagnostics:
    """Builds the SSL context and remembers the last TLS failure of one connection."""

    def __init__(self, where: str) -> None:
        self._where = where
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._logged: set[str] = set()

    @property
    def last_reason(self) -> str | None:
        """Reason of the last TLS failure since the last successful connection, or None."""
        with self._lock:
            return self._reason

    def connected(self) -> None:
        """The broker accepted us: forget the outage, so a new failure is logged again."""
        with self._lock:
            self._reason = None
            self._logged.clear()

    def record(self, exc: BaseException) -> None:
        """Remember (and log once per outage) a TLS failure."""
        reason = describe_tls_error(exc)
        with self._lock:
            self._reason = reason
            first = reason not in self._logged
            self._logged.add(reason)
        if first:
            logger.warning("mqtt broker %s: %s", self._where, reason)

    def context(self, ca_file: Path, cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext:
        """Client context: fleet CA, hostname check, optional client certificate, failures recorded."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=str(ca_file))
        if cert_file is not None:
            context.load_cert_chain(str(cert_file), None if key_file is None else str(key_file))
        context.sslsocket_class = _recording_socket_class(self)
        return context


def _recording_socket_class(diagnostics: TlsDiagnostics) -> type[ssl.SSLSocket]:
    class RecordingSSLSocket(ssl.SSLSocket):
        def do_handshake(self, *args: Any, **kwargs: Any) -> None:
            try:
                super().do_handshake(*args, **kwargs)
            except ssl.SSLError as exc:
                if not isinstance(exc, (ssl.SSLWantReadError, ssl.SSLWantWriteError)):
                    diagnostics.record(exc)
                raise

        def recv(self, *args: Any, **kwargs: Any) -> bytes:
            try:
                return super().recv(*args, **kwargs)
            except ssl.SSLError as exc:
                if not isinstance(exc, (ssl.SSLWantReadError, ssl.SSLWantWriteError)):
                    diagnostics.record(exc)
                raise

    return RecordingSSLSocket
