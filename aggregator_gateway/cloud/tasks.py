"""Building a RoundTask from the configuration: fresh public seeds, quantization scale, ring, deadlines.

The index-set and rotation seeds are drawn fresh for every round attempt from the injected random source
(os.urandom in production), so a retried round never reuses the index set of a failed one. The settings
blocks come from `build_task_settings`, which `fedlora simulate` calls too (with seeds of its own), so a
simulated round carries the settings the cloud would send. `[codec] ring_bits = 0` is resolved here for
every task (`task_ring_bits`); a task on the wire always carries a ring of 8..32 bits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from aggregator_gateway.cloud.config import (
    CloudConfig,
    CodecSection,
    PrivacySection,
    SecAggSection,
    TrainingSection,
)
from aggregator_gateway.cloud.ring import smallest_ring_bits
from fl_protocol.codec.settings import (
    AUTO_RING_BITS,
    SEED_BYTES,
    CodecSettings,
    default_scale,
    sparse_count,
)
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


class TaskSections(Protocol):
    """The config sections a task's settings come from: CloudConfig has them, and so has the simulator's
    SimConfig (fedlora/simulate/config.py), which builds its tasks with `build_task_settings` too."""

    @property
    def training(self) -> TrainingSection: ...

    @property
    def codec(self) -> CodecSection: ...

    @property
    def privacy(self) -> PrivacySection: ...

    @property
    def secagg(self) -> SecAggSection: ...


@dataclass(frozen=True)
class TaskSettings:
    """The four settings blocks of a RoundTask."""

    training: TrainingSettings
    codec: CodecSettings
    dp: DpSettings
    secagg: SecAggSettings


def task_ring_bits(sections: TaskSections, *, max_cohort: int, noise_multiplier: float, scale: float) -> int:
    """The ring a task carries: [codec].ring_bits as given (checked at start, not here), or for 0 the
    smallest ring that holds `max_cohort` devices' q-bit values plus the summed noise of
    `noise_multiplier` at quantization scale `scale` (`ring.smallest_ring_bits`; ConfigError if none
    of at most 32 bits does)."""
    codec, privacy = sections.codec, sections.privacy
    if codec.ring_bits != AUTO_RING_BITS:
        return codec.ring_bits
    return smallest_ring_bits(
        quant_bits=codec.quant_bits,
        max_clients=max_cohort,
        min_survivors=privacy.min_survivors,
        noise_multiplier=noise_multiplier,
        clip_norm=privacy.clip_norm,
        scale=scale,
    )


def build_task_settings(
    sections: TaskSections,
    *,
    scale: float,
    noise_multiplier: float,
    max_cohort: int,
    index_seed: bytes,
    rotation_seed: bytes,
) -> TaskSettings:
    """Training, codec, DP and SecAgg settings of one round from the config sections.

    scale: the codec's quantization scale s (`codec_shape`); noise_multiplier: z of the round (0 for
    mechanism 'none'); max_cohort: the largest cohort a gateway may aggregate, for `task_ring_bits`;
    index_seed, rotation_seed: the round's 32-byte public seeds. The codec's and the DP block's clip norm
    are [privacy].clip_norm; the SecAgg block's ring is the codec's. ConfigError if a block is invalid or
    no ring fits.
    """
    t, c, p, sa = sections.training, sections.codec, sections.privacy, sections.secagg
    ring_bits = task_ring_bits(
        sections, max_cohort=max_cohort, noise_multiplier=noise_multiplier, scale=scale
    )
    return TaskSettings(
        training=TrainingSettings(
            local_steps=t.local_steps,
            batch_size=t.batch_size,
            learning_rate=t.learning_rate,
            weighting=t.weighting,
            qffl_q=t.qffl_q,
            weight_reference=t.weight_reference,
        ),
        codec=CodecSettings(
            clip_norm=p.clip_norm,
            keep_fraction=c.keep_fraction,
            index_seed=index_seed,
            rotate=c.rotate,
            rotation_seed=rotation_seed,
            quant_bits=c.quant_bits,
            ring_bits=ring_bits,
            scale=scale,
            error_feedback=c.error_feedback,
        ),
        dp=DpSettings(
            mechanism=p.mechanism,
            noise_multiplier=noise_multiplier,
            clip_norm=p.clip_norm,
            min_survivors=p.min_survivors,
            target_delta=p.delta,
        ),
        secagg=SecAggSettings(
            threshold_fraction=sa.threshold_fraction,
            neighbour_degree=sa.neighbour_degree,
            ring_bits=ring_bits,
            mode=sa.mode,
        ),
    )


def cloud_task_settings(
    config: CloudConfig,
    shape: CodecShape,
    *,
    noise_multiplier: float,
    random_bytes: Callable[[int], bytes],
) -> TaskSettings:
    """`build_task_settings` for one round attempt of the cloud: fresh index-set and rotation seeds (in
    that order) and [codec] ring_bits = 0 resolved for `config.max_cohort` devices."""
    return build_task_settings(
        config,
        scale=shape.scale,
        noise_multiplier=noise_multiplier,
        max_cohort=config.max_cohort,
        index_seed=random_bytes(SEED_BYTES),
        rotation_seed=random_bytes(SEED_BYTES),
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
    """The signed-to-be task of one round attempt (`cloud_task_settings` plus deadlines and model)."""
    settings = cloud_task_settings(
        config, shape, noise_multiplier=noise_multiplier, random_bytes=random_bytes
    )
    return RoundTask(
        round_id=round_id,
        model_version=model_version,
        model_sha256=model_sha256,
        training=settings.training,
        codec=settings.codec,
        dp=settings.dp,
        secagg=settings.secagg,
        min_cohort=config.min_cohort,
        deadlines_ms=stage_deadlines_ms(config, now_ms),
        tier=config.privacy.tier,
        model_dimension=shape.dimension,
    )
