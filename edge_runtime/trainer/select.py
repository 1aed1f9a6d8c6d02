"""Pick and build a trainer backend for a bundle.

`auto` takes ONNX Runtime when its training bindings load (onnxruntime-training: x86_64 wheels, or a
source-built wheel on Jetson), else the torch fallback when torch, transformers and peft import, else
fails naming what to install. Backends are imported lazily, so an ORT device never loads torch (it
would cost hundreds of MiB). The choice and its reason are logged and kept on the trainer
(`backend_name`, `providers`, `selection_reason`) for the device's reports.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from edge_runtime.trainer.base import Trainer, TrainerError
from edge_runtime.trainer.ort_session import training_bindings
from fl_protocol.errors import ConfigError
from fl_protocol.manifest import load_manifest

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "ort", "torch")
DEVICES = ("auto", "cpu", "cuda")
_TORCH_MODULES = ("torch", "transformers", "peft", "safetensors")
INSTALL_HINT = (
    "install the ONNX Runtime backend with `pip install 'fedlora[device]'` (onnxruntime-training, x86_64), "
    "or on aarch64/Jetson a source-built onnxruntime-training wheel (install.sh --ort-wheel), or the torch "
    "fallback with `pip install torch transformers peft safetensors`"
)


def _ort_problem() -> str | None:
    """None if ONNX Runtime's training bindings load, else why not (checked without importing torch)."""
    try:
        training_bindings()
    except ImportError as exc:
        return f"onnxruntime training bindings: {exc}"
    return None


def _import_error(modules: tuple[str, ...]) -> str | None:
    """None if all `modules` import, else the first ImportError as text."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            return f"{name}: {exc}"
    return None


def choose_backend(requested: str) -> tuple[str, str]:
    """Resolve `requested` ("auto" | "ort" | "torch") to a backend name and the reason for it."""
    if requested not in BACKENDS:
        raise ConfigError(f"trainer backend must be one of {', '.join(BACKENDS)}, got {requested!r}")
    if requested != "auto":
        return requested, f"backend {requested!r} requested"
    ort_problem = _ort_problem()
    if ort_problem is None:
        return "ort", "auto: ONNX Runtime training bindings available"
    torch_problem = _import_error(_TORCH_MODULES)
    if torch_problem is None:
        return "torch", f"auto: ONNX Runtime training unavailable ({ort_problem}); using the torch fallback"
    raise TrainerError(
        f"no training backend available ({ort_problem}; torch fallback: {torch_problem}); {INSTALL_HINT}"
    )


def create_trainer(
    bundle_dir: Path, *, backend: str = "auto", device: str = "auto", spinning: bool = True
) -> Trainer:
    """Verify the bundle (sha256 of every file) and build a trainer for it on the chosen backend.

    `device` "auto" uses CUDA when the backend really gets it, else CPU; "cuda" fails rather than
    silently running on CPU. `spinning` lets ONNX Runtime's pool threads busy-wait between kernels
    (its default; turn it off where several trainers share the cores); the torch backend ignores it.
    Raises BundleError for a tampered or incomplete bundle.
    """
    if device not in DEVICES:
        raise ConfigError(f"trainer device must be one of {', '.join(DEVICES)}, got {device!r}")
    name, reason = choose_backend(backend)
    manifest = load_manifest(Path(bundle_dir), verify=True)
    trainer: Trainer
    if name == "ort":
        problem = _ort_problem()
        if problem is not None:
            raise TrainerError(f"backend 'ort' requested but {problem}; {INSTALL_HINT}")
        from edge_runtime.trainer.ort_backend import OrtTrainer

        trainer = OrtTrainer(manifest, device=device, spinning=spinning)
    else:
        problem = _import_error(_TORCH_MODULES)
        if problem is not None:
            raise TrainerError(f"backend 'torch' requested but {problem}; {INSTALL_HINT}")
        from edge_runtime.trainer.torch_backend import TorchTrainer

        trainer = TorchTrainer(manifest, device=device)
    trainer.selection_reason = reason
    logger.info(
        "trainer backend %s on %s (%s); bundle %s",
        trainer.backend_name,
        ",".join(trainer.providers),
        reason,
        manifest.bundle_id[:12],
    )
    return trainer
