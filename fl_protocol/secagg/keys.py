"""Key material for SecAgg+: X25519 key pairs, HKDF-SHA256 derivations, share encryption, Ed25519 helpers.

This module is the only place in `fl_protocol.secagg` that touches `cryptography.hazmat` for keys: the
rest of the package calls the intent-level functions below (`derive_pair_seed`, `encrypt_share`, ...).
Every derivation binds its purpose, the fleet, the round and the ordered pair of node ids into the HKDF
info string (length-prefixed, so no two different tuples encode alike).
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fl_protocol.errors import DecodeError

logger = logging.getLogger(__name__)

KEY_BYTES = 32
SEED_BYTES = 32
NONCE_BYTES = 12
SIGNATURE_BYTES = 64
_DOMAIN = b"fedlora/secagg/v1"

RngBytes = Callable[[int], bytes]


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair kept as raw 32-byte strings (raw bytes make state easy to reason about)."""

    private_bytes: bytes
    public_bytes: bytes

    def __repr__(self) -> str:  # never print private key material
        return f"KeyPair(public={self.public_bytes.hex()[:16]}...)"


def generate_key_pair(rng_bytes: RngBytes = os.urandom) -> KeyPair:
    """Create an X25519 key pair from 32 bytes of injected randomness (os.urandom in production)."""
    raw = rng_bytes(KEY_BYTES)
    if len(raw) != KEY_BYTES:
        raise ValueError("rng_bytes returned the wrong length")
    private = X25519PrivateKey.from_private_bytes(raw)
    return KeyPair(private_bytes=_private_raw(private), public_bytes=_public_raw(private.public_key()))


def public_from_private(private_bytes: bytes) -> bytes:
    """Return the X25519 public key of a raw private key (used to check reconstructed s_sk)."""
    return _public_raw(_load_private(private_bytes).public_key())


def derive_pair_seed(
    s_private: bytes, peer_s_public: bytes, *, fleet: str, round_id: int, node_a: str, node_b: str
) -> bytes:
    """Derive the 32-byte pairwise mask seed shared by nodes a and b (order-independent).

    The pair is sorted before it enters the info string, so both ends derive the same seed.
    """
    low, high = sorted((node_a, node_b))
    shared = _exchange(s_private, peer_s_public)
    return _hkdf(shared, _info(b"pair-mask-seed", fleet, round_id, low, high))


def derive_share_key(
    c_private: bytes, peer_c_public: bytes, *, fleet: str, round_id: int, src: str, dst: str
) -> bytes:
    """Derive the AES-256-GCM key for shares sent from `src` to `dst` (direction-specific)."""
    shared = _exchange(c_private, peer_c_public)
    return _hkdf(shared, _info(b"share-key", fleet, round_id, src, dst))


def share_associated_data(fleet: str, round_id: int, src: str, dst: str) -> bytes:
    """Associated data binding an encrypted share to (fleet, round, src, dst)."""
    return _info(b"share-ad", fleet, round_id, src, dst)


def encrypt_share(key: bytes, plaintext: bytes, associated_data: bytes, rng_bytes: RngBytes) -> bytes:
    """AES-256-GCM encrypt; returns nonce || ciphertext || tag. The nonce comes from `rng_bytes`."""
    if len(key) != KEY_BYTES:
        raise ValueError("share key must be 32 bytes")
    nonce = rng_bytes(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError("rng_bytes returned the wrong length")
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data)


def decrypt_share(key: bytes, blob: bytes, associated_data: bytes) -> bytes:
    """Reverse `encrypt_share`. Any failure (length, tag, binding) raises an opaque DecodeError."""
    if len(key) != KEY_BYTES or len(blob) < NONCE_BYTES + 16:
        raise DecodeError()
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated_data)
    except InvalidTag:
        raise DecodeError() from None


def advertise_statement(fleet: str, round_id: int, node_id: str, c_public: bytes, s_public: bytes) -> bytes:
    """Bytes an advertising node signs: binds its two X25519 public keys to fleet, round and id."""
    return _info(b"advertise", fleet, round_id, node_id, "") + _lp(c_public) + _lp(s_public)


def consistency_statement(fleet: str, round_id: int, survivors: Sequence[str], model_hash: bytes) -> bytes:
    """Bytes a survivor signs in the consistency round: (fleet, round, sorted survivors, model hash)."""
    body = b"".join(_lp(node.encode()) for node in sorted(survivors))
    return (
        _info(b"consistency", fleet, round_id, "", "")
        + struct.pack(">I", len(survivors))
        + body
        + _lp(model_hash)
    )


def self_mask_commitment(b_seed: bytes, *, fleet: str, round_id: int, node: str) -> bytes:
    """SHA-256 commitment to a node's 32-byte self-mask seed b_u, bound to (fleet, round, node).

    Sent in the node's signed ShareKeys before it masks; the gateway accepts a reconstructed b_u only
    if it matches (docs/secure-aggregation.md, "Verifiable unmasking"). b_u is 256 uniformly random
    bits, so the hash hides it (no salt needed).
    """
    if len(b_seed) != SEED_BYTES:
        raise ValueError("self-mask seed must be 32 bytes")
    digest = hashes.Hash(hashes.SHA256())
    digest.update(_info(b"self-mask-commitment", fleet, round_id, node, "") + _lp(b_seed))
    return digest.finalize()


def sign(identity_key: Ed25519PrivateKey, statement: bytes) -> bytes:
    """Ed25519 signature of a statement built by one of the `*_statement` functions."""
    return identity_key.sign(statement)


def verify(public_key: Ed25519PublicKey | None, signature: bytes, statement: bytes) -> bool:
    """True iff `signature` is a valid Ed25519 signature of `statement` under `public_key`."""
    if public_key is None or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        public_key.verify(signature, statement)
    except InvalidSignature:
        return False
    return True


def check_public_key(raw: bytes) -> bool:
    """True iff `raw` is 32 bytes that load as an X25519 public key."""
    if len(raw) != KEY_BYTES:
        return False
    try:
        X25519PublicKey.from_public_bytes(raw)
    except ValueError:
        return False
    return True


def _exchange(private_bytes: bytes, peer_public: bytes) -> bytes:
    try:
        peer = X25519PublicKey.from_public_bytes(peer_public)
        return _load_private(private_bytes).exchange(peer)
    except ValueError:  # wrong length or an all-zero shared secret (low-order point)
        raise DecodeError() from None


def _hkdf(shared: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(shared)


def _lp(data: bytes) -> bytes:
    """Length-prefix (u32 big-endian) so concatenations are unambiguous."""
    return struct.pack(">I", len(data)) + data


def _info(purpose: bytes, fleet: str, round_id: int, first: str, second: str) -> bytes:
    if round_id < 0 or round_id >= 2**64:
        raise ValueError("round_id out of range")
    return (
        _lp(_DOMAIN)
        + _lp(purpose)
        + _lp(fleet.encode())
        + struct.pack(">Q", round_id)
        + _lp(first.encode())
        + _lp(second.encode())
    )


def _load_private(private_bytes: bytes) -> X25519PrivateKey:
    if len(private_bytes) != KEY_BYTES:
        raise ValueError("X25519 private key must be 32 bytes")
    return X25519PrivateKey.from_private_bytes(private_bytes)


def _private_raw(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def _public_raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
