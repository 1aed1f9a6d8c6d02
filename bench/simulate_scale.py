"""Scale of `fedlora simulate`: cost per round for N = 10, 100, 1,000 virtual devices (tiny-llama).

    python bench/simulate_scale.py [--sizes 10,100,1000] [--rounds 2] [--cache-dir DIR]

Two parts of a round's cost are measured separately, each in the same run:

- protocol: everything the simulator does besides local training, at the full N: the device-side DP
  encoder, real SecAgg+ clients (keys, Shamir shares, masking, frame signing and verification), the
  gateways' RoundDriver (unmasking with 10% dropout, decoding) and the cloud's combine, optimizer and
  accountant. Each size runs in its own process so its peak RSS is its own. The devices' updates come
  from a stand-in trainer that returns random Δ of the bundle's dimension (the protocol's cost does not
  depend on the values).
- training: seconds of one device's local training job on the shared ONNX Runtime trainer (measured on
  a few devices) × N: one trainer plays every device in turn, so training is linear in N.

Cohorts of at most 100 devices per gateway (G = ceil(N / 100)). The baseline of the comparison is the
N = 10 row (ratio column).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregator_gateway.cloud.optimizer import FedAvg  # noqa: E402
from aggregator_gateway.cloud.privacy import CloudAccountant  # noqa: E402
from edge_runtime.agent.worker import TrainingOutcome  # noqa: E402
from fedlora.simulate.config import SimConfig  # noqa: E402
from fedlora.simulate.executor import TrainRequest  # noqa: E402
from fedlora.simulate.network import FLEET_MIXES  # noqa: E402
from fedlora.simulate.rounds import FleetState, RoundRunner  # noqa: E402

TINY_DIMENSION = 3584  # tiny-llama's LoRA r 8 on q_proj, v_proj (checked against the bundle in main)
COHORT = 100


@dataclass
class RandomDeltas:
    """Stand-in trainer for the protocol measurement: Δ ~ N(0, 0.01²) per coordinate, seeded."""

    dimension: int
    seed: int = 0

    def train_many(self, requests: list[TrainRequest]) -> list[TrainingOutcome]:
        out = []
        for r in requests:
            rng = np.random.default_rng([self.seed, r.round_id, r.device])
            delta = (0.01 * rng.standard_normal(self.dimension)).astype(np.float32)
            out.append(TrainingOutcome(r.round_id, delta, 1.0, None, r.steps, 0))
        return out

    def evaluate(self, vector: np.ndarray) -> float:
        return 0.0

    def close(self) -> None:
        return None


def protocol_cost(devices: int, rounds: int, dimension: int) -> dict[str, float]:
    """Seconds per round of everything but training, and this process's peak RSS (MB)."""
    gateways = math.ceil(devices / COHORT)
    config = SimConfig.load(
        None,
        {
            "simulate": {
                "devices": devices,
                "gateways": gateways,
                "rounds": rounds,
                "dropout": 0.1,
                "fleet_mix": "lte",
                "step_s": 1.0,
            }
        },
    )
    config.check(dimension)
    config = config.with_ring_for(dimension)  # [codec] ring_bits = 0: the ring the cloud would resolve
    profiles = FLEET_MIXES["lte"].draw(devices, np.random.default_rng(0))
    z = config.noise_multiplier(dimension)
    runner = RoundRunner(
        config,
        RandomDeltas(dimension),
        FleetState(profiles),
        FedAvg(),
        CloudAccountant(config.privacy, z),
        step_s=1.0,
        noise_multiplier=z,
        model_bytes=4 * dimension,
    )
    vector = np.zeros(dimension, np.float32)
    seconds = []
    for round_id in range(1, rounds + 1):
        start = time.perf_counter()
        outcome = runner.play(round_id, vector)
        seconds.append(time.perf_counter() - start)
        vector = outcome.new_vector
        assert outcome.survivors > 0, outcome.aborted
    return {
        "devices": devices,
        "gateways": gateways,
        "protocol_s_per_round": float(np.mean(seconds)),
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss it does not inherit the parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def training_job_s(bundle_dir: Path, cache_dir: Path, jobs: int = 4, local_steps: int = 10) -> float:
    """Mean seconds of one device's training job (the demo's 10 local steps, batch 8) on this machine."""
    import tempfile

    from fedlora.demo.workspace import prepare_data
    from fedlora.simulate.executor import LocalExecutor

    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_data(Path(tmp), num_devices=jobs, seed=0)
        executor = LocalExecutor(bundle_dir, data.device_dirs, data.eval_records[:8], jobs)
        try:
            vector = executor.initial_vector
            executor.train_many([TrainRequest(0, 1, vector, 1, 8, 5e-3)])  # warm-up
            start = time.perf_counter()
            executor.train_many([TrainRequest(i, 1, vector, local_steps, 8, 5e-3) for i in range(jobs)])
            return (time.perf_counter() - start) / jobs
        finally:
            executor.close()


def main() -> int:
    """Measure every size (each in a child process) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dimension", type=int, default=TINY_DIMENSION, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(protocol_cost(args.one, args.rounds, args.dimension)))
        return 0
    from fedlora.demo.workspace import BundleSpec, default_cache_dir, ensure_bundle
    from fl_protocol.manifest import load_manifest

    bundle = ensure_bundle(BundleSpec(), args.cache_dir or default_cache_dir(), lambda _line: None)
    dimension = load_manifest(bundle).total_length
    job_s = training_job_s(bundle, args.cache_dir or default_cache_dir())
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        load = os.getloadavg()[0]
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                str(size),
                "--rounds",
                str(args.rounds),
                "--dimension",
                str(dimension),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append({**json.loads(child.stdout.strip().splitlines()[-1]), "load": load})
    print(
        f"{date.today().isoformat()}  {platform.machine()}  {os.cpu_count()} CPU cores  tiny-llama "
        f"(d = {dimension})  rounds={args.rounds}  training job (10 steps, batch 8) = {job_s:.2f} s"
    )
    print(
        "| N devices | gateways | protocol s/round | ratio to N=10 | training s/round (N × job) "
        "| peak RSS MB (protocol) | load avg |"
    )
    print("|---|---|---|---|---|---|---|")
    base = rows[0]["protocol_s_per_round"]
    for r in rows:
        print(
            f"| {r['devices']:,} | {r['gateways']} | {r['protocol_s_per_round']:.2f} | "
            f"{r['protocol_s_per_round'] / base:.1f}x | {r['devices'] * job_s:,.0f} | "
            f"{r['peak_rss_mb']:.0f} | {r['load']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
