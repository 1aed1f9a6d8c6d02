"""The declarative wire schema (fl_protocol/wire/schema.py): one declaration per message gives its codec,
its checks and its decoding budget (the docs tables: test_wire_docs.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fl_protocol.errors import ConfigError, DecodeError
from fl_protocol.message_types import MessageType
from fl_protocol.secagg.messages import MaskedUpdate, Roster, Survivors
from fl_protocol.wire import PartialAggregate, Status, TrainingSettings
from fl_protocol.wire.fields import MAX_COHORT_DEVICES, FieldLimits, decode_fields, encode_fields
from fl_protocol.wire.messages import MAX_DEADLINES, MAX_STATUS_DETAILS
from fl_protocol.wire.schema import Message, Record, declared_fields, wire
from fl_protocol.wire.wire_types import Int, Text
from tests import wire_samples as ws
from tests.kit.tasks import wire_task

ROOT = Path(__file__).resolve().parents[2]


def test_every_sample_encodes_to_the_known_answer_bytes() -> None:
    """The bodies were recorded from the hand-written encoders the schema replaced (byte-identical)."""
    vectors = json.loads((ROOT / "tests" / "vectors" / "message_bodies.json").read_text())["bodies"]
    samples = ws.samples()
    assert [v["class"] for v in vectors] == [f"{type(m).__module__}.{type(m).__qualname__}" for m in samples]
    for vector, message in zip(vectors, samples, strict=True):
        body = encode_fields(message.to_fields())
        assert body.hex() == vector["body_hex"], vector["class"]
        assert encode_fields(type(message).from_fields(decode_fields(body)).to_fields()) == body


def _cost(value: Any) -> tuple[int, int, int]:
    """(values, depth, arrays) of a decoded field value, counted as fl_protocol.wire.fields does."""
    if isinstance(value, (dict, list)):
        inner = [_cost(v) for v in (value.values() if isinstance(value, dict) else value)]
        items = 1 + sum(c[0] for c in inner)
        return items, 1 + max((c[1] for c in inner), default=0), sum(c[2] for c in inner)
    return 1, 1, int(isinstance(value, np.ndarray))


def _largest_messages() -> list[Any]:
    survivors = tuple(f"d{i}" for i in range(MAX_COHORT_DEVICES))
    return [
        PartialAggregate("gw-1", 1, 2, np.zeros(3), len(survivors), 1.0, survivors),
        Status("node", "idle", "", 1, {f"k{i}": "x" * 1024 for i in range(MAX_STATUS_DETAILS)}),
        wire_task(deadlines_ms={f"stage{i}": i for i in range(MAX_DEADLINES)}),
    ]


@pytest.mark.parametrize("message", _largest_messages(), ids=lambda m: type(m).__name__)
def test_the_budget_is_exactly_what_the_largest_valid_message_needs(message: Any) -> None:
    limits = type(message).FIELD_LIMITS
    body = encode_fields(message.to_fields())
    decoded = decode_fields(body, limits=limits)
    assert _cost(decoded)[:2] == (limits.max_items, limits.max_depth + 1)  # the top mapping is depth 0
    with pytest.raises(DecodeError, match="invalid message"):
        decode_fields(body, limits=dataclasses.replace(limits, max_items=limits.max_items - 1))
    assert type(message).from_fields(decoded) == message


@pytest.mark.parametrize("message", ws.samples(), ids=lambda m: type(m).__name__)
def test_every_sample_fits_its_budget(message: Any) -> None:
    limits = type(message).FIELD_LIMITS
    items, depth, arrays = _cost(decode_fields(encode_fields(message.to_fields())))
    assert items <= limits.max_items and depth - 1 <= limits.max_depth and arrays <= limits.max_arrays


def test_budgets_follow_from_the_field_types() -> None:
    n = MAX_COHORT_DEVICES
    # 7 scalars + the members list, each member a mapping of 5 scalars, inside the top mapping.
    assert Roster.FIELD_LIMITS == FieldLimits(max_items=1 + 7 + 1 + 6 * n, max_depth=3, max_arrays=0)
    assert PartialAggregate.FIELD_LIMITS == FieldLimits(max_items=1 + 7 + 1 + n, max_depth=2, max_arrays=1)
    # count and packed travel instead of the array
    assert MaskedUpdate.FIELD_LIMITS == FieldLimits(max_items=1 + 5, max_depth=1, max_arrays=0)


def test_optional_fields_are_absent_all_together_or_present_all_together() -> None:
    fields = TrainingSettings(
        local_steps=2, batch_size=4, learning_rate=0.1, weighting="qffl", qffl_q=1.0, weight_reference=5.0
    ).to_fields()
    legacy = {k: fields[k] for k in ("local_steps", "batch_size", "learning_rate")}
    assert TrainingSettings.from_fields(legacy) == TrainingSettings(
        local_steps=2, batch_size=4, learning_rate=0.1
    )
    with pytest.raises(ConfigError, match="training settings: field names differ from the format"):
        TrainingSettings.from_fields({**legacy, "weighting": "qffl"})
    assert [spec.name for spec in declared_fields(TrainingSettings) if spec.optional] == [
        "weighting",
        "qffl_q",
        "weight_reference",
    ]


def test_checked_on_init_normalises_and_names_the_field() -> None:
    status = Status("node", "idle", "", np.int64(5), {"b": np.float32(0.5), "a": 1})
    assert type(status.time_ms) is int and list(status.details) == ["a", "b"]
    with pytest.raises(ConfigError, match=r"time_ms must be an int in \[0, "):
        Status("node", "idle", "", -1)


def test_checked_on_decode_builds_unchecked_and_decodes_opaquely() -> None:
    unsorted = Survivors(3, "gw", ("b", "a"))  # the state machines' own messages are built as given
    with pytest.raises(DecodeError, match="invalid message"):
        Survivors.from_fields(unsorted.to_fields())
    assert Survivors.from_fields(Survivors(3, "gw", ("a", "b")).to_fields()).survivors == ("a", "b")


def test_messages_with_arrays_compare_by_value_and_are_unhashable() -> None:
    partial = PartialAggregate("gw-1", 1, 0, np.zeros(3), 1, 1.0, ("a",))
    assert partial == PartialAggregate("gw-1", 1, 0, np.zeros(3), 1, 1.0, ("a",))
    assert partial != dataclasses.replace(partial, vector_sum=np.ones(3))
    with pytest.raises(TypeError, match="unhashable"):
        hash(partial)
    masked = MaskedUpdate(1, "dev", 16, np.arange(3, dtype=np.uint32))
    assert masked != MaskedUpdate(1, "dev", 16, np.arange(3, dtype=np.uint32))  # eq=False: identity
    assert hash(masked) == hash(masked)


def test_a_field_without_a_wire_declaration_is_refused() -> None:
    with pytest.raises(TypeError, match=r"_Undeclared\.x is not declared with wire"):

        class _Undeclared(Record):
            x: int


def test_an_optional_field_needs_a_default() -> None:
    with pytest.raises(TypeError, match="an optional wire field needs a default"):
        wire(Int(), optional=True)


def test_a_declared_message_plugs_into_the_envelope() -> None:
    class _Note(Message, message_type=MessageType.STATUS, max_bytes=1024):
        round_id: int = wire(Int())
        text: str = wire(Text(1, 10), default="hi")

    assert _Note.FIELD_LIMITS == FieldLimits(max_bytes=1024, max_items=3, max_depth=1, max_arrays=0)
    assert _Note.from_fields({"round_id": 2, "text": "yo"}) == _Note(2, "yo")
    with pytest.raises(ConfigError, match="text must have at least 1 chars"):
        _Note(2, "")
    with pytest.raises(ConfigError, match="_note: field names differ from the format"):
        _Note.from_fields({"round_id": 2})
