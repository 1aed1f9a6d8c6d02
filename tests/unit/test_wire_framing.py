"""Frames: round trip, signature binding, strictness, known-answer vectors (tests/vectors/framing.json)."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fl_protocol.errors import ConfigError, DecodeError
from fl_protocol.message_types import MessageType
from fl_protocol.wire.fields import decode_fields, encode_fields
from fl_protocol.wire.framing import (
    MIN_FRAME_BYTES,
    FrameHeader,
    decode_frame,
    encode_frame,
    peek_header,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
HEADER = FrameHeader(
    "fleet-a", 3, "dev-1", MessageType.MASKED_UPDATE, 1_700_000_000_000, "ring(ring_bits=16)"
)


def _keys(**named: Ed25519PrivateKey):  # type: ignore[no-untyped-def]
    public = {name: key.public_key() for name, key in named.items()}
    return public.get


def test_round_trip_returns_header_and_body() -> None:
    frame = encode_frame(HEADER, b"payload", KEY)
    assert decode_frame(frame, verify_key=_keys(**{"dev-1": KEY})) == (HEADER, b"payload")
    assert peek_header(frame) == HEADER


def test_wrong_key_unknown_sender_and_other_sender_key_are_rejected() -> None:
    frame = encode_frame(HEADER, b"x", KEY)
    other = Ed25519PrivateKey.from_private_bytes(b"\x08" * 32)
    with pytest.raises(DecodeError, match="invalid message"):
        decode_frame(frame, verify_key=_keys(**{"dev-1": other}))
    with pytest.raises(DecodeError, match="invalid message"):
        decode_frame(frame, verify_key=_keys(**{"dev-2": KEY}))
    # Signed by dev-2's key but claiming to be dev-1: the lookup binds the sender field to its own key.
    forged = encode_frame(HEADER, b"x", other)
    with pytest.raises(DecodeError, match="invalid message"):
        decode_frame(forged, verify_key=_keys(**{"dev-1": KEY, "dev-2": other}))


def test_signature_binds_every_header_field() -> None:
    """Splicing another header onto a valid body+signature fails: the signature covers the header."""
    frame = encode_frame(HEADER, b"body", KEY)
    signature = frame[-64:]
    for change in (
        {"fleet": "fleet-b"},
        {"round_id": 4},
        {"message_type": MessageType.SHARE_KEYS},
        {"created_ms": 1},
        {"codec_chain": ""},
    ):
        fields = {**HEADER.__dict__, **change}
        spliced = encode_frame(FrameHeader(**fields), b"body", KEY)[:-64] + signature
        with pytest.raises(DecodeError, match="invalid message"):
            decode_frame(spliced, verify_key=_keys(**{"dev-1": KEY}))


def test_size_limits_and_trailing_data() -> None:
    frame = encode_frame(HEADER, b"y" * 100, KEY)
    verify = _keys(**{"dev-1": KEY})
    with pytest.raises(DecodeError, match="invalid message"):
        decode_frame(frame, verify_key=verify, max_frame_bytes=len(frame) - 1)
    with pytest.raises(DecodeError, match="invalid message"):
        decode_frame(frame + b"\x00", verify_key=verify)
    with pytest.raises(DecodeError, match="invalid message"):
        decode_frame(frame[: MIN_FRAME_BYTES - 1], verify_key=verify)
    with pytest.raises(DecodeError, match="invalid message"):
        peek_header(b"")


def test_declared_header_length_beyond_data_is_rejected_before_use() -> None:
    frame = bytearray(encode_frame(HEADER, b"", KEY))
    struct.pack_into("<I", frame, 6, 0xFFFFFFFF)
    with pytest.raises(DecodeError, match="invalid message"):
        peek_header(bytes(frame))


def test_type_byte_must_agree_with_header() -> None:
    frame = bytearray(encode_frame(HEADER, b"", KEY))
    frame[5] = MessageType.SHARE_KEYS
    with pytest.raises(DecodeError, match="invalid message"):
        peek_header(bytes(frame))


def test_header_validation() -> None:
    with pytest.raises(ConfigError, match=r"fleet and sender must be valid ids \(\[A-Za-z0-9_\.-\], 1\.\.64"):
        FrameHeader("fleet/a", 1, "dev", MessageType.STATUS, 0)
    with pytest.raises(ConfigError, match=r"round_id must be an int in \[0, 2\^63\)"):
        FrameHeader("fleet", -1, "dev", MessageType.STATUS, 0)
    with pytest.raises(ConfigError, match="unknown message_type"):
        FrameHeader("fleet", 1, "dev", 99, 0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"fleet and sender must be valid ids \(\[A-Za-z0-9_\.-\], 1\.\.64"):
        FrameHeader("fleet", 1, "dev+", MessageType.STATUS, 0)
    assert FrameHeader("f", 1, "d", 40, 0).message_type is MessageType.STATUS  # type: ignore[arg-type]


def test_known_answer_frames() -> None:
    vectors = json.loads((VECTORS / "framing.json").read_text())
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vectors["ed25519_seed_hex"]))
    public_raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert public_raw.hex() == vectors["ed25519_public_hex"]
    assert len(vectors["frames"]) >= 3
    for case in vectors["frames"]:
        header = FrameHeader(**case["header"])
        body = bytes.fromhex(case["body_hex"])
        frame = encode_frame(header, body, key)
        assert frame.hex() == case["frame_hex"]
        assert decode_frame(
            frame, verify_key=lambda s, k=key, h=header: k.public_key() if s == h.sender else None
        ) == (
            header,
            body,
        )


def _generator_cases() -> dict[str, dict[str, object]]:
    spec = importlib.util.spec_from_file_location("make_framing_vectors", VECTORS / "make_framing_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module._fields_cases())


def test_known_answer_fields() -> None:
    vectors = json.loads((VECTORS / "framing.json").read_text())
    cases = _generator_cases()
    assert {c["name"] for c in vectors["fields"]} == set(cases)
    for case in vectors["fields"]:
        raw = bytes.fromhex(case["encoded_hex"])
        assert encode_fields(cases[case["name"]]) == raw  # type: ignore[arg-type]
        decoded = decode_fields(raw)
        assert encode_fields(decoded) == raw
    array_case = decode_fields(
        bytes.fromhex(next(c for c in vectors["fields"] if c["name"] == "array")["encoded_hex"])
    )
    assert isinstance(array_case["v"], np.ndarray)
    assert array_case["v"].dtype == np.uint16 and array_case["v"].shape == (2, 3)
