"""Update codec (docs/update-codec.md): clip, shared random-k sparsify, Hadamard rotation, quantization,
ring map, bit packing, and strict zstd. One concept per module; the pipeline composes them. The other
direction, the global model's quantized delta, is `downlink` (docs/update-codec.md, "Downlink")."""

from __future__ import annotations

from fl_protocol.codec.compress import compress_bytes, compress_vector, decompress_bytes, decompress_vector
from fl_protocol.codec.pack import pack_bits, pack_uint, packed_bytes, unpack_bits, unpack_uint
from fl_protocol.codec.pipeline import (
    EncodedUpdate,
    UplinkSize,
    codec_chain,
    codec_chain_text,
    decode_sum,
    decode_weighted_sum,
    encode_update,
    encoded_length,
    uplink_payload_bytes,
)
from fl_protocol.codec.settings import (
    CodecSettings,
    check_ring_bits,
    default_scale,
    required_ring_bits,
    sparse_count,
)

__all__ = [
    "CodecSettings",
    "EncodedUpdate",
    "UplinkSize",
    "check_ring_bits",
    "codec_chain",
    "codec_chain_text",
    "compress_bytes",
    "compress_vector",
    "decode_sum",
    "decode_weighted_sum",
    "decompress_bytes",
    "decompress_vector",
    "default_scale",
    "encode_update",
    "encoded_length",
    "pack_bits",
    "pack_uint",
    "packed_bytes",
    "required_ring_bits",
    "sparse_count",
    "uplink_payload_bytes",
    "unpack_bits",
    "unpack_uint",
]
