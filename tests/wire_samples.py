"""One valid sample of every wire message type, and helpers to frame raw (unvalidated) bodies.

Shared by the wire limit and fuzz tests: `raw_frame` signs any field mapping, so a test can put values the
message classes would refuse to build (2**1100 in a float field, a million empty lists) into a correctly
signed frame, exactly as a hostile but provisioned node could.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fl_protocol.codec.downlink import quantize_delta
from fl_protocol.secagg import messages as secagg
from fl_protocol.wire import (
    GlobalModel,
    GlobalModelDelta,
    PartialAggregate,
    PlainUpdate,
    Status,
)
from fl_protocol.wire.fields import encode_fields
from fl_protocol.wire.framing import FrameHeader, encode_frame
from tests.kit.tasks import wire_task

KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
SENDER, FLEET, ROUND = "node-1", "fleet", 3


def verify_key(sender: str) -> Ed25519PublicKey | None:
    """The sample fleet's key directory: only SENDER is known."""
    return KEY.public_key() if sender == SENDER else None


def samples() -> list[Any]:
    """One valid message of every MessageType (plain and secure-aggregation), all of round ROUND."""
    advert = secagg.AdvertiseKeys(ROUND, SENDER, bytes(range(32)), bytes(range(1, 33)), bytes(64))
    other = secagg.AdvertiseKeys(ROUND, "dev-b", bytes(32), bytes(32), b"\x01" * 64)
    return [
        wire_task(round_id=ROUND),
        GlobalModel.from_vector(4, np.linspace(-1, 1, 50, dtype=np.float32)),
        GlobalModelDelta.from_quantized(
            quantize_delta(np.linspace(-0.01, 0.02, 50), bits=4, chunk=16),
            model_version=5,
            base_version=4,
            base_sha256=b"\x0b" * 32,
            model_sha256=b"\x0c" * 32,
        ),
        PartialAggregate("gw-1", ROUND, 4, np.arange(5, dtype=np.float64), 2, 2.0, ("d1", "d2")),
        PlainUpdate(ROUND, SENDER, 20, np.array([0, 1, 2**20 - 1], dtype=np.uint32)),
        Status(SENDER, "idle", "", 99, {"round": 2, "train_loss": 2.5, "backend": "ort"}),
        advert,
        secagg.Roster(ROUND, "gw", (advert, other), b"s" * 32, 1, 2, 10, 16),
        secagg.ShareKeys(ROUND, SENDER, {"dev-b": b"\x00" * 160}, b"\x05" * 32),
        secagg.RoutedShares(ROUND, "gw", "dev-b", {SENDER: b"\xff" * 160}),
        secagg.MaskedUpdate(ROUND, SENDER, 20, np.arange(7, dtype=np.uint32)),
        secagg.Survivors(ROUND, "gw", ("dev-b", SENDER)),
        secagg.ConsistencySignature(ROUND, SENDER, b"\x02" * 64),
        secagg.UnmaskRequest(ROUND, "gw", (SENDER,), ("dev-b",), {SENDER: b"\x03" * 64}),
        secagg.UnmaskShares(ROUND, SENDER, {SENDER: 2**520 + 5}, {"dev-b": 0}),
        secagg.Abort(ROUND, "gw", "fewer than t survivors"),
    ]


def raw_frame(cls: type, body: Mapping[str, Any] | bytes, *, key: Ed25519PrivateKey = KEY) -> bytes:
    """A frame of `cls.MESSAGE_TYPE` from SENDER in round ROUND whose body is `body`, unvalidated, signed
    with `key` (the sender's real key by default)."""
    header = FrameHeader(FLEET, ROUND, SENDER, cls.MESSAGE_TYPE, 123)  # type: ignore[attr-defined]
    raw = body if isinstance(body, bytes) else encode_fields(body)
    return encode_frame(header, raw, key)
