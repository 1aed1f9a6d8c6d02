"""Issue 12 findings 2 and 3: every decode failure is a DecodeError, and decoding cost is bounded per type.

The frames are signed with the sender's real key (tests/wire_samples.py), so they pass the signature check
and reach the body decoder: the position of a hostile but provisioned node.
"""

from __future__ import annotations

import gc
import struct
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from fl_protocol.errors import ConfigError, DecodeError
from fl_protocol.wire import PartialAggregate, RoundTask, Status, decode_message
from fl_protocol.wire.envelope import message_limits
from fl_protocol.wire.fields import FieldLimits, Tag, decode_fields, encode_fields
from fl_protocol.wire.messages import MAX_STATUS_DETAILS
from tests import wire_samples as ws
from tests.kit.tasks import wire_task

HUGE = 2**1100  # above the largest float: float(HUGE) raises OverflowError
CPU_BOUND_S = 0.5  # per frame, thread CPU time (the issue's frames took 4.4 s and 7 s before)
MEMORY_BOUND_BYTES = 8 * 2**20


def _decode(cls: type, frame: bytes) -> Any:
    return decode_message(frame, cls, verify_key=ws.verify_key)[1]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """(path, leaf) of every scalar inside a field mapping (dict keys and list indexes)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))
    else:
        yield path, value


def _replaced(fields: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(fields, dict):
        return {**fields, head: _replaced(fields[head], rest, new)}
    return [_replaced(item, rest, new) if i == head else item for i, item in enumerate(fields)]


def _float_fields() -> list[tuple[type, tuple[Any, ...]]]:
    cases = []
    for message in ws.samples():
        for path, leaf in _paths(message.to_fields()):
            if isinstance(leaf, float):
                cases.append((type(message), path))
    return cases


def _id(value: Any) -> str:
    return ".".join(map(str, value)) if isinstance(value, tuple) else str(getattr(value, "__name__", value))


@pytest.mark.parametrize(("cls", "path"), _float_fields(), ids=_id)
@pytest.mark.parametrize("huge", [HUGE, -HUGE])
def test_an_integer_beyond_the_float_range_in_any_float_field_is_a_decode_error(
    cls: type, path: tuple[Any, ...], huge: int
) -> None:
    message = next(m for m in ws.samples() if type(m) is cls)
    frame = ws.raw_frame(cls, _replaced(message.to_fields(), path, huge))
    with pytest.raises(DecodeError, match="invalid message"):
        _decode(cls, frame)


def test_the_float_fields_of_the_issue_are_covered() -> None:
    covered = {(cls.__name__, path) for cls, path in _float_fields()}
    assert ("PartialAggregate", ("weight_sum",)) in covered
    assert ("RoundTask", ("training", "learning_rate")) in covered
    assert ("RoundTask", ("codec", "scale")) in covered
    assert ("Status", ("details", "train_loss")) in covered


@pytest.mark.parametrize("field", ["train_loss", "round", "eval_loss"])
def test_a_status_with_a_huge_integer_detail_is_a_decode_error(field: str) -> None:
    """The issue's status: {"round": 2, "train_loss": 2**1100} stopped the cloud."""
    fields = {"node": ws.SENDER, "state": "idle", "reason": "", "time_ms": 1, "details": {"round": 2}}
    fields["details"] = {**fields["details"], field: HUGE}
    with pytest.raises(DecodeError, match="invalid message"):
        _decode(Status, ws.raw_frame(Status, fields))
    with pytest.raises(ConfigError, match=f"details {field} must be an int in"):
        Status(ws.SENDER, "idle", "", 1, {"round": 2, field: HUGE})


def test_status_details_are_typed_and_bounded() -> None:
    status = Status(
        ws.SENDER, "idle", "", 1, {"round": np.int64(2), "loss": np.float32(0.5), "nan": float("nan")}
    )
    assert type(status.details["round"]) is int and type(status.details["loss"]) is float
    assert Status(ws.SENDER, "idle", "", 1, {"r": 2**63 - 1, "s": -(2**63)}).details["r"] == 2**63 - 1
    with pytest.raises(ConfigError, match="details r must be an int in"):
        Status(ws.SENDER, "idle", "", 1, {"r": 2**63})
    with pytest.raises(ConfigError, match="details has more than 64 entries"):
        Status(ws.SENDER, "idle", "", 1, {f"k{i}": i for i in range(MAX_STATUS_DETAILS + 1)})
    with pytest.raises(ConfigError, match="details flag must be a number or a short string"):
        Status(ws.SENDER, "idle", "", 1, {"flag": True})


def test_a_task_with_huge_settings_is_a_decode_error() -> None:
    fields = wire_task().to_fields()
    for block, name in (("training", "learning_rate"), ("codec", "scale"), ("codec", "clip_norm")):
        bad = {**fields, block: {**fields[block], name: HUGE}}
        with pytest.raises(DecodeError, match="invalid message"):
            _decode(RoundTask, ws.raw_frame(RoundTask, bad))


def _lists_body(count: int) -> bytes:
    """{"x": [[], [], ...]} with `count` empty lists: 5 bytes each."""
    head = bytes([Tag.DICT]) + struct.pack("<IH", 1, 1) + b"x" + bytes([Tag.LIST]) + struct.pack("<I", count)
    return head + (bytes([Tag.LIST]) + struct.pack("<I", 0)) * count


def _arrays_body(count: int) -> bytes:
    """{"x": [array([]), ...]} with `count` zero-length float32 arrays: 11 bytes each."""
    one = bytes([Tag.ARRAY, 10, 1]) + struct.pack("<Q", 0)
    head = bytes([Tag.DICT]) + struct.pack("<IH", 1, 1) + b"x" + bytes([Tag.LIST]) + struct.pack("<I", count)
    return head + one * count


def _cost(cls: type, frame: bytes) -> tuple[float, int]:
    """(thread CPU seconds, peak traced bytes) of decoding `frame` as `cls`; it must be a DecodeError.

    Timed without tracemalloc (which slows allocation-heavy code several-fold), then traced once more.
    The objects the test process already holds are frozen out of the cyclic collector first: otherwise a
    full collection that the decoder's allocations happen to trigger walks the whole suite's heap (torch,
    every collected test: seconds) and is billed to the decoder. A role process's heap is small."""
    gc.collect()
    gc.freeze()
    try:
        started = time.thread_time()
        with pytest.raises(DecodeError, match="invalid message"):
            _decode(cls, frame)
        seconds = time.thread_time() - started
    finally:
        gc.unfreeze()
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match="invalid message"):
            _decode(cls, frame)
        return seconds, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


CLASSES = sorted({type(m) for m in ws.samples()}, key=lambda c: (c.__module__, c.__name__))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__.split('.')[1]}.{c.__name__}")
def test_the_issues_frames_cost_milliseconds_and_little_memory(cls: type) -> None:
    """5 MB of a million empty lists (just under the old 10^6 item cap) and 11 MB of a million zero-length
    arrays, signed: 2.7 s CPU and 139 MiB, resp. seconds and hundreds of MiB, before the budgets."""
    for body in (_lists_body(999_990), _arrays_body(1_000_000)):
        seconds, peak = _cost(cls, ws.raw_frame(cls, body))
        assert seconds < CPU_BOUND_S and peak < MEMORY_BOUND_BYTES, (seconds, peak)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__.split('.')[1]}.{c.__name__}")
def test_the_worst_frame_within_each_budget_costs_little(cls: type) -> None:
    """As many empty lists / zero-length arrays as the type's item budget admits: still bounded."""
    count = message_limits(cls).max_items - 3  # top dict, "x", the list
    for body in (_lists_body(count), _arrays_body(count)):
        seconds, peak = _cost(cls, ws.raw_frame(cls, body))
        assert seconds < CPU_BOUND_S and peak < MEMORY_BOUND_BYTES, (seconds, peak)


def test_every_message_class_declares_its_budget() -> None:
    for cls in CLASSES:
        assert isinstance(cls.__dict__.get("FIELD_LIMITS"), FieldLimits), cls


def test_a_frame_over_the_type_budget_is_refused_before_the_signature_check() -> None:
    calls: list[str] = []

    def verify(sender: str) -> Any:
        calls.append(sender)
        return ws.verify_key(sender)

    status = {"node": ws.SENDER, "state": "idle", "reason": "x" * 200_000, "time_ms": 1, "details": {}}
    with pytest.raises(DecodeError, match="invalid message"):
        decode_message(ws.raw_frame(Status, status), Status, verify_key=verify)
    assert calls == []


def test_field_limits_are_enforced_one_by_one() -> None:
    body = encode_fields({"a": [[1, 2], [3]], "b": np.zeros(2, np.float32)})
    assert decode_fields(body, limits=FieldLimits(max_items=8, max_depth=3, max_arrays=1))["a"] == [
        [1, 2],
        [3],
    ]
    for limits in (
        FieldLimits(max_items=7),
        FieldLimits(max_depth=2),
        FieldLimits(max_arrays=0),
        FieldLimits(max_bytes=len(body) - 1),
    ):
        with pytest.raises(DecodeError, match="invalid message"):
            decode_fields(body, limits=limits)


def test_a_partial_within_its_budget_still_decodes() -> None:
    survivors = tuple(f"d{i}" for i in range(5000))
    partial = PartialAggregate("gw-1", ws.ROUND, 4, np.zeros(3), len(survivors), 5000.0, survivors)
    frame = ws.raw_frame(PartialAggregate, partial.to_fields())
    assert _decode(PartialAggregate, frame) == partial
