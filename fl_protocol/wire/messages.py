"""Message dataclasses other than the secure-aggregation stages (those live in fl_protocol.secagg.messages).

Each is declared with the wire schema (fl_protocol.wire.schema): its fields once, with their wire types;
checked when built (ConfigError naming the field), so a value off the wire passes the same checks.
Field tables and budgets: docs/wire-format.md (generated from these declarations).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from fl_protocol.codec.compress import compress_vector, decompress_vector, vector_sha256
from fl_protocol.codec.downlink import (
    MAX_DOWNLINK_BITS,
    MAX_DOWNLINK_CHUNK,
    MIN_DOWNLINK_BITS,
    QuantizedDelta,
    apply_delta,
    chunk_count,
    pack_values,
    unpack_values,
)
from fl_protocol.codec.settings import MAX_RING_BITS, MIN_RING_BITS, CodecSettings
from fl_protocol.errors import ConfigError, DecodeError
from fl_protocol.message_types import MessageType
from fl_protocol.wire.fields import MAX_COHORT_DEVICES
from fl_protocol.wire.schema import Message, wire
from fl_protocol.wire.task_settings import DpSettings, SecAggSettings, TrainingSettings
from fl_protocol.wire.wire_types import Bytes, DetailValue, Float, Id, Int, Map, Nested, Seq, Text, Vector

logger = logging.getLogger(__name__)

SHA256_BYTES = 32
MAX_MODEL_BYTES = 512 * 1024 * 1024
MAX_STATUS_DETAILS = 64
MAX_DEADLINES = 64  # stages with a deadline in one task (a round has six)


class RoundTask(Message, message_type=MessageType.ROUND_TASK, max_bytes=64 * 1024):
    """The signed, retained task of one round (docs/round-protocol.md row 1).

    model_sha256: SHA-256 of the global LoRA vector's float32 little-endian bytes (compress.vector_sha256).
    deadlines_ms: absolute deadline (ms since the epoch, injected clock) per stage name, e.g. "advertise".
    tier: the data sensitivity tier the round trains on (devices train only on records of this tier).
    model_dimension: length of the flat LoRA vector (the bundle's total_length); gateways need it to
    scatter the decoded sparse sum back, devices check it against their bundle.
    """

    round_id: int = wire(Int())
    model_version: int = wire(Int())
    model_sha256: bytes = wire(
        Bytes(SHA256_BYTES), repr=False, doc="SHA-256 of the global vector's float32 LE bytes"
    )
    training: TrainingSettings = wire(Nested(TrainingSettings), doc="local training")
    codec: CodecSettings = wire(Nested(CodecSettings), doc="update codec (docs/update-codec.md)")
    dp: DpSettings = wire(Nested(DpSettings), doc="differential privacy")
    secagg: SecAggSettings = wire(Nested(SecAggSettings), doc="secure aggregation")
    min_cohort: int = wire(Int(1, 1_000_000), doc="fewest devices a gateway runs the round with")
    deadlines_ms: Mapping[str, int] = wire(
        Map(Id(), Int(), MAX_DEADLINES), doc="absolute deadline (ms since the epoch) per stage"
    )
    tier: str = wire(Id(), doc="data tier the round trains on")
    model_dimension: int = wire(Int(1, MAX_MODEL_BYTES // 4), doc="length of the flat LoRA vector")

    def validate(self) -> None:
        """`dp.clip_norm == codec.clip_norm`, `secagg.ring_bits == codec.ring_bits`, `min_cohort ≥
        dp.min_survivors`; `training.weighting` is `uniform` unless `dp.mechanism` is `none` (weighted
        rounds refuse DP: docs/privacy.md §6, "Weighted rounds")."""
        if self.dp.clip_norm != self.codec.clip_norm:
            raise ConfigError("dp.clip_norm must equal codec.clip_norm")
        if self.secagg.ring_bits != self.codec.ring_bits:
            raise ConfigError("secagg.ring_bits must equal codec.ring_bits")
        if self.training.weighted and self.dp.mechanism != "none":
            raise ConfigError("weighted rounds (qffl/datasize) refuse DP tasks: dp.mechanism must be 'none'")
        if self.min_cohort < self.dp.min_survivors:
            raise ConfigError("min_cohort must be >= dp.min_survivors")


class GlobalModel(Message, message_type=MessageType.GLOBAL_MODEL):
    """A version of the global LoRA vector: zstd-compressed float32 little-endian bytes plus their SHA-256."""

    model_version: int = wire(Int())
    model_sha256: bytes = wire(Bytes(SHA256_BYTES), repr=False, doc="SHA-256 of the float32 LE bytes")
    compressed_vector: bytes = wire(
        Bytes(max_bytes=MAX_MODEL_BYTES), repr=False, doc="strict zstd of the float32 LE vector"
    )

    @classmethod
    def from_vector(cls, model_version: int, vector: np.ndarray) -> GlobalModel:
        """Compress a float32 vector and hash its raw bytes."""
        return cls(model_version, vector_sha256(vector), compress_vector(vector))

    def vector(self, *, max_elements: int) -> np.ndarray:
        """Decompress strictly (at most `max_elements` floats) and check the hash; DecodeError otherwise."""
        result = decompress_vector(self.compressed_vector, max_elements=max_elements)
        if vector_sha256(result) != self.model_sha256:
            logger.debug("global model %d: hash mismatch", self.model_version)
            raise DecodeError()
        return result


class GlobalModelDelta(Message, message_type=MessageType.GLOBAL_MODEL_DELTA):
    """A version of the global LoRA vector as a quantized delta from an earlier one (docs/update-codec.md,
    "Downlink"; the arithmetic: fl_protocol.codec.downlink).

    new = base + scales[i // chunk] · q_i in float32; `packed_values` is the strict zstd of q_i + qmax
    bit-packed at `bits` bits; `base_sha256` and `model_sha256` are `vector_sha256` of the base and of the
    result, so a device applies the delta only to the right base and trains only on the right result.
    """

    model_version: int = wire(Int())
    base_version: int = wire(Int(), doc="the version the delta applies to")
    base_sha256: bytes = wire(Bytes(SHA256_BYTES), repr=False, doc="SHA-256 of the base's float32 LE bytes")
    model_sha256: bytes = wire(Bytes(SHA256_BYTES), repr=False, doc="SHA-256 of the result's float32 bytes")
    bits: int = wire(Int(MIN_DOWNLINK_BITS, MAX_DOWNLINK_BITS), doc="bits per quantized value")
    chunk: int = wire(Int(1, MAX_DOWNLINK_CHUNK), doc="values per scale")
    dimension: int = wire(Int(1, MAX_MODEL_BYTES // 4), doc="length d of the vector")
    scales: np.ndarray = wire(Vector(np.float32), repr=False, doc="one float32 scale ≥ 0 per chunk")
    packed_values: bytes = wire(
        Bytes(max_bytes=MAX_MODEL_BYTES), repr=False, doc="strict zstd of q + qmax packed at `bits` bits"
    )

    def validate(self) -> None:
        """`base_version` < `model_version`; `scales` holds ⌈dimension / chunk⌉ values, none negative."""
        if self.base_version >= self.model_version:
            raise ConfigError("base_version must be older than model_version")
        if self.scales.shape != (chunk_count(self.dimension, self.chunk),):
            raise ConfigError("scales must hold one value per chunk")
        if self.scales.size and float(self.scales.min()) < 0:
            raise ConfigError("scales must be >= 0")

    @classmethod
    def from_quantized(
        cls,
        quantized: QuantizedDelta,
        *,
        model_version: int,
        base_version: int,
        base_sha256: bytes,
        model_sha256: bytes,
    ) -> GlobalModelDelta:
        """The message of `quantized` (fl_protocol.codec.downlink.quantize_delta) between two versions."""
        return cls(
            model_version,
            base_version,
            base_sha256,
            model_sha256,
            quantized.bits,
            quantized.chunk,
            quantized.dimension,
            np.asarray(quantized.scales, np.float32),
            pack_values(quantized),
        )

    def quantized(self) -> QuantizedDelta:
        """The scales and integers (decompressed strictly); DecodeError on any defect of `packed_values`."""
        values = unpack_values(self.packed_values, count=self.dimension, bits=self.bits)
        return QuantizedDelta(self.bits, self.chunk, np.asarray(self.scales, np.float32), values)

    def apply(self, base: np.ndarray) -> np.ndarray:
        """The new float32 vector, shape (d,), from `base`; DecodeError unless `base` is a float32 vector
        of length `dimension` hashing to `base_sha256` and the result hashes to `model_sha256`."""
        b = np.asarray(base)
        if b.dtype != np.float32 or b.shape != (self.dimension,) or vector_sha256(b) != self.base_sha256:
            logger.debug("global model delta %d: not this base", self.model_version)
            raise DecodeError()
        result = apply_delta(b, self.quantized())
        if vector_sha256(result) != self.model_sha256:
            logger.debug("global model delta %d: result hash mismatch", self.model_version)
            raise DecodeError()
        return result


class PartialAggregate(Message, message_type=MessageType.PARTIAL_AGGREGATE):
    """A gateway's decoded cohort sum for the cloud (docs/round-protocol.md row 8).

    vector_sum: float64 sum of the survivors' decoded updates (not divided); count: number of survivors;
    weight_sum: sum of the survivors' aggregation weights; survivors: their ids, unique;
    uplink_frame_bytes: measured total size in bytes of the survivors' update frames as the gateway
    received them (signed frame, header and packed values), so the cloud reports real uplink bytes.
    Equality compares vector_sum by value (instances are unhashable).
    """

    gateway: str = wire(Id())
    round_id: int = wire(Int())
    model_version: int = wire(Int())
    vector_sum: np.ndarray = wire(Vector(np.float64), repr=False, doc="sum of the survivors' updates")
    count: int = wire(Int(0, 10_000_000), doc="number of survivors")
    weight_sum: float = wire(Float(0.0), doc="sum of the survivors' aggregation weights")
    survivors: tuple[str, ...] = wire(Seq(Id(), MAX_COHORT_DEVICES, order="unique"), doc="their ids")
    uplink_frame_bytes: int = wire(
        Int(0, 2**62), default=0, doc="total size of the survivors' update frames as received"
    )

    def validate(self) -> None:
        """`survivors` number exactly `count`."""
        if len(self.survivors) != self.count:
            raise ConfigError("survivors must be unique and number exactly count")


class PlainUpdate(Message, message_type=MessageType.PLAIN_UPDATE):
    """Device -> trusted gateway: the encoded update (clipped, noised, quantized ring values), NOT masked.

    Sent only in trusted-gateway mode (`task.secagg.mode == "trusted"`) by a device whose operator set
    `[device] allow_trusted_gateway = true`, on the masked-update topic. values: uint32 in [0, 2^ring_bits).
    Equality compares values by value (instances are unhashable).
    """

    round_id: int = wire(Int())
    sender: str = wire(Id())
    ring_bits: int = wire(Int(MIN_RING_BITS, MAX_RING_BITS))
    values: np.ndarray = wire(Vector(np.uint32), repr=False, doc="encoded update, not masked")

    def validate(self) -> None:
        """`values` lie in [0, 2^ring_bits)."""
        if self.values.size and int(self.values.max()) >> self.ring_bits:
            raise ConfigError("values must lie in [0, 2^ring_bits)")


class Status(Message, message_type=MessageType.STATUS, max_bytes=128 * 1024):
    """A node's retained state (also its MQTT last will): state is an id such as 'training' or 'offline'.

    details: small, non-private facts for operators (round id, backend, ε spent per tier, local train
    loss); never keys, seeds, shares or updates. At most 64 entries; values are ints in [-2^63, 2^63),
    floats (NaN and ±inf allowed: "unknown") or strings of at most 1024 chars. A Status is untrusted input
    at the cloud (any device publishes its own), so these bounds hold for every reader.
    """

    node: str = wire(Id())
    state: str = wire(Id(), doc="e.g. `training`, `offline`")
    reason: str = wire(Text())
    time_ms: int = wire(Int(), doc="sender clock, ms since the epoch")
    details: Mapping[str, Any] = wire(
        Map(Id(), DetailValue(), MAX_STATUS_DETAILS),
        default_factory=dict,
        doc="non-private facts for operators",
    )
