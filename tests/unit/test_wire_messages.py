"""Message dataclasses: validation, field round trips, framing with type and round binding.

The one `Abort` message is the protocol's (fl_protocol.secagg.messages; the wire package's twin is gone).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fl_protocol.codec.compress import compress_bytes, vector_sha256
from fl_protocol.errors import ConfigError, DecodeError
from fl_protocol.message_types import MessageType
from fl_protocol.secagg.messages import Abort
from fl_protocol.wire import (
    DpSettings,
    GlobalModel,
    PartialAggregate,
    PlainUpdate,
    RoundTask,
    SecAggSettings,
    Status,
    TrainingSettings,
    decode_fields,
    decode_message,
    encode_fields,
    encode_message,
)
from tests.kit.tasks import wire_task

KEY = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)


def _verify(sender: str) -> Any:
    return KEY.public_key() if sender == "node-1" else None


def _frame(message: Any, round_id: int = 5) -> bytes:
    return encode_message(
        message, fleet="fleet", round_id=round_id, sender="node-1", created_ms=123, signing_key=KEY
    )


def _messages() -> list[Any]:
    vector = np.linspace(-1, 1, 50, dtype=np.float32)
    return [
        wire_task(round_id=5),
        GlobalModel.from_vector(4, vector),
        PartialAggregate("gw-1", 5, 4, np.arange(5, dtype=np.float64), 2, 2.0, ("d1", "d2")),
        Status("node-1", "training", "", 99),
        Abort(5, "gw", "fewer than t survivors"),
        wire_task(
            round_id=5,
            secagg=SecAggSettings(threshold_fraction=0.6, neighbour_degree=0, ring_bits=20, mode="trusted"),
        ),
        PlainUpdate(5, "node-1", 20, np.array([0, 1, 2**20 - 1], dtype=np.uint32)),
    ]


@pytest.mark.parametrize("message", _messages(), ids=lambda m: type(m).__name__)
def test_fields_and_frame_round_trip(message: Any) -> None:
    kind = type(message)
    assert kind.from_fields(decode_fields(encode_fields(message.to_fields()))) == message
    header, decoded = decode_message(_frame(message), kind, verify_key=_verify)
    assert decoded == message
    assert header.message_type == kind.MESSAGE_TYPE and header.sender == "node-1"


@pytest.mark.parametrize("message", _messages(), ids=lambda m: type(m).__name__)
def test_wrong_expected_type_is_a_decode_error(message: Any) -> None:
    frame = _frame(message)
    for other in (RoundTask, GlobalModel, PartialAggregate, Status, Abort, PlainUpdate):
        if other is not type(message):
            with pytest.raises(DecodeError, match="invalid message"):
                decode_message(frame, other, verify_key=_verify)


def test_round_id_must_match_signed_header() -> None:
    with pytest.raises(ConfigError, match="message round_id differs from the frame's round_id"):
        _frame(Abort(6, "gw", "x"), round_id=5)
    # A body claiming round 6 inside a frame signed for round 5 (built by hand) is refused on decode.
    from fl_protocol.wire.framing import FrameHeader, encode_frame

    header = FrameHeader("fleet", 5, "node-1", MessageType.ABORT, 0)
    frame = encode_frame(header, encode_fields(Abort(6, "gw", "x").to_fields()), KEY)
    with pytest.raises(DecodeError, match="invalid message"):
        decode_message(frame, Abort, verify_key=_verify)


def test_body_with_unknown_or_missing_field_is_a_decode_error() -> None:
    from fl_protocol.wire.framing import FrameHeader, encode_frame

    header = FrameHeader("fleet", 5, "node-1", MessageType.ABORT, 0)
    for body in (
        {"round_id": 5, "sender": "gw", "reason": "x", "extra": 1},
        {"round_id": 5, "sender": "gw"},
        {"round_id": "5", "sender": "gw", "reason": "x"},
    ):
        frame = encode_frame(header, encode_fields(body), KEY)
        with pytest.raises(DecodeError, match="invalid message"):
            decode_message(frame, Abort, verify_key=_verify)


def test_round_task_validation() -> None:
    valid: dict[str, Any] = {
        "min_cohort": 8,
        "dp": DpSettings(
            mechanism="skellam", noise_multiplier=1.1, clip_norm=1.0, min_survivors=6, target_delta=1e-5
        ),
        "deadlines_ms": {"unmask": 5000, "advertise": 1000, "masked": 4000},
    }
    task = wire_task(**valid)
    assert list(task.deadlines_ms) == ["advertise", "masked", "unmask"]
    # each change breaks exactly one rule of an otherwise valid task, named by the message
    bad: list[tuple[dict[str, Any], str]] = [
        ({"model_sha256": b"short"}, "model_sha256 has the wrong length"),
        ({"round_id": -1}, r"round_id must be an int in \[0, "),
        ({"min_cohort": 5}, "min_cohort must be >= dp.min_survivors"),  # below dp.min_survivors = 6
        ({"dp": dataclasses.replace(task.dp, clip_norm=2.0)}, "dp.clip_norm must equal codec.clip_norm"),
        (
            {"secagg": dataclasses.replace(task.secagg, ring_bits=24)},
            "secagg.ring_bits must equal codec.ring_bits",
        ),
        ({"deadlines_ms": {"bad/stage": 1}}, "deadlines_ms key must match"),
        ({"deadlines_ms": {"advertise": -5}}, "deadlines_ms advertise must be an int"),
        ({"tier": ""}, "tier must match"),
        ({"codec": "not settings"}, "codec must be a CodecSettings"),
    ]
    for change, message in bad:
        with pytest.raises(ConfigError, match=message):
            wire_task(**{**valid, **change})


def test_settings_validation() -> None:
    with pytest.raises(ConfigError, match=r"local_steps must be an int in \[1, 1000000\]"):
        TrainingSettings(local_steps=0, batch_size=8, learning_rate=1e-3)
    with pytest.raises(ConfigError, match=r"learning_rate must be finite and in \(0\.0, inf\]"):
        TrainingSettings(local_steps=1, batch_size=8, learning_rate=float("nan"))
    with pytest.raises(ConfigError, match="mechanism must be one of gaussian, none, skellam"):
        DpSettings(
            mechanism="laplace", noise_multiplier=1.0, clip_norm=1.0, min_survivors=2, target_delta=1e-5
        )
    with pytest.raises(ConfigError, match="noise_multiplier must be 0 exactly when mechanism is 'none'"):
        DpSettings(
            mechanism="none", noise_multiplier=1.0, clip_norm=1.0, min_survivors=2, target_delta=1e-5
        )  # noise without a mechanism
    with pytest.raises(ConfigError, match="noise_multiplier must be 0 exactly when mechanism is 'none'"):
        DpSettings(
            mechanism="gaussian", noise_multiplier=0.0, clip_norm=1.0, min_survivors=2, target_delta=1e-5
        )  # mechanism without noise
    with pytest.raises(ConfigError, match="target_delta must be < 1"):
        DpSettings(
            mechanism="gaussian", noise_multiplier=1.0, clip_norm=1.0, min_survivors=2, target_delta=1.0
        )
    with pytest.raises(ConfigError, match=r"threshold_fraction must be finite and in \(0\.0, 1\.0\]"):
        SecAggSettings(threshold_fraction=0.0, neighbour_degree=0, ring_bits=16)
    with pytest.raises(ConfigError, match=r"neighbour_degree must be an int in \[0, 1000000\]"):
        SecAggSettings(threshold_fraction=0.5, neighbour_degree=-1, ring_bits=16)
    with pytest.raises(ConfigError, match="mode must be one of secagg, trusted"):
        SecAggSettings(threshold_fraction=0.5, neighbour_degree=0, ring_bits=16, mode="plain")
    assert (
        DpSettings(
            mechanism="none", noise_multiplier=0, clip_norm=1, min_survivors=1, target_delta=1e-6
        ).noise_multiplier
        == 0.0
    )


def test_secagg_mode_defaults_and_decodes_when_absent() -> None:
    """A task from a cloud that predates `mode` decodes as secagg; a trusted task says so."""
    assert (
        SecAggSettings(threshold_fraction=0.6, neighbour_degree=0, ring_bits=20).mode == "secagg"
        and not SecAggSettings(threshold_fraction=0.6, neighbour_degree=0, ring_bits=20).trusted
    )
    legacy = {"threshold_fraction": 0.6, "neighbour_degree": 0, "ring_bits": 20}
    assert SecAggSettings.from_fields(legacy) == SecAggSettings(
        threshold_fraction=0.6, neighbour_degree=0, ring_bits=20
    )
    trusted = SecAggSettings.from_fields({**legacy, "mode": "trusted"})
    assert trusted.trusted and trusted.to_fields()["mode"] == "trusted"
    with pytest.raises(ConfigError, match="sec agg settings: field names differ from the format"):
        SecAggSettings.from_fields({**legacy, "mode": "trusted", "extra": 1})
    with pytest.raises(ConfigError, match="sec agg settings: field names differ from the format"):
        SecAggSettings.from_fields({"threshold_fraction": 0.6, "ring_bits": 20, "mode": "secagg"})


def test_plain_update_validation() -> None:
    ok = PlainUpdate(1, "dev-1", 16, np.array([0, 65535], dtype=np.uint32))
    assert ok.values.flags.writeable is False
    assert ok != PlainUpdate(1, "dev-1", 16, np.array([0, 65534], dtype=np.uint32))
    with pytest.raises(ConfigError, match=r"values must lie in \[0, 2\^ring_bits\)"):
        PlainUpdate(1, "dev-1", 16, np.array([65536], dtype=np.uint32))  # outside the ring
    with pytest.raises(ConfigError, match="values must be a 1-D uint32 array"):
        PlainUpdate(1, "dev-1", 16, np.array([1.0]))  # not uint32
    with pytest.raises(ConfigError, match=r"sender must match \[A-Za-z0-9_\.-\]\{1,64\}"):
        PlainUpdate(1, "dev 1", 16, np.zeros(2, dtype=np.uint32))
    with pytest.raises(ConfigError, match=r"ring_bits must be an int in \[8, 32\]"):
        PlainUpdate(1, "dev-1", 40, np.zeros(2, dtype=np.uint32))


def test_partial_aggregate_validation() -> None:
    ok = PartialAggregate("gw-1", 1, 0, np.zeros(3), 1, 1.0, ("a",))
    assert ok.vector_sum.flags.writeable is False
    with pytest.raises(ConfigError, match="vector_sum must be a 1-D float64 array"):
        PartialAggregate("gw-1", 1, 0, np.zeros(3, dtype=np.float32), 1, 1.0, ("a",))
    with pytest.raises(ConfigError, match="vector_sum must be finite"):
        PartialAggregate("gw-1", 1, 0, np.array([np.nan]), 1, 1.0, ("a",))
    with pytest.raises(ConfigError, match="survivors must be unique"):
        PartialAggregate("gw-1", 1, 0, np.zeros(3), 2, 1.0, ("a", "a"))
    with pytest.raises(ConfigError, match=r"weight_sum must be finite and in \[0\.0, inf\]"):
        PartialAggregate("gw-1", 1, 0, np.zeros(3), 1, -1.0, ("a",))
    assert ok != PartialAggregate("gw-1", 1, 0, np.ones(3), 1, 1.0, ("a",))


def test_status_validation_and_abort_decoding() -> None:
    with pytest.raises(ConfigError, match=r"node must match \[A-Za-z0-9_\.-\]\{1,64\}"):
        Status("node 1", "idle", "", 0)
    with pytest.raises(ConfigError, match="reason must be a str of at most 1024 chars"):
        Status("node", "idle", "x" * 2000, 0)
    # Abort is checked when decoded (the protocol state machines build it): a bool round id is refused.
    with pytest.raises(DecodeError, match="invalid message"):
        Abort.from_fields({"round_id": True, "sender": "gw", "reason": "x"})


def test_global_model_vector_checks_hash_and_size() -> None:
    vector = np.arange(100, dtype=np.float32)
    model = GlobalModel.from_vector(1, vector)
    assert model.model_sha256 == vector_sha256(vector)
    assert np.array_equal(model.vector(max_elements=100), vector)
    with pytest.raises(DecodeError, match="invalid message"):
        model.vector(max_elements=99)
    tampered = dataclasses.replace(
        model, compressed_vector=compress_bytes(np.ones(100, np.float32).tobytes())
    )
    with pytest.raises(DecodeError, match="invalid message"):
        tampered.vector(max_elements=100)


@dataclass(frozen=True)
class _PluginMessage:
    """A message defined outside fl_protocol.wire, as the secure-aggregation engineer's will be."""

    MESSAGE_TYPE: ClassVar[MessageType] = MessageType.ADVERTISE_KEYS
    round_id: int
    c_pk: bytes

    def to_fields(self) -> dict[str, Any]:
        return {"round_id": self.round_id, "c_pk": self.c_pk}

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> _PluginMessage:
        if set(values) != {"round_id", "c_pk"} or not isinstance(values["c_pk"], bytes):
            raise ConfigError("bad advertise fields")
        return cls(values["round_id"], values["c_pk"])


def test_any_class_with_message_type_and_field_methods_plugs_in() -> None:
    message = _PluginMessage(5, b"\x09" * 32)
    header, decoded = decode_message(_frame(message), _PluginMessage, verify_key=_verify)
    assert decoded == message and header.message_type == MessageType.ADVERTISE_KEYS
    with pytest.raises(DecodeError, match="invalid message"):
        decode_message(_frame(Abort(5, "gw", "x")), _PluginMessage, verify_key=_verify)
