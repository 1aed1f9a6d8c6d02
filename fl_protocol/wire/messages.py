"""Message dataclasses other than the secure-aggregation stages (those live in fl_protocol.secagg.messages).

Convention shared by every message (see fl_protocol.wire.envelope.WireMessage): a class attribute
`MESSAGE_TYPE`, validation in `__post_init__` (ConfigError naming the field), `to_fields()` returning a
mapping for fl_protocol.wire.fields, and `from_fields()` rejecting unknown or missing keys.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

from fl_protocol.codec.compress import compress_vector, decompress_vector, vector_sha256
from fl_protocol.codec.settings import MAX_RING_BITS, MIN_RING_BITS, CodecSettings
from fl_protocol.errors import ConfigError, DecodeError
from fl_protocol.message_types import MessageType
from fl_protocol.wire.checks import (
    check_bytes,
    check_float,
    check_id,
    check_int,
    check_mapping,
    check_text,
    check_vector,
    exact_keys,
)
from fl_protocol.wire.fields import DEFAULT_MAX_BYTES, MAX_COHORT_DEVICES, FieldLimits
from fl_protocol.wire.task_settings import DpSettings, SecAggSettings, TrainingSettings

logger = logging.getLogger(__name__)

SHA256_BYTES = 32
MAX_MODEL_BYTES = 512 * 1024 * 1024
MAX_STATUS_DETAILS = 64
MIN_INT64, MAX_INT64 = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class RoundTask:
    """The signed, retained task of one round (docs/round-protocol.md row 1).

    model_sha256: SHA-256 of the global LoRA vector's float32 little-endian bytes (compress.vector_sha256).
    deadlines_ms: absolute deadline (ms since the epoch, injected clock) per stage name, e.g. "advertise".
    tier: the data sensitivity tier the round trains on (devices train only on records of this tier).
    model_dimension: length of the flat LoRA vector (the bundle's total_length); gateways need it to
    scatter the decoded sparse sum back, devices check it against their bundle.
    """

    MESSAGE_TYPE: ClassVar[MessageType] = MessageType.ROUND_TASK
    FIELD_LIMITS: ClassVar[FieldLimits] = FieldLimits(
        max_bytes=64 * 1024, max_items=512, max_depth=2, max_arrays=0
    )

    round_id: int
    model_version: int
    model_sha256: bytes = field(repr=False)
    training: TrainingSettings
    codec: CodecSettings
    dp: DpSettings
    secagg: SecAggSettings
    min_cohort: int
    deadlines_ms: Mapping[str, int]
    tier: str
    model_dimension: int

    def __post_init__(self) -> None:
        check_int("round_id", self.round_id)
        check_int("model_dimension", self.model_dimension, lo=1, hi=MAX_MODEL_BYTES // 4)
        check_int("model_version", self.model_version)
        check_bytes("model_sha256", self.model_sha256, length=SHA256_BYTES)
        for name, kind in (("training", TrainingSettings), ("codec", CodecSettings), ("dp", DpSettings)):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(f"{name} must be a {kind.__name__}")
        if not isinstance(self.secagg, SecAggSettings):
            raise ConfigError("secagg must be a SecAggSettings")
        if self.dp.clip_norm != self.codec.clip_norm:
            raise ConfigError("dp.clip_norm must equal codec.clip_norm")
        if self.secagg.ring_bits != self.codec.ring_bits:
            raise ConfigError("secagg.ring_bits must equal codec.ring_bits")
        if self.training.weighted and self.dp.mechanism != "none":
            # the weight coordinate carries no noise: docs/privacy.md, "Weighted rounds"
            raise ConfigError("weighted rounds (qffl/datasize) refuse DP tasks: dp.mechanism must be 'none'")
        check_int("min_cohort", self.min_cohort, lo=1, hi=1_000_000)
        if self.min_cohort < self.dp.min_survivors:
            raise ConfigError("min_cohort must be >= dp.min_survivors")
        deadlines = check_mapping("deadlines_ms", self.deadlines_ms)
        checked = {check_id("deadline stage", k): check_int(f"deadline {k}", v) for k, v in deadlines.items()}
        object.__setattr__(self, "deadlines_ms", dict(sorted(checked.items())))
        check_id("tier", self.tier)

    def to_fields(self) -> dict[str, Any]:
        """Field mapping for the wire; settings blocks are nested mappings."""
        return {
            "round_id": self.round_id,
            "model_version": self.model_version,
            "model_sha256": self.model_sha256,
            "training": self.training.to_fields(),
            "codec": self.codec.to_fields(),
            "dp": self.dp.to_fields(),
            "secagg": self.secagg.to_fields(),
            "min_cohort": self.min_cohort,
            "deadlines_ms": dict(self.deadlines_ms),
            "tier": self.tier,
            "model_dimension": self.model_dimension,
        }

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> RoundTask:
        """Inverse of `to_fields`."""
        exact_keys("round task", values, {f.name for f in fields(cls)})
        return cls(
            round_id=values["round_id"],
            model_version=values["model_version"],
            model_sha256=values["model_sha256"],
            training=TrainingSettings.from_fields(values["training"]),
            codec=CodecSettings.from_fields(dict(check_mapping("codec", values["codec"]))),
            dp=DpSettings.from_fields(values["dp"]),
            secagg=SecAggSettings.from_fields(values["secagg"]),
            min_cohort=values["min_cohort"],
            deadlines_ms=check_mapping("deadlines_ms", values["deadlines_ms"]),  # type: ignore[arg-type]
            tier=values["tier"],
            model_dimension=values["model_dimension"],
        )


@dataclass(frozen=True)
class GlobalModel:
    """A version of the global LoRA vector: zstd-compressed float32 little-endian bytes plus their SHA-256."""

    MESSAGE_TYPE: ClassVar[MessageType] = MessageType.GLOBAL_MODEL
    FIELD_LIMITS: ClassVar[FieldLimits] = FieldLimits(max_items=16, max_depth=1, max_arrays=0)

    model_version: int
    model_sha256: bytes = field(repr=False)
    compressed_vector: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_int("model_version", self.model_version)
        check_bytes("model_sha256", self.model_sha256, length=SHA256_BYTES)
        check_bytes("compressed_vector", self.compressed_vector, max_bytes=MAX_MODEL_BYTES)

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

    def to_fields(self) -> dict[str, Any]:
        """Field mapping for the wire."""
        return {
            "model_version": self.model_version,
            "model_sha256": self.model_sha256,
            "compressed_vector": self.compressed_vector,
        }

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> GlobalModel:
        """Inverse of `to_fields`."""
        exact_keys("global model", values, {"model_version", "model_sha256", "compressed_vector"})
        return cls(**values)


@dataclass(frozen=True, eq=False)
class PartialAggregate:
    """A gateway's decoded cohort sum for the cloud (docs/round-protocol.md row 8).

    vector_sum: float64 sum of the survivors' decoded updates (not divided); count: number of survivors;
    weight_sum: sum of the survivors' aggregation weights; survivors: their ids, unique;
    uplink_frame_bytes: measured total size in bytes of the survivors' update frames as the gateway
    received them (signed frame, header and packed values), so the cloud reports real uplink bytes.
    """

    MESSAGE_TYPE: ClassVar[MessageType] = MessageType.PARTIAL_AGGREGATE
    FIELD_LIMITS: ClassVar[FieldLimits] = FieldLimits(
        max_bytes=DEFAULT_MAX_BYTES, max_items=64 + MAX_COHORT_DEVICES, max_depth=2, max_arrays=1
    )

    gateway: str
    round_id: int
    model_version: int
    vector_sum: np.ndarray = field(repr=False)
    count: int
    weight_sum: float
    survivors: tuple[str, ...]
    uplink_frame_bytes: int = 0

    def __post_init__(self) -> None:
        check_id("gateway", self.gateway)
        check_int("uplink_frame_bytes", self.uplink_frame_bytes, lo=0, hi=2**62)
        check_int("round_id", self.round_id)
        check_int("model_version", self.model_version)
        object.__setattr__(self, "vector_sum", check_vector("vector_sum", self.vector_sum, np.float64))
        check_int("count", self.count, lo=0, hi=10_000_000)
        object.__setattr__(self, "weight_sum", check_float("weight_sum", self.weight_sum, lo=0.0))
        if not isinstance(self.survivors, (list, tuple)):
            raise ConfigError("survivors must be a sequence of ids")
        survivors = tuple(check_id("survivor", s) for s in self.survivors)
        if len(set(survivors)) != len(survivors) or len(survivors) != self.count:
            raise ConfigError("survivors must be unique and number exactly count")
        object.__setattr__(self, "survivors", survivors)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PartialAggregate):
            return NotImplemented
        same_scalars = self.to_fields() | {"vector_sum": None} == other.to_fields() | {"vector_sum": None}
        return same_scalars and np.array_equal(self.vector_sum, other.vector_sum)

    __hash__ = None  # type: ignore[assignment]

    def to_fields(self) -> dict[str, Any]:
        """Field mapping for the wire."""
        return {
            "gateway": self.gateway,
            "round_id": self.round_id,
            "model_version": self.model_version,
            "vector_sum": self.vector_sum,
            "count": self.count,
            "weight_sum": self.weight_sum,
            "survivors": list(self.survivors),
            "uplink_frame_bytes": self.uplink_frame_bytes,
        }

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> PartialAggregate:
        """Inverse of `to_fields`."""
        exact_keys("partial aggregate", values, {f.name for f in fields(cls)})
        return cls(**{**values, "survivors": tuple(values["survivors"] or ())})


@dataclass(frozen=True, eq=False)
class PlainUpdate:
    """Device -> trusted gateway: the encoded update (clipped, noised, quantized ring values), NOT masked.

    Sent only in trusted-gateway mode (`task.secagg.mode == "trusted"`) by a device whose operator set
    `[device] allow_trusted_gateway = true`, on the masked-update topic. values: uint32 in [0, 2^ring_bits).
    """

    MESSAGE_TYPE: ClassVar[MessageType] = MessageType.PLAIN_UPDATE
    FIELD_LIMITS: ClassVar[FieldLimits] = FieldLimits(max_items=16, max_depth=1, max_arrays=1)

    round_id: int
    sender: str
    ring_bits: int
    values: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        check_int("round_id", self.round_id)
        check_id("sender", self.sender)
        check_int("ring_bits", self.ring_bits, lo=MIN_RING_BITS, hi=MAX_RING_BITS)
        values = check_vector("values", self.values, np.uint32)
        if values.size and int(values.max()) >> self.ring_bits:
            raise ConfigError("values must lie in [0, 2^ring_bits)")
        object.__setattr__(self, "values", values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PlainUpdate):
            return NotImplemented
        same_scalars = (self.round_id, self.sender, self.ring_bits) == (
            other.round_id,
            other.sender,
            other.ring_bits,
        )
        return same_scalars and np.array_equal(self.values, other.values)

    __hash__ = None  # type: ignore[assignment]

    def to_fields(self) -> dict[str, Any]:
        """Field mapping for the wire."""
        return {
            "round_id": self.round_id,
            "sender": self.sender,
            "ring_bits": self.ring_bits,
            "values": self.values,
        }

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> PlainUpdate:
        """Inverse of `to_fields`."""
        exact_keys("plain update", values, {"round_id", "sender", "ring_bits", "values"})
        return cls(**values)


@dataclass(frozen=True)
class Status:
    """A node's retained state (also its MQTT last will): state is an id such as 'training' or 'offline'.

    details: small, non-private facts for operators (round id, backend, ε spent per tier, local train
    loss); never keys, seeds, shares or updates. At most 64 entries; values are ints in [-2^63, 2^63),
    floats (NaN and ±inf allowed: "unknown") or strings of at most 1024 chars. A Status is untrusted input
    at the cloud (any device publishes its own), so these bounds hold for every reader.
    """

    MESSAGE_TYPE: ClassVar[MessageType] = MessageType.STATUS
    FIELD_LIMITS: ClassVar[FieldLimits] = FieldLimits(
        max_bytes=128 * 1024, max_items=16 + MAX_STATUS_DETAILS, max_depth=2, max_arrays=0
    )

    node: str
    state: str
    reason: str
    time_ms: int
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_id("node", self.node)
        check_id("state", self.state)
        check_text("reason", self.reason)
        check_int("time_ms", self.time_ms)
        details = dict(check_mapping("details", self.details))
        if len(details) > MAX_STATUS_DETAILS:
            raise ConfigError(f"details has more than {MAX_STATUS_DETAILS} entries")
        for key, value in details.items():
            check_id("details key", key)
            if isinstance(value, str):
                check_text(f"details {key}", value)
            elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                details[key] = check_int(f"details {key}", value, lo=MIN_INT64, hi=MAX_INT64)
            elif isinstance(value, (float, np.floating)):
                details[key] = float(value)
            else:
                raise ConfigError(f"details {key} must be a number or a short string")
        object.__setattr__(self, "details", dict(sorted(details.items())))

    def to_fields(self) -> dict[str, Any]:
        """Field mapping for the wire."""
        return {
            "node": self.node,
            "state": self.state,
            "reason": self.reason,
            "time_ms": self.time_ms,
            "details": dict(self.details),
        }

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> Status:
        """Inverse of `to_fields`."""
        exact_keys("status", values, {"node", "state", "reason", "time_ms", "details"})
        return cls(**values)


@dataclass(frozen=True)
class Abort:
    """The round (or this node's part of it) is abandoned; nothing of it is released."""

    MESSAGE_TYPE: ClassVar[MessageType] = MessageType.ABORT
    FIELD_LIMITS: ClassVar[FieldLimits] = FieldLimits(max_bytes=8192, max_items=8, max_depth=1, max_arrays=0)

    round_id: int
    reason: str

    def __post_init__(self) -> None:
        check_int("round_id", self.round_id)
        check_text("reason", self.reason)

    def to_fields(self) -> dict[str, Any]:
        """Field mapping for the wire."""
        return {"round_id": self.round_id, "reason": self.reason}

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> Abort:
        """Inverse of `to_fields`."""
        exact_keys("abort", values, {"round_id", "reason"})
        return cls(**values)
