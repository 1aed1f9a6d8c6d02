"""Round tasks for tests: one builder (`round_task`) and the named variants the suite needs.

Every builder returns a valid `RoundTask` (its own checks run); keyword overrides change one thing at a
time, so a test that expects a refusal changes only the field whose check it means to show.

- `round_task`: small and fast (64 coordinates, 20-bit ring, no DP noise, deadlines far in the future),
  the task the gateway and SecAgg+ tests run.
- `wire_task`: every field away from its default (personal tier, Skellam noise, error feedback), the
  sample of the wire tests.
- `dp_task`: rotation, a 32-bit ring and the cloud's own scale choice, for the privacy tests.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fl_protocol.codec.settings import CodecSettings, default_scale, sparse_count
from fl_protocol.stages import DEADLINE_STAGES
from fl_protocol.wire.messages import RoundTask
from fl_protocol.wire.task_settings import DpSettings, SecAggSettings, TrainingSettings

MODEL_DIMENSION = 64
MODEL_SHA256 = hashlib.sha256(b"model").digest()
#: The deadline keys of a round task, in round order (wire strings).
STAGES: tuple[str, ...] = tuple(stage.value for stage in DEADLINE_STAGES)
#: No noise, a floor of 2 survivors: the default DP settings of `round_task`.
NO_NOISE = DpSettings(
    mechanism="none", noise_multiplier=0.0, clip_norm=1.0, min_survivors=2, target_delta=1e-5
)


def codec_settings(
    dimension: int = MODEL_DIMENSION,
    *,
    clip_norm: float = 1.0,
    keep_fraction: float = 0.5,
    rotate: bool = True,
    quant_bits: int = 8,
    ring_bits: int = 20,
    scale: float | None = None,
    error_feedback: bool = False,
    index_seed: bytes = b"\x02" * 32,
    rotation_seed: bytes = b"\x03" * 32,
) -> CodecSettings:
    """Codec settings for a `dimension`-coordinate model; `scale` None: the cloud's own choice
    (`default_scale` for the k = sparse_count(dimension, keep_fraction) kept coordinates)."""
    if scale is None:
        k = sparse_count(dimension, keep_fraction)
        scale = default_scale(clip_norm, quant_bits, k, rotate=rotate)
    return CodecSettings(
        clip_norm=clip_norm,
        keep_fraction=keep_fraction,
        index_seed=index_seed,
        rotate=rotate,
        rotation_seed=rotation_seed,
        quant_bits=quant_bits,
        ring_bits=ring_bits,
        scale=scale,
        error_feedback=error_feedback,
    )


def far_deadlines_ms() -> dict[str, int]:
    """Every stage's deadline far in the future (ms since the epoch): the driver closes stages itself."""
    return {stage: 2**40 for stage in STAGES}


def staggered_deadlines_ms(start_ms: int = 2_000, step_ms: int = 1_000) -> dict[str, int]:
    """Deadlines `start_ms`, `start_ms + step_ms`, ... for the stages in round order (for a manual clock)."""
    return {stage: start_ms + step_ms * i for i, stage in enumerate(STAGES)}


def round_task(
    round_id: int = 1,
    *,
    dimension: int = MODEL_DIMENSION,
    codec: CodecSettings | None = None,
    dp: DpSettings = NO_NOISE,
    secagg: SecAggSettings | None = None,
    training: TrainingSettings | None = None,
    min_cohort: int = 3,
    deadlines_ms: dict[str, int] | None = None,
    tier: str = "public",
    mode: str = "secagg",
    model_version: int | None = None,
    model_sha256: bytes = MODEL_SHA256,
) -> RoundTask:
    """A valid round task of `round_id`.

    Defaults: `codec_settings(dimension)` (half-sparse, rotated, 8-bit, 20-bit ring), no DP noise,
    SecAgg+ with t = half the neighbourhood on the gateway's graph (`mode` "trusted" for a trusted
    round; ignored when `secagg` is given), one local step, deadlines far in the future, model version
    `round_id - 1`.
    """
    codec = codec or codec_settings(dimension)
    return RoundTask(
        round_id=round_id,
        model_version=round_id - 1 if model_version is None else model_version,
        model_sha256=model_sha256,
        training=training or TrainingSettings(local_steps=1, batch_size=1, learning_rate=1e-3),
        codec=codec,
        dp=dp,
        secagg=secagg
        or SecAggSettings(threshold_fraction=0.5, neighbour_degree=0, ring_bits=codec.ring_bits, mode=mode),
        min_cohort=min_cohort,
        deadlines_ms=deadlines_ms or far_deadlines_ms(),
        tier=tier,
        model_dimension=dimension,
    )


def wire_task(**overrides: Any) -> RoundTask:
    """A round task with every field away from its default (round 3, 1,000 coordinates, personal tier,
    Skellam noise, error feedback, three deadlines); `overrides` replace RoundTask fields by name."""
    codec = codec_settings(1_000, scale=300.0, error_feedback=True)
    values: dict[str, Any] = {
        "round_id": 3,
        "model_version": 4,
        "model_sha256": b"\xaa" * 32,
        "training": TrainingSettings(local_steps=10, batch_size=8, learning_rate=1e-3),
        "codec": codec,
        "dp": DpSettings(
            mechanism="skellam", noise_multiplier=1.1, clip_norm=1.0, min_survivors=2, target_delta=1e-5
        ),
        "secagg": SecAggSettings(threshold_fraction=0.6, neighbour_degree=0, ring_bits=20),
        "min_cohort": 2,
        "deadlines_ms": {"advertise": 1000, "masked": 4000, "unmask": 5000},
        "tier": "personal",
        "model_dimension": 1_000,
    }
    return RoundTask(**{**values, **overrides})


def dp_task(
    *,
    mechanism: str = "skellam",
    dimension: int = 4096,
    quant_bits: int = 8,
    noise_multiplier: float = 1.0,
    clip_norm: float = 1.0,
    min_survivors: int = 20,
    tier: str = "personal",
    round_id: int = 1,
    seed_byte: int = 0,
) -> RoundTask:
    """A dense task with rotation, a 32-bit ring and the cloud's own scale choice (`default_scale`);
    `noise_multiplier` is dropped (0) for mechanism "none"; min_cohort equals `min_survivors`.

    `seed_byte` varies the public seeds, as a retried attempt of the same round would."""
    codec = codec_settings(
        dimension,
        clip_norm=clip_norm,
        keep_fraction=1.0,
        quant_bits=quant_bits,
        ring_bits=32,
        index_seed=bytes((i + seed_byte) % 256 for i in range(32)),
        rotation_seed=bytes((i + 1 + seed_byte) % 256 for i in range(32)),
    )
    dp = DpSettings(
        mechanism=mechanism,
        noise_multiplier=0.0 if mechanism == "none" else noise_multiplier,
        clip_norm=clip_norm,
        min_survivors=min_survivors,
        target_delta=1e-5,
    )
    return round_task(
        round_id,
        dimension=dimension,
        codec=codec,
        dp=dp,
        secagg=SecAggSettings(threshold_fraction=0.5, neighbour_degree=0, ring_bits=32),
        min_cohort=min_survivors,
        deadlines_ms={"masked": 1},
        tier=tier,
        model_version=0,
        model_sha256=bytes(32),
    )
