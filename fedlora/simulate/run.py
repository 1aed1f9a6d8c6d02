"""A whole simulation: inputs (bundle, shards, held-out set), the fleet, the rounds, the report.

    sim = Simulation(config, work_dir=..., cache_dir=...)
    result = sim.run(on_round=print_row)       # SimulationResult: rounds, report dict

Every check that can fail on the configuration runs before the bundle is exported or any training starts
(`SimConfig.check`), and once more with the model's dimension before round 1.
"""

from __future__ import annotations

import functools
import logging
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aggregator_gateway.cloud.config import OptimizerSection
from aggregator_gateway.cloud.optimizer import make_optimizer
from aggregator_gateway.cloud.privacy import CloudAccountant
from fedlora.demo.workspace import BundleSpec, ensure_bundle, prepare_data
from fedlora.simulate.config import SimConfig, SimulateSection
from fedlora.simulate.downlink import SimDownlink
from fedlora.simulate.executor import Executor, LocalExecutor
from fedlora.simulate.network import FLEET_MIXES
from fedlora.simulate.report import build_report
from fedlora.simulate.rounds import FleetState, RoundOutcome, RoundRunner
from fl_protocol.errors import ConfigError
from fl_protocol.manifest import load_manifest

logger = logging.getLogger(__name__)

MAX_SHARDS = 256  # the stdlib corpus (~1,450 records) keeps >= 4 records per shard up to here
SEQ_LEN = {"smollm2-135m": 128}


@dataclass
class SimulationResult:
    """The rounds (with the arrays tests inspect), the initial held-out loss and report.json's content."""

    rounds: list[RoundOutcome]
    eval_losses: list[float]
    report: dict[str, Any] = field(default_factory=dict)


def resolve_bundle(config: SimConfig, cache_dir: Path, progress: Callable[[str], None]) -> Path:
    """The configured bundle directory, or the model exported once into `cache_dir`."""
    s = config.simulate
    if s.bundle_dir is not None:
        if not (s.bundle_dir / "manifest.json").exists():
            raise ConfigError(f"bundle_dir {s.bundle_dir} has no manifest.json")
        return s.bundle_dir
    return ensure_bundle(BundleSpec(model=s.model, seq_len=SEQ_LEN.get(s.model, 64)), cache_dir, progress)


class Simulation:
    """See the module docstring."""

    def __init__(
        self,
        config: SimConfig,
        *,
        work_dir: Path,
        cache_dir: Path,
        progress: Callable[[str], None] = lambda _line: None,
        executor_factory: Callable[..., Executor] | None = None,
    ) -> None:
        config.check_static()
        self.progress = progress
        self.bundle_dir = resolve_bundle(config, cache_dir, progress)
        dimension = load_manifest(self.bundle_dir).total_length
        config.check(dimension)
        config = self.config = config.with_ring_for(dimension)
        s = config.simulate
        shards = min(s.data_shards or s.devices, s.devices, MAX_SHARDS)
        data = prepare_data(work_dir / "data", num_devices=shards, seed=s.seed)
        eval_records = data.eval_records[: s.eval_records]
        factory = executor_factory or _executor_factory(s)
        self.executor = factory(self.bundle_dir, data.device_dirs, eval_records, s.devices)
        self.dimension = dimension

    def run(self, on_round: Callable[[dict[str, Any]], None] = lambda _row: None) -> SimulationResult:
        """Play every round; `on_round` gets each round's report row as soon as it is done."""
        cfg, s = self.config, self.config.simulate
        start = time.perf_counter()
        vector = np.asarray(self.executor.initial_vector, np.float32)
        step_s = s.step_s or self._measure_step_s()
        profiles = FLEET_MIXES[s.fleet_mix].draw(s.devices, np.random.default_rng([s.seed, 0]))
        dense = s.uplink == "dense_fp32"
        z = 0.0 if dense else cfg.noise_multiplier(self.dimension)
        downlink = SimDownlink(0, dense_bytes=4 * self.dimension) if dense else SimDownlink(s.downlink_bits)
        runner = RoundRunner(
            cfg,
            self.executor,
            FleetState(profiles),
            make_optimizer(OptimizerSection(**_fields(cfg.optimizer))),
            CloudAccountant(cfg.privacy, z),
            step_s=step_s,
            noise_multiplier=z,
            downlink=downlink,
        )
        eval_losses = [self.executor.evaluate(vector)]
        rounds: list[RoundOutcome] = []
        rows: list[dict[str, Any]] = []
        for round_id in range(1, s.rounds + 1):
            outcome = runner.play(round_id, vector)
            vector = outcome.new_vector
            eval_losses.append(self.executor.evaluate(vector))
            rounds.append(outcome)
            rows = build_report(cfg, self.dimension, rounds, eval_losses, runner, step_s=step_s)["rounds"]
            on_round(rows[-1])
        report = build_report(cfg, self.dimension, rounds, eval_losses, runner, step_s=step_s)
        report["measured"] = {
            "wall_s": time.perf_counter() - start,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,  # ru_maxrss: KiB
            "loadavg": list(os.getloadavg()),
        }
        self.final_vector = vector
        return SimulationResult(rounds, eval_losses, report)

    def _measure_step_s(self) -> float:
        t = self.config.training
        measure = getattr(self.executor, "step_seconds", None)
        if measure is None:
            raise ConfigError("this executor cannot measure step seconds: set [simulate].step_s")
        # A whole job of local_steps, fixed costs included (docs/simulate.md, "The network and device model").
        step_s = float(measure(steps=t.local_steps, batch_size=t.batch_size, learning_rate=t.learning_rate))
        self.progress(f"reference local step: {step_s:.4f} s on this machine (load {os.getloadavg()[0]:.2f})")
        return step_s

    def close(self) -> None:
        """Release the executor."""
        self.executor.close()


def _fields(section: Any) -> dict[str, Any]:
    return {name: getattr(section, name) for name in section.__dataclass_fields__}


def _executor_factory(s: SimulateSection) -> Callable[..., Executor]:
    """The configured executor's constructor (ray imported only when asked for)."""
    if s.executor == "ray":
        from fedlora.simulate.ray_executor import RayExecutor

        return functools.partial(RayExecutor, address=s.ray_address, workers=s.ray_workers)
    return LocalExecutor
