"""Local training of the virtual devices: who runs the device's training job, and where.

`LocalExecutor` (the default) plays every device with one trainer on the bundle in this process: the
device agent's own `run_job` (edge_runtime.agent.worker) on the device's `LocalDataset`, so training is
exactly what a device does (fresh AdamW state, `local_steps` steps from the global vector, Δ out).
`RayExecutor` (fedlora/simulate/ray_executor.py) runs the same `DeviceTrainer` in Ray actors, one trainer
per worker, so a simulation spreads over a Ray cluster with the same results (docs/simulate.md, "Executors").

Devices may share a data shard (`data_shards` < devices); each still shuffles its rows with its own seed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_runtime.agent.worker import TrainingJob, TrainingOutcome, run_job
from edge_runtime.data import Batch, LocalDataset, Record, load_records
from edge_runtime.text_tokenizer import load_tokenizer
from edge_runtime.trainer.select import create_trainer
from fedlora.corpus import CorpusRecord
from fl_protocol.errors import FedloraError
from fl_protocol.manifest import load_manifest

logger = logging.getLogger(__name__)

TIER = "public"
EVAL_BATCH_SIZE = 8


@dataclass(frozen=True)
class TrainRequest:
    """One device's training in one round."""

    device: int
    round_id: int
    global_vector: np.ndarray
    steps: int
    batch_size: int
    learning_rate: float


class Executor(Protocol):
    """Runs the devices' training jobs and evaluates global versions.

    `initial_vector`: the bundle's initial flat LoRA vector (float32 [d]), version 0 of the model.
    """

    initial_vector: np.ndarray

    def train_many(self, requests: Sequence[TrainRequest]) -> list[TrainingOutcome]:
        """One outcome per request, in order."""
        ...

    def evaluate(self, vector: np.ndarray) -> float:
        """Held-out loss (nats/token) of the global LoRA vector."""
        ...

    def close(self) -> None:
        """Release trainers and workers."""
        ...


def device_dataset(bundle_dir: Path, shard_dir: Path, *, seed: int) -> LocalDataset:
    """A device's local dataset: every record of its shard (no local eval split), rows shuffled by seed."""
    return records_dataset(bundle_dir, load_records(shard_dir, default_tier=TIER), seed=seed)


def records_dataset(bundle_dir: Path, records: Sequence[Record], *, seed: int) -> LocalDataset:
    """`device_dataset` from a shard's records already read (what a remote worker receives)."""
    manifest = load_manifest(bundle_dir)
    tokenizer = load_tokenizer(manifest.tokenizer_spec, bundle_dir)
    return LocalDataset.from_records(
        records, tokenizer, seq_len=manifest.seq_len, tier=TIER, eval_fraction=0.0, seed=seed
    )


def eval_batches(bundle_dir: Path, records: Sequence[CorpusRecord]) -> list[dict[str, np.ndarray]]:
    """The held-out records as evaluation batches (the demo's central evaluation, fedlora/demo/report.py)."""
    manifest = load_manifest(bundle_dir)
    tokenizer = load_tokenizer(manifest.tokenizer_spec, bundle_dir)
    dataset = LocalDataset.from_records(
        [Record(r.text, TIER, r.name) for r in records],
        tokenizer,
        seq_len=manifest.seq_len,
        tier=TIER,
        eval_fraction=0.0,
        seed=0,
    )
    batches: list[Batch] = list(dataset.batches(EVAL_BATCH_SIZE, epoch=0))
    return [b.as_dict() for b in batches]


def checked(request: TrainRequest, outcome: TrainingOutcome) -> TrainingOutcome:
    """`outcome`, or FedloraError naming the device and round when its training failed."""
    if outcome.error:
        raise FedloraError(
            f"device {request.device} round {request.round_id}: training failed: {outcome.error}"
        )
    return outcome


class DeviceTrainer:
    """One trainer on the bundle that plays any device: what every executor runs, wherever it runs.

    `shard_records[j]`: the records of data shard j; device i trains on shard i mod len(shard_records),
    its rows shuffled with seed i. A device's job depends only on its request (device, round, global
    vector, steps, batch size, learning rate), never on which trainer runs it: `run_job` starts every job
    from the global vector with a fresh AdamW state, and the batches' order follows (seed, round).
    """

    def __init__(
        self,
        bundle_dir: Path,
        shard_records: Sequence[Sequence[Record]],
        eval_records: Sequence[CorpusRecord],
        *,
        spinning: bool = True,
    ) -> None:
        """`spinning`: ONNX Runtime's pool threads busy-wait between kernels (False where trainers share
        the cores)."""
        if not shard_records:
            raise FedloraError("no data shards to train on")
        self.bundle_dir = bundle_dir
        self._shards = [list(records) for records in shard_records]
        self._datasets: dict[int, LocalDataset] = {}
        self._eval = eval_batches(bundle_dir, eval_records)
        self.trainer = create_trainer(bundle_dir, backend="auto", device="cpu", spinning=spinning)
        self.initial_vector = self.trainer.get_trainable()

    def dataset(self, device: int) -> LocalDataset:
        """Device `device`'s dataset (built on first use)."""
        if device not in self._datasets:
            records = self._shards[device % len(self._shards)]
            self._datasets[device] = records_dataset(self.bundle_dir, records, seed=device)
        return self._datasets[device]

    def run(self, r: TrainRequest) -> TrainingOutcome:
        """Run one device's job; a failed training is an outcome with `error` set (see `checked`)."""
        job = TrainingJob(
            r.round_id, r.global_vector, self.dataset(r.device), r.steps, r.batch_size, r.learning_rate
        )
        return run_job(self.trainer, job)

    def evaluate(self, vector: np.ndarray) -> float:
        """Held-out loss of `vector`."""
        self.trainer.set_trainable(np.asarray(vector, dtype=np.float32))
        return self.trainer.evaluate(self._eval)

    def step_seconds(self, *, steps: int, batch_size: int, learning_rate: float) -> float:
        """Seconds of a whole `steps`-step job here divided by `steps` (device 0's data; after a warm-up
        job), so that steps × the result is a job's time including its fixed costs (vector load,
        optimizer reset, local eval)."""
        vector = self.initial_vector
        run_job(self.trainer, TrainingJob(0, vector, self.dataset(0), 1, batch_size, learning_rate))
        start = time.perf_counter()
        run_job(self.trainer, TrainingJob(0, vector, self.dataset(0), steps, batch_size, learning_rate))
        return (time.perf_counter() - start) / steps

    def close(self) -> None:
        """Release the trainer's sessions."""
        self.trainer.close()


class LocalExecutor:
    """Every device played in this process by one shared `DeviceTrainer` (see the module docstring)."""

    def __init__(
        self, bundle_dir: Path, shard_dirs: Sequence[Path], eval_records: Sequence[CorpusRecord], devices: int
    ) -> None:
        self.bundle_dir = bundle_dir
        del devices  # every device trains on shard (device mod len(shard_dirs)); the count is not needed
        shards = [load_records(d, default_tier=TIER) for d in shard_dirs]
        self._device = DeviceTrainer(bundle_dir, shards, eval_records)
        self.trainer = self._device.trainer
        self.initial_vector = self._device.initial_vector

    def dataset(self, device: int) -> LocalDataset:
        """Device `device`'s dataset (built on first use; shard device mod data_shards)."""
        return self._device.dataset(device)

    def train_many(self, requests: Sequence[TrainRequest]) -> list[TrainingOutcome]:
        """Run the jobs one after another on the shared trainer."""
        return [checked(r, self._device.run(r)) for r in requests]

    def evaluate(self, vector: np.ndarray) -> float:
        """Held-out loss of `vector` on the shared trainer."""
        return self._device.evaluate(vector)

    def step_seconds(self, *, steps: int, batch_size: int, learning_rate: float) -> float:
        """`DeviceTrainer.step_seconds` on this machine: a whole `steps`-step job's seconds / `steps`."""
        return self._device.step_seconds(steps=steps, batch_size=batch_size, learning_rate=learning_rate)

    def close(self) -> None:
        """Release the trainer's sessions."""
        self._device.close()
