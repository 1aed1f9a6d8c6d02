"""Round tasks with DP settings for the privacy tests (codec scale chosen as the cloud chooses it)."""

from __future__ import annotations

from fl_protocol.codec.settings import CodecSettings, default_scale, sparse_count
from fl_protocol.wire.messages import RoundTask
from fl_protocol.wire.task_settings import DpSettings, SecAggSettings, TrainingSettings


def make_dp_task(
    *,
    mechanism: str = "skellam",
    dim: int = 4096,
    quant_bits: int = 8,
    z: float = 1.0,
    clip: float = 1.0,
    min_survivors: int = 20,
    tier: str = "personal",
    round_id: int = 1,
    seed_byte: int = 0,
) -> RoundTask:
    """A task with rotation, a 32-bit ring and the cloud's own scale choice (`default_scale`).

    `seed_byte` varies the public seeds, as a retried attempt of the same round would."""
    k = sparse_count(dim, 1.0)
    codec = CodecSettings(
        clip_norm=clip,
        sparsity_fraction=1.0,
        index_seed=bytes((i + seed_byte) % 256 for i in range(32)),
        rotate=True,
        rotation_seed=bytes((i + 1 + seed_byte) % 256 for i in range(32)),
        quant_bits=quant_bits,
        ring_bits=32,
        scale=default_scale(clip, quant_bits, k, rotate=True),
        error_feedback=False,
    )
    noise = 0.0 if mechanism == "none" else z
    return RoundTask(
        round_id=round_id,
        model_version=0,
        model_sha256=bytes(32),
        training=TrainingSettings(local_steps=1, batch_size=1, learning_rate=1e-3),
        codec=codec,
        dp=DpSettings(mechanism, noise, clip, min_survivors, 1e-5),
        secagg=SecAggSettings(threshold_fraction=0.5, neighbour_degree=0, ring_bits=32),
        min_cohort=min_survivors,
        deadlines_ms={"masked": 1},
        tier=tier,
        model_dimension=dim,
    )
