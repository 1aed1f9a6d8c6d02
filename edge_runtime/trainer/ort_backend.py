"""ONNX Runtime on-device training backend (the default on devices; needs onnxruntime-training).

Runs the bundle's training/eval/optimizer models directly: no torch, transformers or peft, not even
indirectly (see `ort_session` for why `onnxruntime.training.api` is not used). The frozen base weights
live only in the checkpoint state, which the training and eval sessions share, so they sit in memory once.

AdamW moments and the step counter live in ORT's checkpoint state, and a new optimizer on a used state
picks them up again instead of starting from zero (verified with 1.19.2). The only way to a fresh AdamW
state is a fresh state, so `reset_optimizer` reloads the checkpoint and recreates the sessions, and only
when the optimizer has stepped since the last load (a round's first `set_trainable` costs nothing extra).
"""

from __future__ import annotations

import gc
import logging
import weakref

import numpy as np

from edge_runtime.trainer.base import Trainer, TrainerError
from edge_runtime.trainer.ort_session import OrtTrainingSession, training_bindings
from fl_protocol.manifest import Manifest

logger = logging.getLogger(__name__)

CUDA_PROVIDERS = ["CUDAExecutionProvider", "CPUExecutionProvider"]
CPU_PROVIDERS = ["CPUExecutionProvider"]
DEVICES = ("auto", "cpu", "cuda")


class OrtTrainer(Trainer):
    """Trainer on ONNX Runtime training sessions: CUDA when the session really gets it, else CPU."""

    backend_name = "ort"

    def __init__(self, manifest: Manifest, *, device: str = "auto", spinning: bool = True) -> None:
        """`spinning`: ONNX Runtime's pool threads busy-wait between kernels (`session_options`)."""
        if device not in DEVICES:
            raise TrainerError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        super().__init__(manifest)
        capi = training_bindings()
        capi.set_default_logger_severity(3)  # sessions warn about every unused dropout constant
        self._available = list(capi.get_available_providers())
        self._device_request = device
        self._spinning = spinning
        self._session: OrtTrainingSession | None = None
        self._updates_since_load = 0
        self._load()

    def _load(self) -> None:
        """(Re)create checkpoint state and sessions from the bundle files; settles `providers`."""
        self._session = self._open()
        self._updates_since_load = 0
        if self._session.trainable_size != self.total_length:
            raise TrainerError(
                f"the bundle's training model has {self._session.trainable_size} trainable values, its "
                f"manifest says {self.total_length}: the bundle is inconsistent, re-export it"
            )

    def _open_on(self, device: str) -> OrtTrainingSession:
        artifacts = self.manifest.raw["artifacts"]
        return OrtTrainingSession(
            checkpoint=self.manifest.path(artifacts["checkpoint"]),
            training_model=self.manifest.path(artifacts["training_model"]),
            eval_model=self.manifest.path(artifacts["eval_model"]),
            optimizer_model=self.manifest.path(artifacts["optimizer_model"]),
            device=device,
            spinning=self._spinning,
        )

    def _open(self) -> OrtTrainingSession:
        want_cuda = self._device_request == "cuda" or (
            self._device_request == "auto" and "CUDAExecutionProvider" in self._available
        )
        if want_cuda:
            try:
                session = self._open_on("cuda")
                placed_on = session.parameters_device()
                if placed_on != "cuda":
                    raise RuntimeError(f"session parameters were placed on {placed_on}, not cuda")
                self.providers = list(CUDA_PROVIDERS)
                return session
            except Exception as exc:  # ORT raises RuntimeError or its own Fail/EPFail (not RuntimeError)
                if self._device_request == "cuda":
                    raise TrainerError(
                        f"device 'cuda' requested but ONNX Runtime cannot train on it: {exc}"
                    ) from exc
                logger.info("ONNX Runtime training on CUDA unavailable, using CPU: %s", exc)
                gc.collect()  # drop a half-built state before loading the CPU one
        session = self._open_on("cpu")
        self.providers = list(CPU_PROVIDERS)
        return session

    def _live(self) -> OrtTrainingSession:
        if self._session is None:
            raise TrainerError("trainer is closed")
        return self._session

    def get_trainable(self) -> np.ndarray:
        """See `Trainer.get_trainable`."""
        return self._live().get_trainable()

    def _write_trainable(self, values: np.ndarray) -> None:
        self._live().set_trainable(values)

    def reset_optimizer(self) -> None:
        """Fresh AdamW state: reloads the checkpoint (see module docstring), keeping the LoRA values."""
        if self._updates_since_load == 0:
            return
        values = self.get_trainable()
        self.close()  # free the old sessions and state before building new ones: one model copy at a time
        self._load()
        self._write_trainable(values)
        logger.debug("AdamW state reset (checkpoint reloaded)")

    def frozen_parameters(self) -> dict[str, np.ndarray]:
        """See `Trainer.frozen_parameters`; ONNX initializer names (`lm.` prefix)."""
        return self._live().frozen_parameters()

    def _prepare_training(self, learning_rate: float) -> None:
        self._live().set_learning_rate(learning_rate)

    def _forward_backward(self, ids: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> float:
        return self._live().train_step(ids, mask, labels)

    def _apply_update(self) -> None:
        session = self._live()
        session.optimizer_step()
        session.reset_gradients()
        self._updates_since_load += 1

    def _discard_gradients(self) -> None:
        self._live().reset_gradients()

    def _prepare_eval(self) -> None:
        self._live()

    def _eval_loss(self, ids: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> float:
        return self._live().eval_step(ids, mask, labels)

    def close(self) -> None:
        """Release the sessions and the checkpoint state.

        Reference counting frees them at once; a full `gc.collect()` runs only when a reference cycle still
        holds the session (it costs seconds in a process with a large heap, and `reset_optimizer` closes
        once per round).
        """
        session, self._session = self._session, None
        if session is None:
            return
        session.close()
        alive = weakref.ref(session)
        del session
        if alive() is not None:
            gc.collect()
