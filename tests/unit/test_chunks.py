"""Signed chunks (fl_protocol.wire.chunks) and bounded reassembly (fl_transport.chunking)."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fl_protocol.errors import ConfigError, DecodeError
from fl_protocol.identity import NodeIdentity
from fl_protocol.message_types import MessageType
from fl_protocol.wire.chunks import ChunkLimits, decode_chunk, is_chunk_frame
from fl_protocol.wire.fields import encode_fields
from fl_protocol.wire.framing import FrameHeader, encode_frame
from fl_transport.chunking import ChunkCodec, ReassemblyLimits

KEYS = {name: Ed25519PrivateKey.generate() for name in ("g1", "g2", "cloud")}
PUBLIC = {name: key.public_key() for name, key in KEYS.items()}
TOPIC = "fl/v1/f1/round/1/partial/g1"


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def _codec(name: str, limits: ReassemblyLimits | None = None, clock: Clock | None = None) -> ChunkCodec:
    return ChunkCodec(
        "f1",
        name,
        KEYS[name],
        PUBLIC.get,
        limits or ReassemblyLimits(),
        clock_ms=lambda: 7,
        clock_s=clock or Clock(),
    )


def _split(payload: bytes, sender: str = "g1", limit: int = 8192, topic: str = TOPIC) -> list[bytes]:
    return _codec(sender).split(topic, payload, limit)


def test_round_trip_in_any_order_with_duplicates() -> None:
    payload = random.Random(1).randbytes(100_000)
    chunks = _split(payload)
    assert len(chunks) > 10 and all(len(c) <= 8192 and is_chunk_frame(c) for c in chunks)
    shuffled = chunks + chunks[:3]
    random.Random(2).shuffle(shuffled)
    receiver = _codec("cloud")
    results = [receiver.receive(TOPIC, c) for c in shuffled]
    assert [r for r in results if r is not None] == [payload]  # delivered once, when complete
    assert receiver.reassembler.buffered_bytes == 0
    assert all(receiver.receive(TOPIC, c) is None for c in chunks)  # a late repeat is not delivered again


def test_split_refuses_a_limit_with_no_room() -> None:
    with pytest.raises(ConfigError, match="no room"):
        _split(b"x" * 5000, limit=600)


def test_tampered_unsigned_or_foreign_chunks_are_decode_errors() -> None:
    chunk = _split(b"y" * 20_000)[0]
    limits = ChunkLimits()
    flipped = bytearray(chunk)
    flipped[200] ^= 1
    for bad in (bytes(flipped), chunk[:-1], chunk + b"\0"):
        with pytest.raises(DecodeError, match="invalid message"):
            decode_chunk(bad, fleet="f1", verify_key=PUBLIC.get, limits=limits)
    with pytest.raises(DecodeError, match="invalid message"):  # another fleet
        decode_chunk(chunk, fleet="f2", verify_key=PUBLIC.get, limits=limits)
    with pytest.raises(DecodeError, match="invalid message"):  # unknown sender
        decode_chunk(chunk, fleet="f1", verify_key=lambda _n: None, limits=limits)


def _forged(fields: dict[str, object], sender: str = "g1") -> bytes:
    header = FrameHeader("f1", 0, sender, MessageType.CHUNK, 1)
    base: dict[str, object] = {
        "count": 2,
        "data": b"abc",
        "index": 0,
        "message_id": b"\1" * 32,
        "topic": TOPIC,
        "total_bytes": 6,
    }
    base.update(fields)
    return encode_frame(header, encode_fields({k: v for k, v in base.items() if v is not ...}), KEYS[sender])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields",
    [
        {"count": 0},
        {"count": 16_385},
        {"index": 2},
        {"index": -1},
        {"total_bytes": 0},
        {"total_bytes": ChunkLimits().max_message_bytes + 1},
        {"data": b""},
        {"data": b"x" * 7},  # longer than the whole message
        {"message_id": b"\1" * 31},
        {"topic": 5},
        {"count": True},
        {"extra": 1},
        {"data": ...},
    ],
)
def test_signed_chunks_outside_the_limits_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(DecodeError, match="invalid message"):
        decode_chunk(_forged(fields), fleet="f1", verify_key=PUBLIC.get, limits=ChunkLimits())


def test_chunk_on_another_topic_is_ignored() -> None:
    chunks = _split(b"z" * 20_000)
    receiver = _codec("cloud")
    assert all(receiver.receive("fl/v1/f1/round/1/partial/g2", c) is None for c in chunks)
    assert receiver.reassembler.buffered_bytes == 0


def test_a_chunk_whose_bytes_do_not_hash_to_the_id_is_dropped() -> None:
    receiver = _codec("cloud")
    assert receiver.receive(TOPIC, _forged({"index": 0, "data": b"abc"})) is None
    assert receiver.receive(TOPIC, _forged({"index": 1, "data": b"def"})) is None  # sha256 mismatch
    assert receiver.reassembler.buffered_bytes == 0


def test_overfull_message_is_dropped() -> None:
    receiver = _codec("cloud")
    receiver.receive(TOPIC, _forged({"count": 3, "index": 0, "data": b"abcd"}))
    receiver.receive(TOPIC, _forged({"count": 3, "index": 1, "data": b"efgh"}))  # 8 > total 6
    assert receiver.reassembler.buffered_bytes == 0


def test_incomplete_messages_time_out() -> None:
    clock = Clock()
    receiver = _codec("cloud", ReassemblyLimits(timeout_s=10.0), clock)
    chunks = _split(b"q" * 30_000)
    receiver.receive(TOPIC, chunks[0])
    assert receiver.reassembler.buffered_bytes > 0
    clock.now_s = 11.0
    receiver.receive(TOPIC, _split(b"other" * 3000)[0])  # any arrival expires stale buffers
    assert receiver.reassembler.buffered_bytes < 8192


def test_buffers_are_bounded_per_sender_and_in_total() -> None:
    limits = ReassemblyLimits(
        max_partial_per_sender=2, max_buffered_bytes_per_sender=40_000, max_buffered_bytes=60_000
    )
    receiver = _codec("cloud", limits)
    for i in range(10):  # a signed sender opening many messages and finishing none
        chunks = _split(bytes([i]) * 30_000)
        for chunk in chunks[:-1]:
            receiver.receive(TOPIC, chunk)
        assert receiver.reassembler.buffered_bytes <= 40_000
    other = _split(b"\7" * 30_000, sender="g2", topic="fl/v1/f1/round/1/partial/g2")
    for chunk in other[:-1]:
        receiver.receive("fl/v1/f1/round/1/partial/g2", chunk)
        assert receiver.reassembler.buffered_bytes <= 60_000
    assert receiver.receive("fl/v1/f1/round/1/partial/g2", other[-1]) == b"\7" * 30_000


def test_codec_for_identity_signs_as_the_node() -> None:
    identity = NodeIdentity("g1", "f1", KEYS["g1"], PUBLIC)
    chunks = ChunkCodec.for_identity(identity).split(TOPIC, b"m" * 10_000, 8192)
    decoded = decode_chunk(chunks[0], fleet="f1", verify_key=PUBLIC.get, limits=ChunkLimits())
    assert decoded.sender == "g1" and decoded.count == len(chunks) == 2


def test_fuzzed_chunks_raise_only_decode_error() -> None:
    """Mutated bodies re-signed by a fleet member, and mutated signed frames: DecodeError or a valid chunk."""
    rng = random.Random(12)
    frame = _split(rng.randbytes(20_000))[0]
    header = FrameHeader("f1", 0, "g1", MessageType.CHUNK, 1)
    body = encode_fields(
        {
            "count": 3,
            "data": b"abcdef",
            "index": 1,
            "message_id": b"\2" * 32,
            "topic": TOPIC,
            "total_bytes": 18,
        }
    )
    for i in range(3000):
        source = bytearray(body if i % 2 else frame)
        for _ in range(rng.randint(1, 4)):
            source[rng.randrange(len(source))] = rng.randrange(256)
        data = encode_frame(header, bytes(source), KEYS["g1"]) if i % 2 else bytes(source)
        try:
            decode_chunk(data, fleet="f1", verify_key=PUBLIC.get, limits=ChunkLimits())
        except DecodeError:
            pass


MODEL_TOPIC = "fl/v1/f1/model/3"


def test_chunks_of_an_older_version_never_combine_with_a_newer_one() -> None:
    """What a late subscriber may find in retained chunk topics: the new version's chunks 0..M-1 and the
    old version's chunks M..N-1 (not cleared yet), in any order. Only the new version comes out."""
    rng = random.Random(3)
    old, new = rng.randbytes(60_000), rng.randbytes(25_000)
    old_chunks, new_chunks = _split(old, "cloud", topic=MODEL_TOPIC), _split(new, "cloud", topic=MODEL_TOPIC)
    assert len(old_chunks) > len(new_chunks) > 1
    retained = [*new_chunks, *old_chunks[len(new_chunks) :]]  # chunk topic i holds one chunk each
    limits = ChunkLimits()
    index = {c: decode_chunk(c, fleet="f1", verify_key=PUBLIC.get, limits=limits).index for c in retained}
    for seed in range(5):
        random.Random(seed).shuffle(retained)
        receiver = _codec("g1")
        results = [receiver.receive(MODEL_TOPIC, c, index=index[c]) for c in retained]
        assert [r for r in results if r is not None] == [new]


def test_stale_chunks_with_the_same_index_count_and_size_still_do_not_combine() -> None:
    """Two versions of equal length: same count, total and indices; the message id tells them apart."""
    rng = random.Random(4)
    old, new = rng.randbytes(30_000), rng.randbytes(30_000)
    old_chunks, new_chunks = _split(old, "cloud", topic=MODEL_TOPIC), _split(new, "cloud", topic=MODEL_TOPIC)
    receiver = _codec("g1")
    mixed = [old_chunks[0], *new_chunks[1:]]  # chunk topic 0 not yet overwritten
    assert [receiver.receive(MODEL_TOPIC, c) for c in mixed] == [None] * len(mixed)
    assert receiver.receive(MODEL_TOPIC, new_chunks[0]) == new


def test_a_chunk_on_the_chunk_topic_of_another_index_is_refused() -> None:
    chunks = _split(b"w" * 20_000, "cloud", topic=MODEL_TOPIC)
    receiver = _codec("g1")
    with pytest.raises(DecodeError, match="invalid message"):
        receiver.receive(MODEL_TOPIC, chunks[1], index=0)
    assert receiver.reassembler.buffered_bytes == 0


def test_split_refuses_more_chunks_than_a_receiver_accepts() -> None:
    codec = _codec("g1", ReassemblyLimits(chunk=ChunkLimits(max_chunks=4)))
    assert len(codec.split(TOPIC, b"a" * 20_000, 8192)) == 3
    with pytest.raises(ConfigError, match="needs 6 chunks .* more than the 4 a receiver accepts"):
        codec.split(TOPIC, b"a" * 40_000, 8192)


def test_chunk_count_bound_covers_the_longest_protocol_topics() -> None:
    from fl_protocol import topics as t
    from fl_transport.chunking import BOUND_TOPIC_CHARS, chunk_count_bound

    fleet, node, big = "f" * 64, "n" * 64, 10**19 - 1
    longest = [
        *(t.device_stage_topic(fleet, node, big, stage, node) for stage in t.UPLINK_STAGES),
        t.retained_chunk_topic(t.task_topic(fleet, big), big),
        t.retained_chunk_topic(t.model_topic(fleet, big), big),
        t.inbox_topic(fleet, node, node),
        t.status_topic(fleet, node),
    ]
    assert max(len(topic) for topic in longest) <= BOUND_TOPIC_CHARS
    for limit in (8192, 12_000, 65_536):
        payload = random.Random(limit).randbytes(200_000)
        for topic in (TOPIC, max(longest, key=len)):
            actual = len(_codec("g1").split(topic, payload, limit - 300))  # 300: a PUBLISH header bound
            assert actual <= chunk_count_bound(len(payload), limit)
    assert chunk_count_bound(1000, 8192) == 1
    assert chunk_count_bound(64 * 1024 * 1024, 32 * 1024 * 1024) == 3
    assert chunk_count_bound(64 * 1024 * 1024, 2048) == ChunkLimits().max_chunks  # capped
