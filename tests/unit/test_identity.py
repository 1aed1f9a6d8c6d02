"""NodeIdentity: signatures bind the sender; wrong fleet, wrong sender and unknown keys are refused."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fl_protocol.errors import DecodeError
from fl_protocol.identity import NodeIdentity
from fl_protocol.wire.messages import Status


def _keys(*names: str) -> dict[str, Ed25519PrivateKey]:
    return {n: Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32) for i, n in enumerate(names)}


def _identity(name: str, fleet: str, keys: dict[str, Ed25519PrivateKey]) -> NodeIdentity:
    return NodeIdentity(name, fleet, keys[name], {n: k.public_key() for n, k in keys.items()}, lambda: 42)


def test_round_trip_and_sender_checks() -> None:
    keys = _keys("cloud", "dev-1", "dev-2")
    cloud, dev = _identity("cloud", "f", keys), _identity("dev-1", "f", keys)
    status = Status("dev-1", "idle", "", 42, {"round": 3, "backend": "ort"})
    frame = dev.encode(status, round_id=0)
    header, decoded = cloud.decode(frame, Status, senders={"dev-1"})
    assert decoded == status and header.sender == "dev-1" and header.created_ms == 42
    with pytest.raises(DecodeError, match="invalid message"):
        cloud.decode(frame, Status, senders={"cloud"})  # valid signature, wrong role


def test_other_fleet_and_unknown_key_refused() -> None:
    keys = _keys("cloud", "dev-1")
    other_fleet = _identity("dev-1", "other", keys)
    with pytest.raises(DecodeError, match="invalid message"):
        _identity("cloud", "f", keys).decode(
            other_fleet.encode(Status("dev-1", "idle", "", 1), round_id=0), Status
        )
    stranger = NodeIdentity("dev-9", "f", Ed25519PrivateKey.generate(), {})
    with pytest.raises(DecodeError, match="invalid message"):
        _identity("cloud", "f", keys).decode(
            stranger.encode(Status("dev-9", "idle", "", 1), round_id=0), Status
        )
