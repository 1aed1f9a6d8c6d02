"""Retained chunk topics on the sending side: the ledger, the packet order, and the packet plan."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fl_protocol.topics import retained_chunk_topic
from fl_protocol.wire.chunks import ChunkLimits, decode_chunk
from fl_transport.chunking import ChunkCodec
from fl_transport.packets import Outgoing, plan
from fl_transport.retained_chunks import RetainedChunkLedger, replace_retained
from fl_transport.settings import TransportError, publish_packet_bytes

MODEL = "fl/v1/f1/model/3"
TASK = "fl/v1/f1/round/4/task"
STATUS = "fl/v1/f1/status/cloud"
KEY = Ed25519PrivateKey.generate()
LIMIT = 12_000


def _chunk(i: int) -> str:
    return retained_chunk_topic(MODEL, i)


def _codec() -> ChunkCodec:
    return ChunkCodec("f1", "cloud", KEY, {"cloud": KEY.public_key()}.get, clock_ms=lambda: 5)


def _plan(ledger: RetainedChunkLedger, topic: str, payload: bytes, *, retain: bool = True):  # type: ignore[no-untyped-def]
    item = Outgoing(topic, payload, 1, retain, None)
    return plan(item, limit=LIMIT, mqtt5=True, chunking=_codec(), ledger=ledger)


def test_first_chunked_version_clears_the_topic_then_fills_chunk_topics() -> None:
    ledger = RetainedChunkLedger()
    packets = replace_retained(ledger, MODEL, [b"c0", b"c1", b"c2"], b"whole")
    assert packets == [(MODEL, b""), (_chunk(0), b"c0"), (_chunk(1), b"c1"), (_chunk(2), b"c2")]
    assert ledger.count(MODEL) == 3


def test_shorter_chunked_version_overwrites_then_clears_the_excess() -> None:
    ledger = RetainedChunkLedger()
    ledger.set(MODEL, 5)
    packets = replace_retained(ledger, MODEL, [b"n0", b"n1"], b"whole")
    clears = [(_chunk(i), b"") for i in (2, 3, 4)]
    assert packets == [(_chunk(0), b"n0"), (_chunk(1), b"n1"), *clears]
    assert ledger.count(MODEL) == 5  # written ahead: the clears are not out yet
    ledger.set(MODEL, 2)
    assert ledger.count(MODEL) == 2


def test_whole_version_or_clear_after_a_chunked_one_clears_chunk_topics_first() -> None:
    ledger = RetainedChunkLedger()
    ledger.set(MODEL, 2)
    packets = replace_retained(ledger, MODEL, None, b"small")
    assert packets == [(_chunk(0), b""), (_chunk(1), b""), (MODEL, b"small")]
    ledger.set(MODEL, 0)
    assert replace_retained(ledger, MODEL, None, b"") == [(MODEL, b"")]
    assert ledger.count(MODEL) == 0


def test_ledger_file_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "store" / "retained_chunks.json"
    first = RetainedChunkLedger(path)
    first.set(MODEL, 7)
    first.set(TASK, 2)
    first.set(TASK, 0)
    assert json.loads(path.read_text()) == {"format": 1, "chunks": {MODEL: 7}}
    restarted = RetainedChunkLedger(path)
    assert (restarted.count(MODEL), restarted.count(TASK)) == (7, 0)
    clears = replace_retained(restarted, MODEL, None, b"")  # e.g. the cloud clears a superseded model
    assert clears == [*((_chunk(i), b"") for i in range(7)), (MODEL, b"")]


@pytest.mark.parametrize(
    "content", [b"not json", b'{"format": 2, "chunks": {}}', b'{"format": 1, "chunks": {"t": -1}}', b"[]"]
)
def test_unreadable_ledger_file_starts_empty_with_a_log_line(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "retained_chunks.json"
    path.write_bytes(content)
    assert RetainedChunkLedger(path).count("t") == 0
    assert "retained chunk record" in caplog.text


def test_plan_puts_a_large_retained_model_in_chunk_topics_within_the_limit() -> None:
    ledger = RetainedChunkLedger()
    payload = random.Random(1).randbytes(50_000)
    sending = _plan(ledger, MODEL, payload)
    frames = sending.packets[1:]
    assert sending.packets[0] == (MODEL, b"") and sending.retained_chunks == len(frames) > 4
    for i, (topic, frame) in enumerate(frames):
        assert topic == _chunk(i)
        assert publish_packet_bytes(topic, len(frame), qos=1, mqtt5=True) <= LIMIT
        chunk = decode_chunk(frame, fleet="f1", verify_key=_codec().verify_key, limits=ChunkLimits())
        assert (chunk.topic, chunk.index, chunk.count) == (MODEL, i, len(frames))


def test_plan_sends_small_and_non_retained_messages_as_before() -> None:
    ledger = RetainedChunkLedger()
    assert _plan(ledger, MODEL, b"small").packets == [(MODEL, b"small")]
    big = b"p" * 30_000
    partial = "fl/v1/f1/round/4/partial/g1"
    in_topic = _plan(ledger, partial, big, retain=False)
    assert {topic for topic, _ in in_topic.packets} == {partial} and in_topic.retained_chunks is None
    not_retained = _plan(ledger, MODEL, big, retain=False)
    assert {topic for topic, _ in not_retained.packets} == {MODEL} and ledger.count(MODEL) == 0


def test_plan_refuses_a_retained_status_above_the_limit() -> None:
    refused = "retained message of .* on .*/status/cloud exceeds .*: only task and model topics"
    with pytest.raises(TransportError, match=refused):
        _plan(RetainedChunkLedger(), STATUS, b"s" * 20_000)
    assert _plan(RetainedChunkLedger(), STATUS, b"s" * 20_000, retain=False).retained_chunks is None
