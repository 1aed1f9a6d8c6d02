"""Local training on a worker thread, so the event loop keeps answering the gateway meanwhile.

The loop submits one `TrainingJob` per round; the outcome lands on a queue the loop drains in its tick.
The trainer is used by this one thread only. An outcome for a round the loop already gave up is simply
discarded by the loop (it checks the round id).
"""

from __future__ import annotations

import itertools
import logging
import queue
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_runtime.data import LocalDataset
from edge_runtime.errors import NoLocalDataError
from edge_runtime.trainer import Trainer
from fl_protocol.errors import FedloraError
from fl_protocol.wire.task_settings import TrainingSettings

logger = logging.getLogger(__name__)

_EPOCHS_PER_ROUND = 1_000_000  # epoch index = round * this + epoch: fresh shuffles every round


@dataclass(frozen=True)
class TrainingJob:
    """One round's local training: start from `global_vector`, take `steps` AdamW steps."""

    round_id: int
    global_vector: np.ndarray = field(repr=False)
    dataset: LocalDataset = field(repr=False)
    steps: int
    batch_size: int
    learning_rate: float
    weighting: TrainingSettings | None = None  # the task's weighting settings; None = uniform


@dataclass(frozen=True)
class TrainingOutcome:
    """Result of a job: the update Δ = θ_local − θ_global, or an error text."""

    round_id: int
    delta: np.ndarray | None = field(default=None, repr=False)
    train_loss: float | None = None
    eval_loss: float | None = None
    steps: int = 0
    target_tokens: int = 0
    error: str = ""
    weight: float | None = None  # w of (w·Δ, w) when the round is weighted


def round_batches(dataset: LocalDataset, *, round_id: int, batch_size: int) -> Iterator[dict[str, Any]]:
    """Training batches for one round, epoch after epoch, so `steps` may exceed one pass over the data."""
    for epoch in itertools.count():
        produced = False
        for batch in dataset.batches(batch_size, epoch=round_id * _EPOCHS_PER_ROUND + epoch):
            produced = True
            yield batch.as_dict()
        if not produced:
            return


WEIGHT_PROBE_BATCHES = 4  # batches the q-FFL weight's loss F_k is measured on (before training)
MIN_WEIGHT = 1e-3  # keeps every participant's weight coordinate strictly positive


def update_weight(settings: TrainingSettings, *, global_loss: float | None, train_rows: int) -> float | None:
    """w in (0, 1] of a weighted round (docs/update-codec.md), or None for uniform rounds.

    qffl: w = min(1, (F_k / ref)^q), F_k the global model's loss on this device's data, so devices the
    model serves worst weigh most (q-FFL, Li, Sanjabi, Beirami, Smith 2020); datasize: w = min(1,
    rows / ref). Bounded weights keep the update's sensitivity at the clip norm.
    """
    if not settings.weighted:
        return None
    if settings.weighting == "qffl":
        if global_loss is None or not np.isfinite(global_loss):
            raise NoLocalDataError("no loss to weigh this update by (q-FFL)")
        raw = (max(global_loss, 0.0) / settings.weight_reference) ** settings.qffl_q
    else:
        raw = train_rows / settings.weight_reference
    return float(min(1.0, max(MIN_WEIGHT, raw)))


def _global_loss(trainer: Trainer, job: TrainingJob) -> float | None:
    if job.weighting is None or job.weighting.weighting != "qffl":
        return None
    probe = itertools.islice(
        round_batches(job.dataset, round_id=job.round_id, batch_size=job.batch_size), WEIGHT_PROBE_BATCHES
    )
    return trainer.evaluate(probe)


def run_job(trainer: Trainer, job: TrainingJob) -> TrainingOutcome:
    """Train, evaluate on the held-out rows (if any) and return Δ; errors become an outcome, not a raise."""
    try:
        trainer.set_trainable(job.global_vector)
        weight = None
        if job.weighting is not None:
            weight = update_weight(
                job.weighting, global_loss=_global_loss(trainer, job), train_rows=job.dataset.num_train_rows
            )
        batches = round_batches(job.dataset, round_id=job.round_id, batch_size=job.batch_size)
        result = trainer.train(batches, steps=job.steps, learning_rate=job.learning_rate)
        eval_loss = None
        if job.dataset.num_eval_rows:
            try:
                eval_loss = trainer.evaluate(b.as_dict() for b in job.dataset.eval_batches(job.batch_size))
            except NoLocalDataError:
                eval_loss = None
        delta = trainer.get_trainable() - np.asarray(job.global_vector, dtype=np.float32)
        return TrainingOutcome(
            job.round_id,
            delta,
            result.mean_loss,
            eval_loss,
            result.steps,
            result.target_tokens,
            weight=weight,
        )
    except FedloraError as exc:
        return TrainingOutcome(job.round_id, error=str(exc))
    except Exception as exc:  # a backend crash must end the round, not the device
        logger.exception("round %d: training crashed", job.round_id)
        return TrainingOutcome(job.round_id, error=f"{type(exc).__name__}: {exc}")


class TrainingWorker:
    """A single background thread running jobs, results collected with `poll`.

    `runner` runs one job: `functools.partial(run_job, trainer)` for an in-process trainer whose backend
    releases the GIL while it computes (torch), or `TrainerProcess.run_job` for one that does not (ONNX
    Runtime's training bindings; edge_runtime/agent/trainer_process.py).
    """

    def __init__(self, runner: Callable[[TrainingJob], TrainingOutcome]) -> None:
        self._runner = runner
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedlora-train")
        self._results: queue.Queue[TrainingOutcome] = queue.Queue()

    def submit(self, job: TrainingJob) -> None:
        """Queue a job (runs after any job still in progress)."""
        future = self._executor.submit(self._runner, job)
        future.add_done_callback(self._collect)

    def poll(self) -> list[TrainingOutcome]:
        """Outcomes finished since the last call (non-blocking)."""
        out = []
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        """Stop accepting jobs; a running step is not interrupted (the process may exit under it)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _collect(self, future: Future[TrainingOutcome]) -> None:
        if not future.cancelled():
            self._results.put(future.result())
