"""A thin layer over ONNX Runtime's on-device training bindings that does not import torch.

`onnxruntime.training/__init__.py` (1.19.2, the last release) imports its `optim` package, which imports
torch unconditionally: `import onnxruntime.training.api` fails on a device without torch, and on a
device with torch it costs the resident memory of torch. The training API itself is native code in
`onnxruntime.capi._pybind_state` (Module, Optimizer, load_checkpoint); the official Python classes are
a few lines around it. This module is those few lines, for exactly the calls the trainer makes, so the
ORT backend runs with numpy and onnxruntime only. 1.19.2 is frozen, so the bindings cannot move.

It also avoids the broken `Module.copy_buffer_to_parameters` wrapper of 1.19.2 (it hands the Python
OrtValue wrapper to the binding, which rejects it).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

_BINDINGS = "onnxruntime.capi._pybind_state"
_REQUIRED = ("Module", "Optimizer", "load_checkpoint", "OrtDevice", "OrtValue", "OrtValueVector")


def training_bindings() -> ModuleType:
    """ORT's native module if it has the training API; ImportError saying what is missing otherwise."""
    capi = importlib.import_module(_BINDINGS)
    missing = [name for name in _REQUIRED if not hasattr(capi, name)]
    if missing:
        raise ImportError(
            f"onnxruntime is installed without the training API (no {', '.join(missing)}); "
            "install onnxruntime-training instead of onnxruntime"
        )
    return capi


def session_options(capi: ModuleType, *, intra_op_threads: int = 0, spinning: bool = True) -> Any:
    """SessionOptions for the training, eval and optimizer sessions.

    `intra_op_threads` 0 lets ONNX Runtime use one thread per physical core. `spinning` True (ONNX
    Runtime's default) lets idle pool threads busy-wait for the next kernel, which saves a thread
    wake-up per parallel kernel (a step has thousands): faster where the trainer has the cores to
    itself. False (`session.intra_op.allow_spinning` = 0) makes them sleep instead, for machines where
    several trainers share the cores (the demo's devices), so idle threads do not take CPU from busy
    ones. docs/benchmarks.md has the measurements.
    """
    if intra_op_threads < 0:
        raise ValueError(f"intra_op_threads must be >= 0, got {intra_op_threads}")
    options = capi.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    return options


class OrtTrainingSession:
    """Checkpoint state + training/eval sessions + AdamW optimizer session of one bundle, on one device.

    The state holds all parameters once; both sessions and the optimizer work on it in place.
    """

    def __init__(
        self,
        *,
        checkpoint: Path,
        training_model: Path,
        eval_model: Path,
        optimizer_model: Path,
        device: str,
        intra_op_threads: int = 0,
        spinning: bool = True,
    ) -> None:
        capi = training_bindings()
        self._capi = capi
        self.device = device
        device_type = capi.OrtDevice.cuda() if device == "cuda" else capi.OrtDevice.cpu()
        self._ort_device = capi.OrtDevice(device_type, capi.OrtDevice.default_memory(), 0)
        self._host_device = capi.OrtDevice(capi.OrtDevice.cpu(), capi.OrtDevice.default_memory(), 0)
        options = session_options(capi, intra_op_threads=intra_op_threads, spinning=spinning)
        self._state: Any = capi.load_checkpoint(str(checkpoint))
        self._module: Any = capi.Module(
            str(training_model), self._state, str(eval_model), self._ort_device, options
        )
        self._optimizer: Any = capi.Optimizer(str(optimizer_model), self._state, self._ort_device, options)
        self.trainable_size = int(self._module.get_parameters_size(True))

    def parameters_device(self) -> str:
        """Where the session placed the trainable parameters ("cpu" or "cuda"), read back from ORT."""
        return str(self._read_buffer().device_name()).lower()

    def _read_buffer(self) -> Any:
        ort_value_cls = self._capi.OrtValue
        buffer = ort_value_cls.ortvalue_from_shape_and_type(
            [self.trainable_size], np.float32, self._ort_device
        )
        self._module.copy_parameters_to_buffer(buffer, True)
        return buffer

    def get_trainable(self) -> np.ndarray:
        """Host copy of the contiguous trainable buffer (float32 [trainable_size])."""
        return np.array(self._read_buffer().numpy(), dtype=np.float32, copy=True).reshape(-1)

    def set_trainable(self, values: np.ndarray) -> None:
        """Copy a contiguous float32 vector into the trainable parameters (wrapped, not copied, on CPU).

        The OrtValue borrows `values`' memory; `values` stays referenced for the whole call.
        """
        buffer = self._capi.OrtValue.ortvalue_from_numpy(values, self._host_device)
        self._module.copy_buffer_to_parameters(buffer, True)

    def train_step(self, ids: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> float:
        """Forward + backward on the training session; gradients accumulate until `reset_gradients`."""
        fetches = self._capi.OrtValueVector()
        self._module.train_step([ids, mask, labels], fetches)
        return float(fetches[0].numpy())  # outputs: loss, logits

    def eval_step(self, ids: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> float:
        """Loss on the eval session (no gradients)."""
        fetches = self._capi.OrtValueVector()
        self._module.eval_step([ids, mask, labels], fetches)
        return float(fetches[0].numpy())

    def optimizer_step(self) -> None:
        """One AdamW step from the accumulated gradients."""
        self._optimizer.optimizer_step()

    def reset_gradients(self) -> None:
        """Gradients are zeroed before the next train_step (ORT's lazy reset)."""
        self._module.lazy_reset_grad()

    def set_learning_rate(self, learning_rate: float) -> None:
        """Learning rate for the following optimizer steps."""
        self._optimizer.set_learning_rate(float(learning_rate))

    def frozen_parameters(self) -> dict[str, np.ndarray]:
        """Copies of the non-trainable parameters by ONNX name (for checks and diagnostics, not hot paths)."""
        out = {}
        for name in self._state.parameter_names():
            param = self._state.get_parameter(name)
            if not param.requires_grad:
                out[name] = np.array(param.data.numpy(), copy=True)
        return out

    def close(self) -> None:
        """Drop the optimizer, then the sessions, then the state (each references the next)."""
        self._optimizer = None
        self._module = None
        self._state = None
