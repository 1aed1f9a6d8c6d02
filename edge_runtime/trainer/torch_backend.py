"""torch eager fallback backend, for devices without an onnxruntime-training wheel (aarch64 / Jetson).

Needs the export extras on the device: torch, transformers, peft, safetensors (it rebuilds the model
with the exporter's own code, so the two backends cannot drift apart). The model is rebuilt from the
bundle: base weights from the bundle's `base_model/` (built-ins) or the local source directory the
bundle was exported from; LoRA attached with the manifest's settings; FFA's frozen A tensors from the
bundle; LoRA values from the bundle's initial vector. The base weights are hashed and compared with the
manifest, because a local source directory is not part of the bundle and may have changed.

The optimizer reproduces ONNX Runtime's AdamW kernel (mode 1, Hugging Face style) with the bundle's
hyper-parameters, so both backends produce the same trained vector from the same data.

The exporter's modules are imported inside the functions that use them: edge_runtime reaches `export` only
here, and only once a torch trainer is built (docs/architecture.md, "Layering").
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file
from transformers.utils import logging as transformers_logging

from edge_runtime.trainer.base import BUNDLE_ADAMW, AdamWSettings, Trainer, TrainerError
from fl_protocol.flatvec import load_flat_vector
from fl_protocol.manifest import Manifest, TrainableTensor

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


def _f32(value: float) -> float:
    return float(np.float32(value))


class HfAdamW:
    """AdamW as ONNX Runtime's AdamWOptimizer kernel computes it (adam_mode=1, float32 scalars).

    m = b1·m + (1−b1)·g;  v = b2·v + (1−b2)·g²;  p -= lr·sqrt(1−b2^t)/(1−b1^t) · m / (sqrt(v) + eps);
    then p -= lr·wd·p. torch.optim.AdamW differs (eps added after bias correction), hence this class.
    """

    def __init__(self, params: list[torch.Tensor], settings: AdamWSettings) -> None:
        self._params = params
        self._settings = settings
        self.reset()

    def reset(self) -> None:
        """Zero moments, step counter back to 0."""
        self.step_count = 0
        self._m = [torch.zeros_like(p) for p in self._params]
        self._v = [torch.zeros_like(p) for p in self._params]

    @torch.no_grad()
    def step(self, learning_rate: float) -> None:
        """One update from each parameter's `.grad` (a missing gradient counts as zero)."""
        s = self._settings
        self.step_count += 1
        beta1, beta2 = _f32(s.beta1), _f32(s.beta2)
        lr = _f32(learning_rate)
        lr_corrected = lr
        if s.bias_correction:
            correction1 = _f32(1.0 - _f32(beta1**self.step_count))
            correction2 = _f32(1.0 - _f32(beta2**self.step_count))
            lr_corrected = _f32(lr * _f32(_f32(math.sqrt(correction2)) / correction1))
        if not s.hf_mode:
            raise TrainerError("only ONNX Runtime's adam_mode=1 (Hugging Face AdamW) is implemented")
        for param, m, v in zip(self._params, self._m, self._v, strict=True):
            grad = param.grad if param.grad is not None else torch.zeros_like(param)
            m.mul_(beta1).add_(grad, alpha=_f32(1.0 - beta1))
            v.mul_(beta2).addcmul_(grad, grad, value=_f32(1.0 - beta2))
            param.addcdiv_(m, v.sqrt().add_(s.eps), value=-lr_corrected)
            if s.weight_decay:
                param.add_(param, alpha=-lr * s.weight_decay)


def _resolve_device(request: str) -> torch.device:
    if request not in DEVICES:
        raise TrainerError(f"device must be one of {', '.join(DEVICES)}, got {request!r}")
    if request == "cuda" and not torch.cuda.is_available():
        raise TrainerError("device 'cuda' requested but torch.cuda.is_available() is False")
    if request == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(request)


def _base_model_dir(manifest: Manifest) -> Path:
    model = manifest.raw["model"]
    if model.get("base_model_dir"):
        return manifest.path(model["base_model_dir"])
    source = str(model["source"])
    if not source.startswith("path:"):
        raise TrainerError(f"bundle has no base_model/ and its source {source!r} is not a local directory")
    return Path(source.removeprefix("path:"))


def _base_digest(peft_model: Any) -> str:
    """sha256 of the base weights exactly as `fedlora export` computes `base_weights_sha256`."""
    state = {k: v for k, v in peft_model.get_base_model().state_dict().items() if ".lora_" not in k}
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().float().numpy().tobytes())
    return digest.hexdigest()


def build_peft_model(manifest: Manifest) -> torch.nn.Module:
    """The bundle's LoRA model in torch (CPU, float32), base weights checked against the manifest."""
    from export.errors import ExportError
    from export.lora import LoraSettings, attach_lora, peft_key
    from export.sources import load_local

    where = _base_model_dir(manifest)
    transformers_logging.disable_progress_bar()
    try:
        loaded = load_local(where)
    except ExportError as exc:
        raise TrainerError(f"torch backend cannot load the bundle's base model from {where}: {exc}") from exc
    lora = manifest.raw["lora"]
    settings = LoraSettings(
        int(lora["r"]),
        float(lora["alpha"]),
        tuple(lora["targets"]),
        bool(lora["ffa"]),
        int(lora["init_seed"]),
    )
    peft_model = attach_lora(loaded.model, settings)
    if _base_digest(peft_model) != manifest.raw["model"]["base_weights_sha256"]:
        raise TrainerError(f"base weights in {where} differ from those the bundle was exported with")
    frozen = lora.get("frozen")
    if frozen:
        values = load_file(str(manifest.path(frozen["file"])))
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if ".lora_" in name and not param.requires_grad:
                    param.copy_(torch.from_numpy(values[peft_key(name)]))
    return peft_model


def bind_layout(
    peft_model: torch.nn.Module, manifest: Manifest
) -> list[tuple[torch.Tensor, TrainableTensor]]:
    """Pair each manifest tensor with its torch parameter; refuse any mismatch in names, shapes or set."""
    from export.onnx_graph import WRAPPER_PREFIX

    params = dict(peft_model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    bound: list[tuple[torch.Tensor, TrainableTensor]] = []
    for tensor in manifest.trainable_tensors:
        name = tensor.name.removeprefix(WRAPPER_PREFIX)
        param = params.get(name)
        if param is None or tuple(param.shape) != tensor.shape or not param.requires_grad:
            raise TrainerError(
                f"manifest tensor {tensor.name} has no trainable torch parameter of shape "
                f"{list(tensor.shape)}: peft/transformers version mismatch with the bundle?"
            )
        bound.append((param, tensor))
    extra = trainable - {t.name.removeprefix(WRAPPER_PREFIX) for _, t in bound}
    if extra:
        raise TrainerError(f"torch model trains tensors the manifest does not list: {sorted(extra)[:3]}")
    return bound


class TorchTrainer(Trainer):
    """Trainer in torch eager mode, numerically matching the ONNX Runtime backend."""

    backend_name = "torch"

    def __init__(self, manifest: Manifest, *, device: str = "auto") -> None:
        from export.onnx_graph import CausalLMWithLoss

        super().__init__(manifest)
        self._device = _resolve_device(device)
        peft_model = build_peft_model(manifest)
        self._bound = bind_layout(peft_model, manifest)
        self._model = CausalLMWithLoss(peft_model).to(self._device)
        self._optimizer = HfAdamW([p for p, _ in self._bound], BUNDLE_ADAMW)
        self._learning_rate = 0.0
        self.providers = [str(self._device)]
        initial = load_flat_vector(
            manifest.path(manifest.raw["artifacts"]["initial_vector"]), expected_bundle_id=manifest.bundle_id
        )
        self._write_trainable(initial.values)

    def get_trainable(self) -> np.ndarray:
        """See `Trainer.get_trainable`."""
        out = np.empty(self.total_length, dtype=np.float32)
        for param, tensor in self._bound:
            out[tensor.offset : tensor.offset + tensor.length] = param.detach().cpu().numpy().reshape(-1)
        return out

    def _write_trainable(self, values: np.ndarray) -> None:
        with torch.no_grad():
            for param, tensor in self._bound:
                chunk = values[tensor.offset : tensor.offset + tensor.length].reshape(tensor.shape)
                param.copy_(torch.from_numpy(chunk))

    def frozen_parameters(self) -> dict[str, np.ndarray]:
        """See `Trainer.frozen_parameters`; torch parameter names (no `lm.` prefix)."""
        return {
            n: p.detach().cpu().numpy().copy()
            for n, p in self._model.lm.named_parameters()
            if not p.requires_grad
        }

    def reset_optimizer(self) -> None:
        """See `Trainer.reset_optimizer`."""
        self._optimizer.reset()

    def _tensors(self, *arrays: np.ndarray) -> list[torch.Tensor]:
        return [torch.from_numpy(a).to(self._device) for a in arrays]

    def _prepare_training(self, learning_rate: float) -> None:
        self._model.train()
        self._learning_rate = learning_rate

    def _forward_backward(self, ids: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> float:
        loss, _logits = self._model(*self._tensors(ids, mask, labels))
        loss.backward()
        return float(loss.detach())

    def _apply_update(self) -> None:
        self._optimizer.step(self._learning_rate)
        self._discard_gradients()

    def _discard_gradients(self) -> None:
        for param, _ in self._bound:
            param.grad = None

    def _prepare_eval(self) -> None:
        self._model.eval()

    def _eval_loss(self, ids: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> float:
        with torch.no_grad():
            loss, _logits = self._model(*self._tensors(ids, mask, labels))
        return float(loss)
