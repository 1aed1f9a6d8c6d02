"""Strict zstd for unmasked payloads, control messages and the downlink model (docs/update-codec.md).

Masked data is uniformly random, so it is never compressed. The decompressor refuses, BEFORE decompressing:
a frame without a declared content size, a declared size over the caller's limit, a window over
`max_window_bytes`, a skippable or second frame, and any byte after the single frame's end (found by walking
the block headers as the zstd format defines them, RFC 8878 §3.1). Every refusal is an opaque DecodeError.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import zstandard

from fl_protocol.errors import DecodeError

logger = logging.getLogger(__name__)

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
DEFAULT_LEVEL = 9
DEFAULT_MAX_WINDOW_BYTES = 8 * 1024 * 1024
_BLOCK_RLE = 1
_BLOCK_RESERVED = 3


class _Refused(Exception):
    """Internal carrier of the refusal reason (logged at DEBUG only)."""


def compress_bytes(data: bytes, *, level: int = DEFAULT_LEVEL) -> bytes:
    """One zstd frame with the content size declared and a checksum (what `decompress_bytes` requires)."""
    compressor = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=True)
    return compressor.compress(bytes(data))


def _frame_end(data: bytes, has_checksum: bool) -> int:
    """Offset just after the single zstd frame starting at 0, by walking its block headers."""
    pos = zstandard.frame_header_size(data)
    while True:
        if pos + 3 > len(data):
            raise _Refused("truncated block header")
        header = int.from_bytes(data[pos : pos + 3], "little")
        last, block_type, block_size = header & 1, (header >> 1) & 3, header >> 3
        if block_type == _BLOCK_RESERVED:
            raise _Refused("reserved block type")
        pos += 3 + (1 if block_type == _BLOCK_RLE else block_size)
        if last:
            return pos + (4 if has_checksum else 0)


def decompress_bytes(
    data: bytes, *, max_output_bytes: int, max_window_bytes: int = DEFAULT_MAX_WINDOW_BYTES
) -> bytes:
    """Decompress exactly one zstd frame whose declared content size is at most `max_output_bytes`."""
    data = bytes(data)
    try:
        if data[:4] != ZSTD_MAGIC:
            raise _Refused("not a zstd frame (or a skippable frame)")
        params = zstandard.get_frame_parameters(data)
        if params.content_size == zstandard.CONTENTSIZE_UNKNOWN:
            raise _Refused("content size not declared")
        if params.content_size > max_output_bytes:
            raise _Refused(f"declared size {params.content_size} over limit {max_output_bytes}")
        if params.window_size > max_window_bytes:
            raise _Refused("window too large")
        if _frame_end(data, params.has_checksum) != len(data):
            raise _Refused("trailing data or truncated frame")
        decompressor = zstandard.ZstdDecompressor(max_window_size=max_window_bytes)
        # With a declared size the one-shot API writes into a buffer of exactly that size.
        out = decompressor.decompress(data)
        if len(out) != params.content_size:
            raise _Refused("content size mismatch")
        return out
    except (_Refused, zstandard.ZstdError) as exc:
        logger.debug("zstd payload refused: %s", exc)
        raise DecodeError() from None


def vector_sha256(vector: np.ndarray) -> bytes:
    """SHA-256 of a float32 vector's little-endian bytes: the model hash carried in round tasks."""
    return hashlib.sha256(np.ascontiguousarray(vector, dtype="<f4").tobytes()).digest()


def compress_vector(vector: np.ndarray, *, level: int = DEFAULT_LEVEL) -> bytes:
    """zstd of a 1-D float32 vector's little-endian bytes (the downlink global model)."""
    v = np.asarray(vector)
    if v.ndim != 1:
        raise ValueError("compress_vector expects a 1-D vector")
    return compress_bytes(np.ascontiguousarray(v, dtype="<f4").tobytes(), level=level)


def decompress_vector(data: bytes, *, max_elements: int) -> np.ndarray:
    """Inverse of `compress_vector`, refusing more than `max_elements` floats; DecodeError on any defect."""
    raw = decompress_bytes(data, max_output_bytes=4 * max_elements)
    if len(raw) % 4:
        logger.debug("decompressed model length is not a multiple of 4")
        raise DecodeError()
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)
