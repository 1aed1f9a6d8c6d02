"""Strict zstd: round trips, and every bomb / smuggling shape refused before decompressing."""

from __future__ import annotations

import numpy as np
import pytest
import zstandard

from fl_protocol.codec.compress import (
    compress_bytes,
    compress_vector,
    decompress_bytes,
    decompress_vector,
    vector_sha256,
)
from fl_protocol.errors import DecodeError

DATA = b"fedlora " * 1000


def test_round_trip() -> None:
    assert decompress_bytes(compress_bytes(DATA), max_output_bytes=len(DATA)) == DATA
    assert decompress_bytes(compress_bytes(b""), max_output_bytes=0) == b""
    vector = np.linspace(-3, 3, 1001, dtype=np.float32)
    assert np.array_equal(decompress_vector(compress_vector(vector), max_elements=1001), vector)
    assert len(vector_sha256(vector)) == 32


def test_declared_size_over_limit_is_refused() -> None:
    bomb = compress_bytes(b"\x00" * 10_000_000)  # ~1 KB that would expand to 10 MB
    assert len(bomb) < 2000
    with pytest.raises(DecodeError, match="invalid message"):
        decompress_bytes(bomb, max_output_bytes=1_000_000)


def test_missing_content_size_is_refused() -> None:
    no_size = zstandard.ZstdCompressor(write_content_size=False).compress(DATA)
    with pytest.raises(DecodeError, match="invalid message"):
        decompress_bytes(no_size, max_output_bytes=10**9)
    streamed = zstandard.ZstdCompressor().compressobj()
    frame = streamed.compress(DATA) + streamed.flush()  # streaming API leaves the size undeclared
    with pytest.raises(DecodeError, match="invalid message"):
        decompress_bytes(frame, max_output_bytes=10**9)


def test_trailing_data_second_frame_and_truncation_are_refused() -> None:
    frame = compress_bytes(DATA)
    for bad in (frame + b"\x00", frame + compress_bytes(b"x"), frame[:-1], frame[:10], b"", b"\x00" * 16):
        with pytest.raises(DecodeError, match="invalid message"):
            decompress_bytes(bad, max_output_bytes=10**6)


def test_skippable_frame_and_corruption_are_refused() -> None:
    skippable = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"abcd"
    with pytest.raises(DecodeError, match="invalid message"):
        decompress_bytes(skippable + compress_bytes(DATA), max_output_bytes=10**6)
    frame = bytearray(compress_bytes(DATA))
    frame[-1] ^= 0xFF  # checksum
    with pytest.raises(DecodeError, match="invalid message"):
        decompress_bytes(bytes(frame), max_output_bytes=10**6)


def test_large_window_is_refused() -> None:
    params = zstandard.ZstdCompressionParameters(window_log=25, write_content_size=True)
    payload = np.random.default_rng(0).bytes(1 << 20) * 40  # long-distance repeats need the big window
    frame = zstandard.ZstdCompressor(compression_params=params).compress(payload)
    assert zstandard.get_frame_parameters(frame).window_size > 8 * 1024 * 1024
    with pytest.raises(DecodeError, match="invalid message"):
        decompress_bytes(frame, max_output_bytes=len(payload))
    assert decompress_bytes(frame, max_output_bytes=len(payload), max_window_bytes=1 << 26) == payload


def test_vector_length_must_be_whole_floats() -> None:
    with pytest.raises(DecodeError, match="invalid message"):
        decompress_vector(compress_bytes(b"\x00" * 7), max_elements=10)
