"""Building a RoundTask from the configuration: fresh public seeds, quantization scale, deadlines.

The index-set and rotation seeds are drawn fresh for every round attempt from the injected random source
(os.urandom in production), so a retried round never reuses the index set of a failed one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aggregator_gateway.cloud.config import CloudConfig
from fl_protocol.codec.settings import SEED_BYTES, CodecSettings, default_scale, sparse_count
from fl_protocol.stages import DEADLINE_STAGES
from fl_protocol.wire.messages import RoundTask
from fl_protocol.wire.task_settings import DpSettings, SecAggSettings, TrainingSettings


@dataclass(frozen=True)
class CodecShape:
    """What the codec settings imply for a d-dimensional model: sparse length k and scale s."""

    dimension: int
    sparse_length: int
    scale: float


def codec_shape(config: CloudConfig, dimension: int) -> CodecShape:
    """k = sparse_count(d, f) and s = default_scale(C, q, k, rotate) (the same for every round)."""
    k = sparse_count(dimension, config.codec.keep_fraction)
    scale = default_scale(config.privacy.clip_norm, config.codec.quant_bits, k, rotate=config.codec.rotate)
    return CodecShape(dimension, k, scale)


def stage_deadlines_ms(config: CloudConfig, now_ms: int) -> dict[str, int]:
    """Absolute, cumulative deadline of each stage (docs/round-protocol.md, Deadlines), in ms, keyed by
    the `DEADLINE_STAGES` values in their order."""
    deadlines: dict[str, int] = {}
    at_ms = now_ms
    for stage in DEADLINE_STAGES:
        at_ms += int(round(getattr(config.cloud.stage_timeouts_s, stage.value) * 1000))
        deadlines[stage.value] = at_ms
    return deadlines


def build_codec(
    config: CloudConfig, shape: CodecShape, random_bytes: Callable[[int], bytes]
) -> CodecSettings:
    """Codec settings of one round attempt, with fresh index-set and rotation seeds."""
    c = config.codec
    return CodecSettings(
        clip_norm=config.privacy.clip_norm,
        keep_fraction=c.keep_fraction,
        index_seed=random_bytes(SEED_BYTES),
        rotate=c.rotate,
        rotation_seed=random_bytes(SEED_BYTES),
        quant_bits=c.quant_bits,
        ring_bits=c.ring_bits,
        scale=shape.scale,
        error_feedback=c.error_feedback,
    )


def build_task(
    config: CloudConfig,
    *,
    round_id: int,
    model_version: int,
    model_sha256: bytes,
    shape: CodecShape,
    noise_multiplier: float,
    now_ms: int,
    random_bytes: Callable[[int], bytes],
) -> RoundTask:
    """The signed-to-be task of one round attempt."""
    p = config.privacy
    return RoundTask(
        round_id=round_id,
        model_version=model_version,
        model_sha256=model_sha256,
        training=TrainingSettings(
            local_steps=config.training.local_steps,
            batch_size=config.training.batch_size,
            learning_rate=config.training.learning_rate,
            weighting=config.training.weighting,
            qffl_q=config.training.qffl_q,
            weight_reference=config.training.weight_reference,
        ),
        codec=build_codec(config, shape, random_bytes),
        dp=DpSettings(
            mechanism=p.mechanism,
            noise_multiplier=noise_multiplier,
            clip_norm=p.clip_norm,
            min_survivors=p.min_survivors,
            target_delta=p.delta,
        ),
        secagg=SecAggSettings(
            threshold_fraction=config.secagg.threshold_fraction,
            neighbour_degree=config.secagg.neighbour_degree,
            ring_bits=config.codec.ring_bits,
            mode=config.secagg.mode,
        ),
        min_cohort=config.min_cohort,
        deadlines_ms=stage_deadlines_ms(config, now_ms),
        tier=p.tier,
        model_dimension=shape.dimension,
    )
