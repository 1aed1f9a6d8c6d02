"""One simulated round: select, train, encode, aggregate per gateway, then the cloud's global step.

The pieces are the production ones: the device's DP encoder (`edge_runtime.agent.encode.encode_for_task`),
the gateway's `RoundDriver` with real SecAgg+ clients (fedlora/simulate/cohort_run.py), the gateway's
`PartialAggregate`, the cloud's `combine` and server optimizer, and the cloud's accountant. The
"dense_fp32" uplink is the standard baseline instead: each survivor's float32 Δ is summed exactly (no
clipping, noise, quantization or masking), like Flower's FedAvg with its defaults. The next global and
each device's download: fedlora/simulate/downlink.py (the cloud's `ServerDownlink`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from aggregator_gateway.cloud.combine import combine
from aggregator_gateway.cloud.config import AggregationSection
from aggregator_gateway.cloud.optimizer import ServerOptimizer
from aggregator_gateway.cloud.privacy import CloudAccountant
from aggregator_gateway.cloud.tasks import build_task_settings
from edge_runtime.agent.encode import encode_for_task
from fedlora.simulate.cohort_run import CohortOutcome, CohortRun
from fedlora.simulate.config import SimConfig
from fedlora.simulate.downlink import SimDownlink
from fedlora.simulate.executor import TIER, Executor, TrainRequest
from fedlora.simulate.network import (
    DENSE_ROUND_TRIPS,
    SECAGG_ROUND_TRIPS,
    DeviceProfile,
    RoundTraffic,
    compute_only_s,
    device_round_s,
)
from fl_protocol.codec.compress import vector_sha256
from fl_protocol.stages import DEADLINE_STAGES
from fl_protocol.wire.messages import GlobalModelDelta, PartialAggregate, RoundTask

logger = logging.getLogger(__name__)

MASKED_STAGE_ROUND_TRIPS = 2  # advertise -> roster, shares -> routed: before the masked upload
FAR_DEADLINE_MS = 2**40  # the simulator closes stages itself; the deadline is modelled, not waited for


def device_name(index: int) -> str:
    """Id of virtual device `index`."""
    return f"dev-{index:04d}"


def gateway_name(index: int) -> str:
    """Id of gateway `index`."""
    return f"gw-{index}"


def _seed_bytes(seed: int, label: str, round_id: int) -> bytes:
    return hashlib.sha256(f"fedlora/sim/{seed}/{label}/{round_id}".encode()).digest()


@dataclass
class FleetState:
    """What persists across rounds: the devices' profiles and error-feedback residuals."""

    profiles: list[DeviceProfile]
    residuals: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass
class RoundOutcome:
    """Everything measured and modelled in one round (report.json takes the scalar part)."""

    round_id: int
    online: int  # devices online when the round started: the simulator puts all of them into cohorts
    survivors: int
    train_loss: float | None
    update_frame_bytes: list[int]
    control_frame_bytes: list[int]
    model_bytes: int  # the full model frame of the round's global
    delta_model_bytes: int  # its delta frame from the previous version (0: none)
    download_bytes: list[int]  # what each online device downloaded (delta or full)
    modelled_s: float
    compute_only_s: float
    seconds: float
    cohorts: list[CohortOutcome]
    new_vector: np.ndarray
    published_delta: GlobalModelDelta | None  # new_vector as a delta from this round's global (None: none)
    aborted: list[str]
    epsilon: float | None


def make_task(
    config: SimConfig, global_vector: np.ndarray, round_id: int, *, noise_multiplier: float
) -> RoundTask:
    """The round's task with the cloud's settings builder (aggregator_gateway/cloud/tasks.py), seeds
    from the simulation's seed, [codec] ring_bits = 0 resolved for the largest cohort, min_cohort 3 and
    deadlines the simulator never waits for."""
    dimension = int(global_vector.shape[0])
    _k, scale = config.codec_shape(dimension)
    seed = config.simulate.seed
    settings = build_task_settings(
        config,
        scale=scale,
        noise_multiplier=noise_multiplier,
        max_cohort=max(config.cohort_sizes),
        index_seed=_seed_bytes(seed, "index", round_id),
        rotation_seed=_seed_bytes(seed, "rotation", round_id),
    )
    return RoundTask(
        round_id=round_id,
        model_version=round_id - 1,
        model_sha256=vector_sha256(global_vector.astype(np.float32)),
        training=settings.training,
        codec=settings.codec,
        dp=settings.dp,
        secagg=settings.secagg,
        min_cohort=3,
        deadlines_ms={stage.value: FAR_DEADLINE_MS for stage in DEADLINE_STAGES},
        tier=TIER,
        model_dimension=dimension,
    )


def select_devices(config: SimConfig, state: FleetState, round_id: int) -> tuple[list[list[int]], set[int]]:
    """(members per gateway, devices that vanish before uploading) for this round.

    A device takes part when it is available (its profile's availability); of each gateway's members,
    round(dropout · n) chosen at random vanish after sharing their keys.
    """
    s = config.simulate
    rng = np.random.default_rng([s.seed, round_id, 1])
    online = rng.random(s.devices) < np.array([p.availability for p in state.profiles])
    members = [[i for i in range(g, s.devices, s.gateways) if online[i]] for g in range(s.gateways)]
    vanished: set[int] = set()
    for group in members:
        count = round(s.dropout * len(group))
        vanished |= {int(i) for i in rng.choice(group, size=count, replace=False)} if count else set()
    return members, vanished


class RoundRunner:
    """Plays rounds of one simulation (see the module docstring). `downlink`: the modelled downlink
    (default: every device downloads `model_bytes` every round, as bench/simulate_scale.py wants)."""

    def __init__(
        self,
        config: SimConfig,
        executor: Executor,
        state: FleetState,
        optimizer: ServerOptimizer,
        accountant: CloudAccountant,
        *,
        step_s: float,
        noise_multiplier: float,
        model_bytes: int = 0,
        downlink: SimDownlink | None = None,
    ) -> None:
        self.config, self.executor, self.state = config, executor, state
        self.optimizer, self.accountant = optimizer, accountant
        self.step_s, self.noise_multiplier = step_s, noise_multiplier
        self.downlink = downlink if downlink is not None else SimDownlink(0, dense_bytes=model_bytes)

    def play(self, round_id: int, global_vector: np.ndarray) -> RoundOutcome:
        """One round from `global_vector`; returns the outcome with the next global vector."""
        start = time.perf_counter()
        cfg = self.config
        self.downlink.begin(global_vector)
        members, vanished = select_devices(cfg, self.state, round_id)
        training = [i for group in members for i in group if i not in vanished]
        t = cfg.training
        outcomes = self.executor.train_many(
            [
                TrainRequest(i, round_id, global_vector, t.local_steps, t.batch_size, t.learning_rate)
                for i in training
            ]
        )
        deltas = {i: o.delta for i, o in zip(training, outcomes, strict=True)}
        losses = {i: o.train_loss for i, o in zip(training, outcomes, strict=True)}
        if cfg.simulate.uplink == "dense_fp32":
            cohorts = self._dense(round_id, global_vector, members, vanished, deltas)
        else:
            cohorts = self._secagg(round_id, global_vector, members, vanished, deltas)
        return self._finish(round_id, global_vector, (members, vanished), cohorts, losses, start)

    # -- the standard baseline ---------------------------------------------------------------------
    def _dense(
        self,
        round_id: int,
        global_vector: np.ndarray,
        members: list[list[int]],
        vanished: set[int],
        deltas: dict[int, np.ndarray | None],
    ) -> list[CohortOutcome]:
        dense_bytes = 4 * int(global_vector.shape[0])
        cohorts = []
        for g, group in enumerate(members):
            outcome = CohortOutcome(gateway_name(g), tuple(device_name(i) for i in group))
            uploaders = [i for i in group if i not in vanished]
            on_time = [i for i in uploaders if not self._late(i, dense_bytes, control_bytes=0, dense=True)]
            outcome.update_frame_bytes = {device_name(i): dense_bytes for i in uploaders}
            outcome.masked_inputs = {device_name(i): np.asarray(deltas[i], np.float32) for i in on_time}
            cohorts.append(outcome)
        return cohorts

    # -- fedlora: codec + DP + SecAgg+ at each gateway ------------------------------------------------
    def _secagg(
        self,
        round_id: int,
        global_vector: np.ndarray,
        members: list[list[int]],
        vanished: set[int],
        deltas: dict[int, np.ndarray | None],
    ) -> list[CohortOutcome]:
        cfg = self.config
        task = make_task(cfg, global_vector, round_id, noise_multiplier=self.noise_multiplier)
        encoded: dict[str, np.ndarray] = {}
        for i, delta in deltas.items():
            update = encode_for_task(
                np.asarray(delta),
                residual=self.state.residuals.get(i),
                task=task,
                rounding_rng=np.random.default_rng([cfg.simulate.seed, round_id, i, 2]),
                noise_rng=np.random.default_rng([cfg.simulate.seed, round_id, i, 3]),
            )
            if update.residual is not None:
                self.state.residuals[i] = update.residual
            encoded[device_name(i)] = update.ring_values
        index = {device_name(i): i for group in members for i in group}
        cohorts = []
        for g, group in enumerate(members):
            names = [device_name(i) for i in group]
            if len(names) < task.min_cohort:
                cohorts.append(
                    CohortOutcome(gateway_name(g), tuple(names), aborted=f"only {len(names)} online")
                )
                continue
            run = CohortRun(gateway_name(g), task, names, seed=cfg.simulate.seed)

            def late(name: str, frame_bytes: int, run: CohortRun = run) -> bool:
                control = run.outcome.control_frame_bytes.get(name, 0)
                return self._late(index[name], frame_bytes, control_bytes=control, dense=False)

            cohorts.append(
                run.run(encoded.__getitem__, vanished=frozenset(device_name(i) for i in vanished), late=late)
            )
        return cohorts

    def _late(self, device: int, payload_bytes: int, *, control_bytes: int, dense: bool) -> bool:
        """Whether the device's update arrives after the masked-stage deadline (never without one)."""
        deadline = self.config.simulate.deadline_s
        if deadline <= 0:
            return False
        trips = DENSE_ROUND_TRIPS if dense else MASKED_STAGE_ROUND_TRIPS
        download = self.downlink.download_bytes(device)
        traffic = RoundTraffic(download, control_bytes, trips - 1 if dense else trips)
        return self._device_time(device, traffic, payload_bytes).total_s > deadline

    def _device_time(self, device: int, traffic: RoundTraffic, payload_bytes: int):  # noqa: ANN202
        return device_round_s(
            self.state.profiles[device],
            traffic=traffic,
            payload_bytes=payload_bytes,
            steps=self.config.training.local_steps,
            step_s=self.step_s,
        )

    # -- the cloud ----------------------------------------------------------------------------------
    def _finish(
        self,
        round_id: int,
        global_vector: np.ndarray,
        selection: tuple[list[list[int]], set[int]],
        cohorts: list[CohortOutcome],
        losses: dict[int, float | None],
        start: float,
    ) -> RoundOutcome:
        members, vanished = selection
        dense = self.config.simulate.uplink == "dense_fp32"
        partials = [p for p in (self._partial(c, round_id, dense) for c in cohorts) if p is not None]
        online_devices = [i for group in members for i in group]
        online = len(online_devices)
        survivors = [name for c in cohorts for name in self._survivors(c, dense)]
        downlink = self.downlink
        full_bytes, delta_bytes = downlink.full_bytes, downlink.delta_bytes
        downloads = [downlink.download_bytes(i) for i in online_devices]
        target = None
        if partials:
            mean = combine(partials, AggregationSection()).mean_update
            target = self.optimizer.step(global_vector, mean).astype(np.float32)
            k, scale = self.config.codec_shape(int(global_vector.shape[0]))
            self.accountant.record_round(
                clip_norm=self.config.privacy.clip_norm,
                scale=scale,
                sparse_length=k,
            )
        modelled, bound = self._modelled_times(cohorts, survivors, dense)
        new_vector = downlink.publish(
            global_vector, target, round_id=round_id, online=set(online_devices), vanished=vanished
        )
        index = {device_name(i): i for group in members for i in group}
        train = [losses[index[n]] for n in survivors if losses.get(index[n]) is not None]
        return RoundOutcome(
            round_id=round_id,
            online=online,
            survivors=len(survivors),
            train_loss=float(np.mean(train)) if train else None,  # type: ignore[arg-type]
            update_frame_bytes=[c.update_frame_bytes[n] for c in cohorts for n in self._survivors(c, dense)],
            control_frame_bytes=[
                c.control_frame_bytes.get(n, 0) for c in cohorts for n in self._survivors(c, dense)
            ],
            model_bytes=full_bytes,
            delta_model_bytes=delta_bytes,
            download_bytes=downloads,
            modelled_s=modelled,
            compute_only_s=bound,
            seconds=time.perf_counter() - start,
            cohorts=cohorts,
            new_vector=new_vector,
            published_delta=downlink.published,
            aborted=[f"{c.gateway}: {c.aborted}" for c in cohorts if c.aborted],
            epsilon=self.accountant.epsilon(),
        )

    @staticmethod
    def _survivors(cohort: CohortOutcome, dense: bool) -> list[str]:
        return sorted(cohort.masked_inputs) if dense else list(cohort.survivors)

    def _partial(self, cohort: CohortOutcome, round_id: int, dense: bool) -> PartialAggregate | None:
        if dense:
            if not cohort.masked_inputs:
                return None
            total = np.sum([v.astype(np.float64) for v in cohort.masked_inputs.values()], axis=0)
            names = tuple(sorted(cohort.masked_inputs))
            return PartialAggregate(
                cohort.gateway, round_id, round_id - 1, total, len(names), float(len(names)), names
            )
        if cohort.result is None:
            return None
        r = cohort.result
        return PartialAggregate(
            cohort.gateway, round_id, round_id - 1, r.vector_sum, r.count, r.weight_sum, r.survivors
        )

    def _modelled_times(
        self, cohorts: Sequence[CohortOutcome], survivors: list[str], dense: bool
    ) -> tuple[float, float]:
        """(round's modelled wall-clock, its compute-only bound): the slowest survivor decides."""
        trips = DENSE_ROUND_TRIPS if dense else SECAGG_ROUND_TRIPS
        times, bounds = [0.0], [0.0]
        late = False
        for c in cohorts:
            uploaded = set(c.update_frame_bytes)
            kept = set(self._survivors(c, dense))
            late = late or bool(uploaded - kept)
            for name in kept:
                device = int(name.split("-")[1])
                traffic = RoundTraffic(
                    self.downlink.download_bytes(device),
                    c.control_frame_bytes.get(name, 0),
                    trips - 1 if dense else trips,
                )
                times.append(self._device_time(device, traffic, c.update_frame_bytes[name]).total_s)
                bounds.append(
                    compute_only_s(
                        steps=self.config.training.local_steps,
                        step_s=self.step_s,
                        profile=self.state.profiles[device],
                    )
                )
        round_s = max(times)
        if late:
            round_s = max(round_s, self.config.simulate.deadline_s)
        return round_s, max(bounds)
