"""Device-side training of a bundle's LoRA tensors: ONNX Runtime backend, torch fallback, selection.

Importing this package loads neither onnxruntime nor torch; `create_trainer` imports the chosen backend.
"""

from __future__ import annotations

from edge_runtime.trainer.base import BUNDLE_ADAMW, AdamWSettings, Trainer, TrainerError, TrainResult
from edge_runtime.trainer.select import choose_backend, create_trainer

__all__ = [
    "BUNDLE_ADAMW",
    "AdamWSettings",
    "TrainResult",
    "Trainer",
    "TrainerError",
    "choose_backend",
    "create_trainer",
]
