"""Local training of the virtual devices: who runs the device's training job, and where.

`LocalExecutor` (the default) plays every device with one trainer on the bundle in this process: the
device agent's own `run_job` (edge_runtime.agent.worker) on the device's `LocalDataset`, so training is
exactly what a device does (fresh AdamW state, `local_steps` steps from the global vector, Δ out).
Another executor (e.g. Ray tasks, one trainer per worker) implements the same `Executor` protocol.

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
    manifest = load_manifest(bundle_dir)
    tokenizer = load_tokenizer(manifest.tokenizer_spec, bundle_dir)
    records = load_records(shard_dir, default_tier=TIER)
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


class LocalExecutor:
    """Every device played in this process by one shared trainer (see the module docstring)."""

    def __init__(
        self, bundle_dir: Path, shard_dirs: Sequence[Path], eval_records: Sequence[CorpusRecord], devices: int
    ) -> None:
        self.bundle_dir = bundle_dir
        self._shard_dirs = list(shard_dirs)
        self._datasets: dict[int, LocalDataset] = {}
        self._devices = devices
        self._eval = eval_batches(bundle_dir, eval_records)
        self.trainer = create_trainer(bundle_dir, backend="auto", device="cpu")
        self.initial_vector = self.trainer.get_trainable()

    def dataset(self, device: int) -> LocalDataset:
        """Device `device`'s dataset (built on first use; shard device mod data_shards)."""
        if device not in self._datasets:
            shard = self._shard_dirs[device % len(self._shard_dirs)]
            self._datasets[device] = device_dataset(self.bundle_dir, shard, seed=device)
        return self._datasets[device]

    def train_many(self, requests: Sequence[TrainRequest]) -> list[TrainingOutcome]:
        """Run the jobs one after another on the shared trainer."""
        outcomes = []
        for r in requests:
            job = TrainingJob(
                r.round_id, r.global_vector, self.dataset(r.device), r.steps, r.batch_size, r.learning_rate
            )
            outcome = run_job(self.trainer, job)
            if outcome.error:
                raise FedloraError(f"device {r.device} round {r.round_id}: training failed: {outcome.error}")
            outcomes.append(outcome)
        return outcomes

    def evaluate(self, vector: np.ndarray) -> float:
        """Held-out loss of `vector` on the shared trainer."""
        self.trainer.set_trainable(np.asarray(vector, dtype=np.float32))
        return self.trainer.evaluate(self._eval)

    def step_seconds(self, *, steps: int, batch_size: int, learning_rate: float) -> float:
        """Measured seconds of one local step on this machine (device 0's data; after one warm-up step)."""
        vector = self.initial_vector
        run_job(self.trainer, TrainingJob(0, vector, self.dataset(0), 1, batch_size, learning_rate))
        start = time.perf_counter()
        run_job(self.trainer, TrainingJob(0, vector, self.dataset(0), steps, batch_size, learning_rate))
        return (time.perf_counter() - start) / steps

    def close(self) -> None:
        """Release the trainer's sessions."""
        self.trainer.close()
