"""Test fleets: deterministic node identities and keys, fleet_keys.json, and clocks.

A node's key is derived from its name (`signing_key`), so every test and every process of one test
agrees on it without passing keys around. `write_fleet` writes what the roles read from disk
(fleet_keys.json in the format `fedlora provision` writes, and the signer's PKCS#8 PEM key).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fl_protocol.identity import NodeIdentity

FLEET = "testfleet"
GATEWAY = "gw-1"
CLOUD = "cloud"


def signing_key(name: str) -> Ed25519PrivateKey:
    """The deterministic Ed25519 identity key of node `name` (SHA-256 of "test-key/" + name as seed)."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"test-key/" + name.encode()).digest())


def public_keys(names: Iterable[str]) -> dict[str, Ed25519PublicKey]:
    """Verification keys of `names` (a key directory: `public_keys(...).get` is a `verify_key`)."""
    return {name: signing_key(name).public_key() for name in names}


def wall_clock_ms() -> int:
    """Milliseconds since the epoch: the clock of nodes that talk to real processes."""
    return int(time.time() * 1000)


class ManualClock:
    """A clock in milliseconds that moves only when the test sets `now_ms`; call it to read it."""

    def __init__(self, now_ms: int = 1_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def identity(
    name: str,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    fleet: str = FLEET,
    clock_ms: Callable[[], int] | None = None,
) -> NodeIdentity:
    """Node `name` of `fleet` signing with `signing_key(name)` and verifying with `keys`; frames carry
    `clock_ms()` as their creation time (None: NodeIdentity's default, 0)."""
    if clock_ms is None:
        return NodeIdentity(name, fleet, signing_key(name), dict(keys))
    return NodeIdentity(name, fleet, signing_key(name), dict(keys), clock_ms)


@dataclass(frozen=True)
class Role:
    """A node's entry in fleet_keys.json: its role and, for a device, its gateway."""

    role: str
    gateway: str | None = None


def device(gateway: str | None) -> Role:
    """The fleet_keys.json entry of a device attached to `gateway` (None: attached to none)."""
    return Role("device", gateway)


def write_fleet(
    root: Path,
    roles: Mapping[str, Role],
    *,
    fleet: str,
    signer: str | None = None,
    key_file: str = "signing.key",
) -> dict[str, Ed25519PrivateKey]:
    """Write `root`/fleet_keys.json for the nodes of `roles` and, if `signer` is given, that node's
    private key as unencrypted PKCS#8 PEM in `root`/`key_file`; returns every node's private key."""
    keys = {name: signing_key(name) for name in roles}
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    nodes = {
        name: {
            "role": role.role,
            "gateway": role.gateway,
            "ed25519_public_key": keys[name].public_key().public_bytes(*raw).hex(),
        }
        for name, role in roles.items()
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "fleet_keys.json").write_text(json.dumps({"format": 1, "fleet": fleet, "nodes": nodes}))
    if signer is not None:
        write_signing_key(root / key_file, signer)
    return keys


def write_signing_key(path: Path, name: str) -> Path:
    """Write node `name`'s private key to `path` as unencrypted PKCS#8 PEM; returns `path`."""
    pem = signing_key(name).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    return path
