"""Ed25519 identity keys: the application-layer identity every node signs its frames with (docs/design.md §8).

Independent of the TLS key: the broker authenticates the transport hop, the Ed25519 signature
authenticates the sender end to end, through bridges and gateways.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def generate_signing_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 identity key from the OS CSPRNG."""
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM (the `signing.key` file of a node bundle)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_hex(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The 32-byte raw public key in lowercase hex, the form used in fleet_keys.json."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def load_private_key_pem(data: bytes) -> Ed25519PrivateKey:
    """Load a `signing.key` file; raises ValueError if it is not an Ed25519 key."""
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key
