"""Fuzzing the wire decoders (issue 12): mutated frames of every message type, signed and unsigned.

Fixed seed. Each frame is a valid sample (tests/wire_samples.py) mutated in one of three ways: its field
mapping (a leaf or a whole container replaced by a hostile value, keys dropped or added, lists blown up),
then re-encoded and signed with the sender's real key; its body bytes (bit flips, random bytes, cuts,
insertions) re-signed; or the whole frame's bytes mutated without re-signing (plus frames signed by a key
the fleet does not know). `decode_message` must return a valid instance of the class or raise DecodeError,
nothing else, within a per-frame CPU bound and a memory bound. The default run decodes a few thousand
frames; the slow variant 100,000.
"""

from __future__ import annotations

import gc
import math
import random
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fl_protocol.errors import DecodeError
from fl_protocol.wire import GlobalModel, decode_message
from fl_protocol.wire.fields import encode_fields
from tests import wire_samples as ws

SEED = 20261130
CPU_BOUND_S = 0.5  # per frame, thread CPU time (measured without tracemalloc, which slows decoding ~10x)
MEMORY_BOUND_BYTES = 16 * 2**20  # peak traced allocation while decoding one frame
STRANGER = Ed25519PrivateKey.from_private_bytes(b"\x09" * 32)


def _hostile(rng: random.Random) -> Any:
    """A value of any wire type, biased to the edges: huge ints, non-finite floats, empty, long, deep."""
    choices: list[Callable[[], Any]] = [
        lambda: rng.choice([2**1100, -(2**1100), 2**63, 2**64, -1, 0, 1, 2**8191 - 1]),
        lambda: rng.choice([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324, 0.5]),
        lambda: rng.choice(["", "x" * rng.randrange(2000), "dev-1", "ü" * 70, "a/b+#"]),
        lambda: rng.randbytes(rng.choice([0, 1, 31, 32, 33, 63, 64, 65, 1000])),
        lambda: rng.choice([None, True, False]),
        lambda: [[]] * rng.randrange(600),
        lambda: [np.zeros(0, np.float32)] * rng.randrange(100),
        lambda: {f"k{i}": i for i in range(rng.randrange(100))},
        lambda: _nested(rng.randrange(1, 20)),
        lambda: rng.choice(
            [
                np.full(rng.randrange(8), np.nan),
                np.arange(rng.randrange(64), dtype=np.uint32) << 20,
                np.zeros((2, 3), np.float64),
                np.zeros(5, np.int8),
                np.array(2.0),
                np.full(3, 2**32 - 1, np.uint32),
            ]
        ),
    ]
    return rng.choice(choices)()


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def _containers(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every node (containers and leaves) in a field mapping."""
    paths = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _containers(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += _containers(item, (*path, index))
    return paths


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def _set(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _set(value[head], rest, new)}
    return [_set(item, rest, new) if i == head else item for i, item in enumerate(value)]


def _mutate_fields(rng: random.Random, fields: dict[str, Any]) -> dict[str, Any]:
    paths = _containers(fields)[1:]  # of the sample: later mutations may replace a path's parent
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        path = rng.choice(paths)
        try:
            _get(fields, path)
        except (IndexError, KeyError, TypeError):
            continue
        node, op = _get(fields, path), rng.randrange(5)
        if op == 0 or not isinstance(node, (dict, list)):
            fields = _set(fields, path, _hostile(rng))
        elif op == 1 and isinstance(node, dict) and node:
            fields = _set(fields, path, {k: v for k, v in node.items() if k != rng.choice(list(node))})
        elif op == 2 and isinstance(node, dict):
            fields = _set(fields, path, {**node, rng.choice(["extra", "round_id", "z"]): _hostile(rng)})
        elif op == 3 and isinstance(node, list) and node:
            fields = _set(fields, path, node * rng.randrange(2, 60))
        else:
            fields = _set(fields, path, [node] if rng.random() < 0.5 else _hostile(rng))
    if rng.random() < 0.2 and len(fields) > 1:
        fields = {k: v for k, v in fields.items() if k != rng.choice(list(fields))}
    return fields


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 4, 16])):
        op, at = rng.randrange(6), rng.randrange(max(1, len(buffer)))
        if op == 0 and buffer:
            buffer[at] ^= 1 << rng.randrange(8)
        elif op == 1 and buffer:
            buffer[at] = rng.choice([0x00, 0x01, 0x07, 0x08, 0x09, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif op == 2:
            del buffer[at : at + rng.randrange(1, 64)]
        elif op == 3:
            buffer[at:at] = rng.randbytes(rng.randrange(1, 64))
        elif op == 4:
            buffer[at : at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x40\x42\x0f\x00"])
        else:
            del buffer[at:]
    return bytes(buffer)


def _mutated_body(rng: random.Random, sample: Any) -> bytes:
    fields = _mutate_fields(rng, sample.to_fields())
    try:
        return encode_fields(fields)
    except (TypeError, ValueError):  # not encodable (e.g. nested too deep): mutate the bytes instead
        return _mutate_bytes(rng, encode_fields(sample.to_fields()))


def _frame(rng: random.Random, sample: Any) -> bytes:
    """One mutated frame of `sample`'s type (see the module docstring for the three kinds)."""
    cls = type(sample)
    kind = rng.random()
    if kind < 0.45:
        return ws.raw_frame(cls, _mutated_body(rng, sample))
    if kind < 0.75:
        return ws.raw_frame(cls, _mutate_bytes(rng, encode_fields(sample.to_fields())))
    if kind < 0.8:
        return ws.raw_frame(cls, _mutated_body(rng, sample), key=STRANGER)
    return _mutate_bytes(rng, ws.raw_frame(cls, sample.to_fields()))


def _decode(frame: bytes, cls: type) -> Any:
    """The decoded message, or None for a DecodeError (any other exception fails the test)."""
    try:
        _header, message = decode_message(frame, cls, verify_key=ws.verify_key)
    except DecodeError:
        return None
    assert isinstance(message, cls)
    if isinstance(message, GlobalModel):  # the model's own payload decoder, too
        try:
            message.vector(max_elements=1000)
        except DecodeError:
            pass
    return message


def _fuzz(total: int, seed: int) -> dict[str, int]:
    """Decode `total` mutated frames: each once timed (thread CPU), once under tracemalloc (peak bytes)."""
    rng = random.Random(seed)
    samples = ws.samples()
    outcomes = {"decoded": 0, "rejected": 0}
    # Freeze what the test process already holds out of the cyclic collector, so a full collection that a
    # frame's allocations trigger does not walk the whole suite's heap and get billed to the decoder.
    gc.collect()
    gc.freeze()
    try:
        _fuzz_frames(total, rng, samples, outcomes)
    finally:
        gc.unfreeze()
    return outcomes


def _fuzz_frames(total: int, rng: random.Random, samples: list[Any], outcomes: dict[str, int]) -> None:
    worst_s, worst_bytes = 0.0, 0
    for index in range(total):
        sample = samples[index % len(samples)]
        cls = type(sample)
        frame = _frame(rng, sample)
        started = time.thread_time()
        message = _decode(frame, cls)
        seconds = time.thread_time() - started
        outcomes["rejected" if message is None else "decoded"] += 1
        tracemalloc.start()
        try:
            _decode(frame, cls)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        worst_s, worst_bytes = max(worst_s, seconds), max(worst_bytes, peak)
        assert seconds < CPU_BOUND_S, (index, cls.__name__, seconds)
        assert peak < MEMORY_BOUND_BYTES, (index, cls.__name__, peak)
    print(f"fuzz: {outcomes}, worst frame {worst_s * 1000:.1f} ms CPU, {worst_bytes / 2**20:.2f} MiB peak")


def test_every_message_class_has_a_sample() -> None:
    from fl_protocol.secagg.messages import MESSAGE_CLASSES
    from fl_protocol.wire import messages

    classes = {c for c in vars(messages).values() if isinstance(c, type) and hasattr(c, "MESSAGE_TYPE")}
    assert classes | set(MESSAGE_CLASSES.values()) <= {type(m) for m in ws.samples()}


def test_fuzz_a_few_thousand_mutated_frames_of_every_type() -> None:
    outcomes = _fuzz(16 * 200, SEED)
    assert outcomes["rejected"] > 2000  # the mutations mostly break something ...
    assert outcomes["decoded"] > 0  # ... and a few are still valid messages (the oracle is not vacuous)


@pytest.mark.slow
def test_fuzz_100k_mutated_frames() -> None:
    outcomes = _fuzz(100_000, SEED + 1)
    assert outcomes["rejected"] > 50_000 and outcomes["decoded"] > 0


@pytest.mark.parametrize(
    "cls", sorted({type(m) for m in ws.samples()}, key=lambda c: c.__qualname__ + c.__module__)
)
def test_an_unmutated_sample_decodes(cls: type) -> None:
    sample = next(m for m in ws.samples() if type(m) is cls)
    _header, message = decode_message(ws.raw_frame(cls, sample.to_fields()), cls, verify_key=ws.verify_key)
    assert message.to_fields().keys() == sample.to_fields().keys()
