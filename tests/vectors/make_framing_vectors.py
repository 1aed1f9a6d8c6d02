"""Regenerate tests/vectors/framing.json (known-answer vectors for frames and the field codec).

Run from the repository root: `python tests/vectors/make_framing_vectors.py`. Only rerun on a deliberate
format change (and bump FORMAT_VERSION then): the test asserts the checked-in bytes, not this script's output.
Ed25519 signatures are deterministic (RFC 8032), so a fixed seed gives fixed frames.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fl_protocol.message_types import MessageType
from fl_protocol.wire.fields import encode_fields
from fl_protocol.wire.framing import FrameHeader, encode_frame

SEED = bytes(range(32))
OUT = Path(__file__).with_name("framing.json")


def _fields_cases() -> list[tuple[str, dict[str, object]]]:
    return [
        ("empty", {}),
        ("scalars", {"a": None, "b": True, "c": False, "d": -129, "e": 1.5, "f": "héllo", "g": b"\x00\xff"}),
        ("big_int", {"share": 2**255 - 19, "neg": -(2**127)}),
        ("array", {"v": np.arange(6, dtype=np.uint16).reshape(2, 3), "w": np.array([0.5, -2.0], np.float32)}),
        ("nested", {"z": [1, [2, {"k": "v"}]], "m": {"y": [], "x": {}}}),
    ]


def main() -> None:
    """Write the vectors file."""
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    frame_cases = [
        (FrameHeader("fleet-a", 7, "dev-001", MessageType.STATUS, 1_790_000_000_000), b""),
        (
            FrameHeader(
                "fleet-a", 7, "dev-001", MessageType.MASKED_UPDATE, 1_790_000_000_123, "ring(ring_bits=16)"
            ),
            bytes(range(40)),
        ),
        (
            FrameHeader("fleet-a", 2**40, "gw-1", MessageType.ABORT, 0),
            encode_fields({"round_id": 2**40, "reason": "below threshold"}),
        ),
    ]
    document = {
        "description": "fedlora frame + field codec known-answer vectors; see docs/wire-format.md",
        "ed25519_seed_hex": SEED.hex(),
        "ed25519_public_hex": public.hex(),
        "frames": [
            {
                "header": {**header.to_fields()},
                "body_hex": body.hex(),
                "frame_hex": encode_frame(header, body, key).hex(),
            }
            for header, body in frame_cases
        ],
        "fields": [
            {"name": name, "encoded_hex": encode_fields(case).hex()} for name, case in _fields_cases()
        ],  # type: ignore[arg-type]
    }
    OUT.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
