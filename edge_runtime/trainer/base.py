"""The device trainer interface shared by the ONNX Runtime backend and the torch fallback.

A trainer holds one bundle's model with its LoRA tensors exposed as one flat float32 vector in the
manifest's order (the order of ONNX Runtime's contiguous parameter buffer). A device round is:

    trainer.set_trainable(global_vector)   # also starts a fresh AdamW state, see below
    result = trainer.train(batches, steps=..., learning_rate=...)
    delta = trainer.get_trainable() - global_vector

Optimizer state never crosses rounds: AdamW moments and the step counter built up around one global
version say nothing about the next one, and carrying them over would make a device's update depend on
its private history in a way the server optimizer and the DP accounting do not model. So
`set_trainable` always resets the optimizer, and `reset_optimizer()` is there for callers that want a
fresh state without loading new values.

Both backends run the same loop (this module): the same batch checks, the same skipping of batches
without target tokens, the same loss reporting, so they differ only in how one step is computed.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.errors import EdgeRuntimeError, NoLocalDataError
from fl_protocol.errors import ConfigError
from fl_protocol.manifest import Manifest

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
BATCH_KEYS = ("input_ids", "attention_mask", "labels")


class TrainerError(EdgeRuntimeError):
    """Training cannot go on: no usable backend, a model that does not match its bundle, a diverged loss."""


@dataclass(frozen=True)
class AdamWSettings:
    """AdamW hyper-parameters of the bundle's optimizer_model.onnx.

    `fedlora export` builds the optimizer with onnxblock's `AdamW()` defaults; the torch backend
    reproduces that kernel with these values (a unit test reads them back from the ONNX file).
    `hf_mode` is ORT's `adam_mode=1` (Hugging Face AdamW): bias correction folded into the learning
    rate, so eps is added to sqrt(v) before correction, unlike torch.optim.AdamW.
    """

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-6
    weight_decay: float = 0.0
    bias_correction: bool = True
    hf_mode: bool = True


BUNDLE_ADAMW = AdamWSettings()


@dataclass(frozen=True)
class TrainResult:
    """What one call to `Trainer.train` did.

    `mean_loss` is the mean of the per-step losses, each the mean over that batch's target tokens;
    `target_tokens` counts the tokens the loss was computed on (useful for data-size weights).
    """

    steps: int
    mean_loss: float
    last_loss: float
    target_tokens: int
    seconds: float
    skipped_batches: int = 0


def model_inputs(batch: Mapping[str, Any], *, vocab_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check one batch dict and return (input_ids, attention_mask, labels) as contiguous int64 [B, S].

    Arrays that already are contiguous int64 are passed through without a copy. Token ids outside the
    vocabulary are refused here, because the ONNX Gather would fail with an opaque message.
    """
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise ConfigError(
            f"training batch lacks {', '.join(missing)}; a batch has keys {', '.join(BATCH_KEYS)}"
        )
    arrays = tuple(np.ascontiguousarray(batch[k], dtype=np.int64) for k in BATCH_KEYS)
    shape = arrays[0].shape
    if len(shape) != 2 or shape[0] < 1 or shape[1] < 2:
        raise ConfigError(f"input_ids must have shape [batch, seq] with seq >= 2, got {list(shape)}")
    for key, array in zip(BATCH_KEYS[1:], arrays[1:], strict=True):
        if array.shape != shape:
            raise ConfigError(f"{key} has shape {list(array.shape)}, input_ids has {list(shape)}")
    ids, _, labels = arrays
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ConfigError(f"input_ids outside the vocabulary [0, {vocab_size})")
    real = labels[labels != IGNORE_INDEX]
    if real.size and (real.min() < 0 or real.max() >= vocab_size):
        raise ConfigError(f"labels outside the vocabulary [0, {vocab_size}) and not {IGNORE_INDEX}")
    return arrays  # type: ignore[return-value]


def target_tokens(labels: np.ndarray) -> int:
    """Number of tokens the causal-LM loss is computed on (the graph shifts labels by one)."""
    return int(np.count_nonzero(labels[:, 1:] != IGNORE_INDEX))


class Trainer(ABC):
    """A bundle's LoRA model on one backend; see the module docstring for the round protocol.

    Attributes set by each backend: `backend_name` ("ort" or "torch"), `providers` (what the sessions
    really run on, e.g. ["CPUExecutionProvider"] or ["cuda:0"]). `selection_reason` is filled in by
    `create_trainer` for reports.
    """

    backend_name: str = ""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.providers: list[str] = []
        self.selection_reason = ""
        self._vocab_size = int(manifest.raw["model"]["vocab_size"])

    @property
    def total_length(self) -> int:
        """Length of the flat trainable vector."""
        return self.manifest.total_length

    def set_trainable(self, vector: np.ndarray) -> None:
        """Load a flat float32 vector (manifest order) into the LoRA tensors and reset the optimizer."""
        values = np.ascontiguousarray(vector, dtype=np.float32)
        if values.shape != (self.total_length,):
            raise TrainerError(
                f"trainable vector has shape {list(values.shape)}, the bundle needs [{self.total_length}]"
            )
        if not np.isfinite(values).all():
            raise TrainerError("trainable vector contains NaN or infinity; refusing to load it")
        self.reset_optimizer()
        self._write_trainable(values)

    @abstractmethod
    def get_trainable(self) -> np.ndarray:
        """A fresh float32 [total_length] copy of the LoRA tensors in manifest order."""

    @abstractmethod
    def frozen_parameters(self) -> dict[str, np.ndarray]:
        """Copies of the frozen (base, and FFA's A) parameters by name; for checks, not hot paths."""

    @abstractmethod
    def reset_optimizer(self) -> None:
        """Start a fresh AdamW state (zero moments, step 0) for the next `train` call."""

    def train(self, batches: Iterable[Mapping[str, Any]], *, steps: int, learning_rate: float) -> TrainResult:
        """Take up to `steps` AdamW steps, one per batch, continuing the current optimizer state.

        Stops early (logged) when `batches` runs out; batches without target tokens are skipped, not
        counted. Raises NoLocalDataError when no step could be taken and TrainerError when the loss
        is not finite (checked before the update, so the parameters stay those of the last good step).
        """
        if steps < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}")
        if not (math.isfinite(learning_rate) and learning_rate > 0):
            raise ConfigError(f"learning_rate must be a positive number, got {learning_rate}")
        self._prepare_training(learning_rate)
        losses: list[float] = []
        tokens = skipped = 0
        start = time.perf_counter()
        batch_iter = iter(batches)
        while len(losses) < steps:
            batch = next(batch_iter, None)
            if batch is None:
                break
            ids, mask, labels = model_inputs(batch, vocab_size=self._vocab_size)
            count = target_tokens(labels)
            if count == 0:
                skipped += 1
                continue
            loss = self._forward_backward(ids, mask, labels)
            if not math.isfinite(loss):
                self._discard_gradients()
                raise TrainerError(f"training loss became {loss} at step {len(losses) + 1}; update discarded")
            self._apply_update()
            losses.append(loss)
            tokens += count
        if not losses:
            raise NoLocalDataError(f"no training batch with target tokens ({skipped} empty batches skipped)")
        if len(losses) < steps:
            logger.info("batches ran out after %d of %d steps", len(losses), steps)
        seconds = time.perf_counter() - start
        return TrainResult(len(losses), float(np.mean(losses)), losses[-1], tokens, seconds, skipped)

    def evaluate(self, batches: Iterable[Mapping[str, Any]]) -> float:
        """Mean causal-LM loss over all target tokens of `batches` (token-weighted, not a batch mean).

        Token weighting makes the result independent of how the data was cut into batches.
        """
        self._prepare_eval()
        total = 0.0
        count = 0
        for batch in batches:
            ids, mask, labels = model_inputs(batch, vocab_size=self._vocab_size)
            n = target_tokens(labels)
            if n == 0:
                continue
            total += self._eval_loss(ids, mask, labels) * n
            count += n
        if count == 0:
            raise NoLocalDataError("no evaluation batch with target tokens")
        return total / count

    def close(self) -> None:  # noqa: B027 - optional hook, backends with native sessions override it
        """Release native sessions and buffers early (otherwise they go with the object)."""

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def _write_trainable(self, values: np.ndarray) -> None:
        """Copy a checked float32 [total_length] vector into the LoRA tensors."""

    @abstractmethod
    def _prepare_training(self, learning_rate: float) -> None:
        """Switch to training mode and set the learning rate."""

    @abstractmethod
    def _forward_backward(self, ids: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> float:
        """Compute the loss and accumulate gradients; returns the loss."""

    @abstractmethod
    def _apply_update(self) -> None:
        """One AdamW step from the accumulated gradients, then clear them."""

    @abstractmethod
    def _discard_gradients(self) -> None:
        """Clear accumulated gradients without updating."""

    @abstractmethod
    def _prepare_eval(self) -> None:
        """Switch to evaluation mode."""

    @abstractmethod
    def _eval_loss(self, ids: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> float:
        """Loss of one batch (mean over its target tokens), no gradients."""
