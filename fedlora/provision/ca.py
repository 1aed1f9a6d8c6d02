"""The fleet certificate authority: ECDSA P-256 CA, node/broker TLS certificates and the CRL.

P-256 rather than Ed25519 because every TLS stack on the fleet (mosquitto's OpenSSL, paho's `ssl`,
embedded clients) accepts ECDSA P-256 certificates; this is the only module that touches `hazmat`
for X.509. Client certificates carry the `clientAuth` extended key usage only and broker certificates
`serverAuth` only, so a stolen broker key cannot log in as a client and vice versa.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger(__name__)

_CLOCK_SKEW = dt.timedelta(minutes=5)  # notBefore backdated so slightly-late device clocks still accept


@dataclass(frozen=True)
class IssuedCert:
    """A private key and the certificate issued for it."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def serial(self) -> int:
        """The certificate serial number, recorded so the certificate can be revoked later."""
        return self.cert.serial_number

    def cert_pem(self) -> bytes:
        """The certificate in PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (OpenSSL/mosquitto read it without a passphrase)."""
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


# ECDSA end-entity keys sign (TLS 1.3 CertificateVerify) and may do ECDH (static-key TLS 1.2 suites).
_END_ENTITY_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=True,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def create_ca(fleet: str, *, valid_days: int) -> IssuedCert:
    """Create a self-signed fleet CA (ECDSA P-256, path length 0: it signs only end-entity certs)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedlora"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"fedlora fleet CA {fleet}"),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    logger.info("created fleet CA for %s, serial %x", fleet, cert.serial_number)
    return IssuedCert(key=key, cert=cert)


def _san(hostnames: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in hostnames:
        if host in seen:
            continue
        seen.add(host)
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


def issue_cert(
    ca: IssuedCert, common_name: str, *, server: bool, hostnames: Iterable[str] = (), valid_days: int
) -> IssuedCert:
    """Issue an end-entity certificate with CN = `common_name` (the node id, which mosquitto's
    `use_identity_as_username` turns into the MQTT username).

    `server=True` gives a broker certificate (serverAuth, SAN = `hostnames`); otherwise a client
    certificate (clientAuth). Validity is capped at the CA's own expiry.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    not_after = min(now + dt.timedelta(days=valid_days), ca.cert.not_valid_after_utc)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_END_ENTITY_KEY_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    names = list(hostnames)
    if names:
        builder = builder.add_extension(_san(names), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    logger.info(
        "issued %s certificate CN=%s serial %x",
        "server" if server else "client",
        common_name,
        cert.serial_number,
    )
    return IssuedCert(key=key, cert=cert)


def build_crl(ca: IssuedCert, revoked: Mapping[int, dt.datetime], *, valid_days: int) -> bytes:
    """Build the CA's certificate revocation list (PEM) from serial -> revocation time.

    OpenSSL (mosquitto's `crlfile`) refuses every client once the CRL's nextUpdate has passed, so
    `valid_days` must cover the time until the operator will next regenerate it (docs/provisioning.md).
    """
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - _CLOCK_SKEW)
        .next_update(now + dt.timedelta(days=valid_days))
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False)
    )
    for serial, when in sorted(revoked.items()):
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(ca.key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.PEM)


def load_ca(cert_pem: bytes, key_pem: bytes) -> IssuedCert:
    """Load the CA from its PEM certificate and (unencrypted PKCS#8) key, checking they belong together."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("CA key is not an ECDSA key")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise ValueError("CA key does not match ca.crt")
    return IssuedCert(key=key, cert=cert)
