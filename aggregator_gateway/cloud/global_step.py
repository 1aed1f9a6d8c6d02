"""The global step of a round: combine the partials, take the server optimizer's step, quantize it for the
downlink, account the release and commit the new model version.

Privacy set-up happens once, at construction: the tasks' noise multiplier (as configured, or calibrated
from target_epsilon) and the check that the ring holds the summed noise (docs/cloud.md, "Privacy
accounting"). The accountant, the optimizer moments and the downlink's error-feedback residual are
restored from the model store, so a restarted cloud carries on (a residual missing there means zeros,
logged).

The version committed is the downlink's reconstruction (aggregator_gateway.cloud.downlink), not the
optimizer's output itself: what devices rebuild from the quantized delta is exactly what is stored.

Commit order (a crash between two steps is settled on restart, docs/failure-policy.md "Cloud restart"):
the privacy spend first (a crash then over-counts, never under-counts), then the model version (the
round's commit point), then the optimizer state, then the downlink state (residual and delta).
"""

from __future__ import annotations

import logging

import numpy as np

from aggregator_gateway.cloud.combine import combine
from aggregator_gateway.cloud.config import CloudConfig
from aggregator_gateway.cloud.downlink import DownlinkStep, ServerDownlink
from aggregator_gateway.cloud.optimizer import make_optimizer
from aggregator_gateway.cloud.privacy import CloudAccountant, resolve_noise_multiplier
from aggregator_gateway.cloud.ring import check_ring_holds_noise
from aggregator_gateway.cloud.store import ModelStore, VersionInfo
from aggregator_gateway.cloud.tasks import CodecShape, task_ring_bits
from fl_protocol.codec.settings import AUTO_RING_BITS
from fl_protocol.wire.fields import encode_fields
from fl_protocol.wire.messages import PartialAggregate

logger = logging.getLogger(__name__)


class GlobalStep:
    """Server optimizer plus privacy accountant over one model store; see the module docstring.

    Raises ConfigError at construction if the ring cannot hold the summed noise.
    """

    def __init__(self, config: CloudConfig, *, store: ModelStore, shape: CodecShape) -> None:
        self._config, self._store, self._shape = config, store, shape
        noise = resolve_noise_multiplier(
            config.privacy,
            rounds=config.cloud.rounds,
            scale=shape.scale,
            sparse_length=shape.sparse_length,
        )
        check_task_ring(config, shape, noise)
        self._accountant = CloudAccountant(config.privacy, noise, store.get_meta("accountant"))
        self._optimizer = make_optimizer(config.optimizer)
        latest = store.latest()
        state = None if latest is None else store.optimizer_state(version=latest.version)
        if state is not None:
            self._optimizer.load_state(state)
        self._downlink = restore_downlink(store, config.cloud.downlink_bits)

    @property
    def noise_multiplier(self) -> float:
        """z that every task carries (0 for mechanism 'none')."""
        return self._accountant.noise_multiplier

    def epsilon(self) -> float | None:
        """ε spent so far at [privacy].delta (None: unbounded, mechanism 'none')."""
        return self._accountant.epsilon()

    def compute(self, model_version: int, usable: list[PartialAggregate]) -> DownlinkStep:
        """The next model from `model_version` and the partials (each with count > 0): the downlink step
        whose float32 `vector` becomes the next version (module docstring).

        Raises ProtocolError or ValueError if the partials cannot be combined or the step is not finite.
        """
        combined = combine(usable, self._config.aggregation)
        model = self._store.load(model_version)
        new_vector = self._optimizer.step(model, combined.mean_update).astype(np.float32)
        if not np.all(np.isfinite(new_vector)):
            raise ValueError("the optimizer produced non-finite values")
        return self._downlink.step(model, new_vector)

    def commit(self, step: DownlinkStep, *, parent: int, round_id: int, now_ms: int) -> VersionInfo:
        """Account the round's release, store `step.vector` as the next version, save the optimizer state
        and the downlink state (the residual, and the delta from `parent` for publishing).

        Returns the new version's row. Store errors and OSError propagate (the cloud then exits 70).
        """
        self._accountant.record_round(
            clip_norm=self._config.privacy.clip_norm,
            scale=self._shape.scale,
            sparse_length=self._shape.sparse_length,
        )
        self._store.set_meta("accountant", self._accountant.to_json())
        info = self._store.add(step.vector, parent=parent, round_id=round_id, created_ms=now_ms)
        self._store.save_optimizer_state(self._optimizer.state(), version=info.version)
        delta = step.message(model_version=info.version, base_version=parent)
        body = None if delta is None else encode_fields(delta.to_fields())
        self._store.save_downlink_state(step.residual, body, version=info.version)
        self._downlink.adopt(step)
        return info


def check_task_ring(config: CloudConfig, shape: CodecShape, noise_multiplier: float) -> None:
    """ConfigError unless every task's ring holds the summed noise (aggregator_gateway/cloud/ring.py).

    [codec] ring_bits = 0: some ring of at most 32 bits must hold `config.max_cohort` devices (the ring
    is resolved, and logged, here as it will be for every task). An explicit ring must hold
    max(total_devices, min_cohort) devices.
    """
    if config.codec.ring_bits == AUTO_RING_BITS:
        bits = task_ring_bits(
            config, max_cohort=config.max_cohort, noise_multiplier=noise_multiplier, scale=shape.scale
        )
        logger.info(
            "[codec] ring_bits = 0: tasks carry a %d-bit ring (%d-bit values, cohorts of up to %d devices, "
            "noise multiplier %.4g)",
            bits,
            config.codec.quant_bits,
            config.max_cohort,
            noise_multiplier,
        )
        return
    check_ring_holds_noise(
        quant_bits=config.codec.quant_bits,
        ring_bits=config.codec.ring_bits,
        max_clients=max(config.cloud.total_devices, config.min_cohort),
        min_survivors=config.privacy.min_survivors,
        noise_multiplier=noise_multiplier,
        clip_norm=config.privacy.clip_norm,
        scale=shape.scale,
    )


def restore_downlink(store: ModelStore, bits: int) -> ServerDownlink:
    """The downlink with the residual the store kept for its latest version; a missing (or mismatched)
    residual means zeros, logged."""
    latest = store.latest()
    if bits == 0 or latest is None:
        return ServerDownlink(bits)
    residual = store.downlink_residual(version=latest.version)
    dimension = store.load(latest.version).shape
    if residual is not None and residual.shape != dimension:
        logger.warning("downlink residual of model version %d has another length: ignored", latest.version)
        residual = None
    if residual is None:
        log = logger.warning if latest.version > 0 else logger.info
        log(
            "downlink: no residual stored for model version %d; error feedback starts from zeros",
            latest.version,
        )
    return ServerDownlink(bits, residual=residual)
