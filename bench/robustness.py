"""Poisoning robustness: 20 devices, 4 malicious, with and without groups + a robust combination.

    python bench/robustness.py [--rounds 3] [--cache-dir DIR]

One in-process federation built from the real components, without MQTT (the transport changes nothing
in the arithmetic): the demo's exported tiny-llama bundle and non-IID shards, one shared ONNX Runtime
trainer playing every device, the real update codec (`encode_update` for honest devices), the gateway's
real `RoundDriver` driving real SecAggClient/SecAggServer objects through every SecAgg+ stage
(tests/kit/secagg_round.py), the gateway's decode + group combination, and FedAvg with
server learning rate 1 in the cloud. Malicious devices control their own encoder: they skip clipping
and send `factor · Δ` (factor 20 or −20), quantized at the round's scale and clamped to the q-bit range
like every value, so the gateway cannot tell them apart by format. Method and results: docs/robustness.md.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregator_gateway.cloud.optimizer import FedAvg  # noqa: E402
from aggregator_gateway.gateway.rounds import GroupPolicy, RoundDriver, RoundResult, split_groups  # noqa: E402
from edge_runtime.data import LocalDataset, load_records  # noqa: E402
from edge_runtime.text_tokenizer import load_tokenizer  # noqa: E402
from edge_runtime.trainer.base import Trainer  # noqa: E402
from edge_runtime.trainer.select import create_trainer  # noqa: E402
from fedlora.demo.report import evaluate_versions  # noqa: E402
from fedlora.demo.workspace import BundleSpec, DemoData, ensure_bundle, prepare_data  # noqa: E402
from fl_protocol.codec.compress import vector_sha256  # noqa: E402
from fl_protocol.codec.pipeline import encode_update  # noqa: E402
from fl_protocol.codec.quantize import stochastic_round, to_ring  # noqa: E402
from fl_protocol.codec.rotate import rotate  # noqa: E402
from fl_protocol.codec.settings import CodecSettings, default_scale, sparse_count  # noqa: E402
from fl_protocol.codec.sparsify import gather, index_set  # noqa: E402
from fl_protocol.manifest import load_manifest  # noqa: E402
from fl_protocol.wire.messages import RoundTask  # noqa: E402
from fl_protocol.wire.task_settings import DpSettings, SecAggSettings, TrainingSettings  # noqa: E402
from tests.kit.fleet import FLEET, GATEWAY, public_keys  # noqa: E402
from tests.kit.secagg_round import make_client, run_in_memory  # noqa: E402
from tests.kit.tasks import STAGES  # noqa: E402

TIER = "public"


@dataclass(frozen=True)
class Federation:
    """Everything the scenarios share (DemoSettings defaults: 10 local steps, batch 8, lr 5e-3, C = 2)."""

    devices: int = 20
    attackers: tuple[int, ...] = (3, 8, 13, 17)
    rounds: int = 3
    local_steps: int = 10
    batch_size: int = 8
    learning_rate: float = 5e-3
    clip_norm: float = 2.0
    keep_fraction: float = 0.5
    quant_bits: int = 12
    ring_bits: int = 20  # q + ceil(log2 20) = 17 bits suffice for 20 summands; 3 bits spare
    data_seed: int = 0


@dataclass(frozen=True)
class Scenario:
    """One run: which attack (factor 0 = every device honest), how the gateway combines groups, and the
    seed of everything random in the round (codec index set and rotation, rounding, group split)."""

    name: str
    attack_factor: float
    policy: GroupPolicy = field(default_factory=GroupPolicy)
    seed: int = 0


@dataclass(frozen=True)
class Outcome:
    """Eval loss of the initial and the final global version, and groups hit per round."""

    scenario: Scenario
    eval_losses: tuple[float, ...]
    poisoned_groups: tuple[int, ...]
    group_counts: tuple[int, ...]
    seconds: float

    @property
    def final_loss(self) -> float:
        """Held-out eval loss of the last global version."""
        return self.eval_losses[-1]


def node_name(index: int) -> str:
    """Device id of device `index`."""
    return f"dev-{index:02d}"


def round_seed(seed: int, label: str, round_id: int) -> bytes:
    """A public 32-byte per-round seed (the cloud and gateway draw these from os.urandom)."""
    return hashlib.sha256(f"fedlora/bench/robustness/{label}/{seed}/{round_id}".encode()).digest()


def make_codec(federation: Federation, dimension: int, round_id: int, *, seed: int) -> CodecSettings:
    """The codec the cloud would build (aggregator_gateway/cloud/tasks.py) with this round's seeds."""
    k = sparse_count(dimension, federation.keep_fraction)
    return CodecSettings(
        clip_norm=federation.clip_norm,
        keep_fraction=federation.keep_fraction,
        index_seed=round_seed(seed, "index", round_id),
        rotate=True,
        rotation_seed=round_seed(seed, "rotation", round_id),
        quant_bits=federation.quant_bits,
        ring_bits=federation.ring_bits,
        scale=default_scale(federation.clip_norm, federation.quant_bits, k, rotate=True),
        error_feedback=False,
    )


def make_task(federation: Federation, global_vector: np.ndarray, round_id: int, *, seed: int) -> RoundTask:
    """The round's task (DP off: this measures robustness alone; deadlines far away, stages close early)."""
    dimension = int(global_vector.shape[0])
    return RoundTask(
        round_id=round_id,
        model_version=round_id - 1,
        model_sha256=vector_sha256(global_vector.astype(np.float32)),
        training=TrainingSettings(
            local_steps=federation.local_steps,
            batch_size=federation.batch_size,
            learning_rate=federation.learning_rate,
        ),
        codec=make_codec(federation, dimension, round_id, seed=seed),
        dp=DpSettings(
            mechanism="none",
            noise_multiplier=0.0,
            clip_norm=federation.clip_norm,
            min_survivors=2,
            target_delta=1e-5,
        ),
        secagg=SecAggSettings(threshold_fraction=0.5, neighbour_degree=0, ring_bits=federation.ring_bits),
        min_cohort=2,
        deadlines_ms={stage: 2**40 for stage in STAGES},
        tier=TIER,
        model_dimension=dimension,
    )


def malicious_ring_values(
    delta: np.ndarray, *, factor: float, settings: CodecSettings, rng: np.random.Generator
) -> np.ndarray:
    """A malicious encoder: `factor · Δ`, NOT clipped, on the shared index set, rotated, quantized at the
    round's scale (the q-bit clamp still applies: that is the format), mapped to the ring."""
    x = factor * np.asarray(delta, dtype=np.float64)
    kept = gather(
        x, index_set(settings.index_seed, x.shape[0], sparse_count(x.shape[0], settings.keep_fraction))
    )
    if settings.rotate:
        kept = rotate(kept, settings.rotation_seed)
    quantized, _clamped = stochastic_round(
        kept, scale=settings.scale, quant_bits=settings.quant_bits, rng=rng
    )
    return to_ring(quantized, settings.ring_bits)


class DeviceFleet:
    """The devices' local training: one shared trainer, one dataset per device, results memoised.

    Training is deterministic given (device, global vector), so a round that starts from a global
    vector already seen (round 1 of every scenario) reuses the deltas instead of training again.
    """

    def __init__(self, bundle_dir: Path, data: DemoData, federation: Federation) -> None:
        manifest = load_manifest(bundle_dir)
        tokenizer = load_tokenizer(manifest.tokenizer_spec, bundle_dir)
        self.federation = federation
        self.datasets = [
            LocalDataset.from_records(
                load_records(path, default_tier=TIER), tokenizer, seq_len=manifest.seq_len, tier=TIER, seed=i
            )
            for i, path in enumerate(data.device_dirs)
        ]
        self.trainer: Trainer = create_trainer(bundle_dir)
        self.initial_vector = self.trainer.get_trainable()
        self._cache: dict[tuple[int, bytes], np.ndarray] = {}

    def _batches(self, device: int) -> Iterator[dict[str, np.ndarray]]:
        for epoch in itertools.count():
            for batch in self.datasets[device].batches(self.federation.batch_size, epoch=epoch):
                yield batch.as_dict()

    def delta(self, device: int, global_vector: np.ndarray) -> np.ndarray:
        """Δ = θ_local − θ_global after the round's local steps on the device's shard."""
        key = (device, vector_sha256(global_vector))
        if key not in self._cache:
            self.trainer.set_trainable(global_vector)
            self.trainer.train(
                self._batches(device),
                steps=self.federation.local_steps,
                learning_rate=self.federation.learning_rate,
            )
            self._cache[key] = self.trainer.get_trainable() - global_vector
        return self._cache[key]

    def close(self) -> None:
        """Release the trainer's sessions."""
        self.trainer.close()


def encode_all(
    fleet: DeviceFleet, scenario: Scenario, task: RoundTask, global_vector: np.ndarray
) -> dict[str, np.ndarray]:
    """Every device's ring values for this round (honest: the real pipeline; attackers: their own)."""
    federation = fleet.federation
    updates: dict[str, np.ndarray] = {}
    for device in range(federation.devices):
        delta = fleet.delta(device, global_vector)
        rng = np.random.default_rng([scenario.seed, task.round_id, device])
        if scenario.attack_factor and device in federation.attackers:
            ring = malicious_ring_values(delta, factor=scenario.attack_factor, settings=task.codec, rng=rng)
        else:
            ring = encode_update(delta, residual=None, settings=task.codec, rng=rng).ring_values
        updates[node_name(device)] = ring
    return updates


def gateway_round(
    task: RoundTask, updates: dict[str, np.ndarray], policy: GroupPolicy, graph_seed: bytes
) -> RoundResult:
    """One round through the gateway's real RoundDriver and real SecAgg+ clients (in memory)."""
    names = sorted(updates)
    keys = public_keys(names)
    driver = RoundDriver(
        gateway_id=GATEWAY,
        fleet=FLEET,
        task=task,
        graph_seed=graph_seed,
        expected_devices=frozenset(names),
        verify_key=keys.get,
        min_cohort=task.min_cohort,
        policy=policy,
    )
    clients = {name: make_client(name, task, keys) for name in names}
    run_in_memory(driver, clients, updates)
    if driver.result is None:
        raise RuntimeError(f"round {task.round_id} aborted: {driver.aborted}")
    if driver.result.count != len(names):
        raise RuntimeError(f"round {task.round_id}: {driver.result.count} of {len(names)} devices survived")
    return driver.result


def poisoned_group_count(federation: Federation, policy: GroupPolicy, graph_seed: bytes) -> tuple[int, int]:
    """(groups holding at least one attacker, groups) for this round's public split."""
    names = [node_name(i) for i in range(federation.devices)]
    groups = split_groups(names, graph_seed=graph_seed, policy=policy)
    bad = {node_name(i) for i in federation.attackers}
    return sum(1 for group in groups if bad & set(group)), len(groups)


def run_scenario(fleet: DeviceFleet, scenario: Scenario, bundle_dir: Path, data: DemoData) -> Outcome:
    """All rounds of one scenario; the held-out eval loss of the initial and the final global version."""
    federation, start = fleet.federation, time.perf_counter()
    optimizer = FedAvg(server_lr=1.0)
    versions = {0: fleet.initial_vector.copy()}
    poisoned, counts = [], []
    for round_id in range(1, federation.rounds + 1):
        global_vector = versions[round_id - 1]
        task = make_task(federation, global_vector, round_id, seed=scenario.seed)
        graph_seed = round_seed(scenario.seed, "graph", round_id)
        result = gateway_round(
            task, encode_all(fleet, scenario, task, global_vector), scenario.policy, graph_seed
        )
        mean_update = result.vector_sum / result.count
        versions[round_id] = optimizer.step(global_vector, mean_update).astype(np.float32)
        hit, groups = poisoned_group_count(federation, scenario.policy, graph_seed)
        poisoned.append(hit if scenario.attack_factor else 0)
        counts.append(groups)
    final = federation.rounds
    losses = evaluate_versions(
        bundle_dir, {0: versions[0], final: versions[final]}, data.eval_records, tier=TIER
    )
    return Outcome(
        scenario,
        tuple(losses[v] for v in sorted(losses)),
        tuple(poisoned),
        tuple(counts),
        time.perf_counter() - start,
    )


def holds_probability(devices: int, attackers: int, policy: GroupPolicy) -> float:
    """P(at most floor((G − 1)/2) groups hold an attacker) when `attackers` of `devices` land uniformly
    at random in the split (exact, over all attacker subsets): when the median/norm filter is sound."""
    count = max(1, min(policy.group_count, devices // max(1, policy.min_group_size)))
    group_of = [i % count for i in range(devices)]  # round-robin over a uniformly random order
    tolerated = (count - 1) // 2
    subsets = list(itertools.combinations(range(devices), attackers))
    good = sum(1 for subset in subsets if len({group_of[i] for i in subset}) <= tolerated)
    return good / len(subsets)


def prepare(cache_dir: Path, work_dir: Path, federation: Federation) -> tuple[Path, DemoData]:
    """The demo's bundle (exported once into `cache_dir`) and its non-IID shards + held-out records."""
    bundle_dir = ensure_bundle(BundleSpec(), cache_dir, lambda _line: None)
    data = prepare_data(work_dir / "data", num_devices=federation.devices, seed=federation.data_seed)
    return bundle_dir, data


PAIRS_MEDIAN = GroupPolicy(group_count=10, min_group_size=2, rule="median")
DEFENCES = (
    PAIRS_MEDIAN,
    GroupPolicy(group_count=10, min_group_size=2, rule="norm_filter", max_norm_ratio=3.0),
    GroupPolicy(group_count=10, min_group_size=2, rule="trimmed_mean", trim_fraction=0.4),
    GroupPolicy(group_count=6, min_group_size=3, rule="median"),
)


def all_scenarios() -> list[Scenario]:
    """Clean (3 seeds: the seed noise), then ×20 and sign-flip ×20 without and with each defence, and
    sign-flip ×1 (same norm as an honest update) without defence, with the norm filter and the median."""
    out = [Scenario("clean", 0.0, seed=seed) for seed in (0, 1, 2)]
    for label, factor in (("x20", 20.0), ("sign-flip x20", -20.0)):
        out += [Scenario(label, factor)] + [Scenario(label, factor, policy) for policy in DEFENCES]
    out += [Scenario("sign-flip x1", -1.0)] + [Scenario("sign-flip x1", -1.0, p) for p in DEFENCES[:2]]
    return out


def progress_kept(outcome: Outcome, clean_loss: float) -> float:
    """(initial − final) / (initial − clean final): how much of the clean run's loss decrease survived."""
    initial = outcome.eval_losses[0]
    return (initial - outcome.final_loss) / (initial - clean_loss)


def table(outcomes: list[Outcome], clean_loss: float, initial_loss: float) -> str:
    """Markdown table: scenario, rule, groups, poisoned groups per round, final loss, ratio to clean."""
    lines = [
        f"initial eval loss {initial_loss:.4f}; clean final eval loss {clean_loss:.4f}",
        "",
        "| scenario | rule | groups (min size) | poisoned groups per round | final eval loss "
        "| ratio to clean | progress kept | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        p = o.scenario.policy
        rule = p.rule + (f" (trim {p.trim_fraction})" if p.rule == "trimmed_mean" else "")
        rule += f" (ratio {p.max_norm_ratio})" if p.rule == "norm_filter" else ""
        groups = f"{o.group_counts[0]} ({p.min_group_size})" if p.group_count > 1 else "1"
        hit = ",".join(str(h) for h in o.poisoned_groups)
        name = o.scenario.name + (f" (seed {o.scenario.seed})" if o.scenario.seed else "")
        lines.append(
            f"| {name} | {rule} | {groups} | {hit} | {o.final_loss:.4f} | "
            f"{o.final_loss / clean_loss:.3f} | {progress_kept(o, clean_loss):.0%} | {o.seconds:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Run every scenario and print the table (plus the exact split probabilities)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=None, help="bundle cache (default: a temp dir)")
    args = parser.parse_args()
    federation = Federation(rounds=args.rounds)
    with tempfile.TemporaryDirectory(prefix="fedlora-robustness-") as tmp:
        bundle_dir, data = prepare(args.cache_dir or Path(tmp) / "cache", Path(tmp), federation)
        fleet = DeviceFleet(bundle_dir, data, federation)
        try:
            outcomes = [run_scenario(fleet, s, bundle_dir, data) for s in all_scenarios()]
        finally:
            fleet.close()
    print(
        f"{date.today().isoformat()}  {platform.machine()}  {os.cpu_count()} CPU cores  "
        f"devices={federation.devices} attackers={len(federation.attackers)} rounds={federation.rounds}"
    )
    print(table(outcomes, outcomes[0].final_loss, outcomes[0].eval_losses[0]))
    print("\nP(defence sound) for 4 random attackers of 20 (at most floor((G-1)/2) groups hit):")
    for size in (2, 3, 4, 5):
        policy = GroupPolicy(group_count=20, min_group_size=size)
        groups = federation.devices // size
        print(
            f"  min size {size}: G = {groups}, tolerates {(groups - 1) // 2} attackers always, "
            f"P = {holds_probability(federation.devices, len(federation.attackers), policy):.3f}"
        )


if __name__ == "__main__":
    main()
