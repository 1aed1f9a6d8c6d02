"""Generate ONNX Runtime on-device training artifacts and read back the canonical parameter order.

The flat vector's order is whatever ONNX Runtime's contiguous parameter buffer uses; rather than assume
it, we discover it: give every trainable tensor a distinct constant, read the contiguous buffer, and
locate each tensor in it. The manifest then records offsets that are true by construction.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnxruntime import OrtValue
from onnxruntime.training import artifacts
from onnxruntime.training.api import CheckpointState, Module

from export.errors import ExportError
from export.onnx_graph import OUTPUT_NAMES

logger = logging.getLogger(__name__)

TRAINING_MODEL = "training_model.onnx"
EVAL_MODEL = "eval_model.onnx"
OPTIMIZER_MODEL = "optimizer_model.onnx"
CHECKPOINT = "checkpoint"


def generate(graph_path: Path, out_dir: Path, *, trainable: list[str]) -> None:
    """Build training/eval/optimizer models and the checkpoint; only `trainable` initializers get grads."""
    graph = onnx.load(str(graph_path), load_external_data=False)
    names = [init.name for init in graph.graph.initializer]
    missing = sorted(set(trainable) - set(names))
    if missing:
        raise ExportError(
            f"LoRA tensors missing from the ONNX graph (renamed by the exporter?): {missing[:5]}"
        )
    frozen = [n for n in names if n not in set(trainable)]
    out_dir.mkdir(parents=True, exist_ok=True)
    with _native_output_captured():
        _generate(graph_path, out_dir, trainable, frozen)
    keep_only_loss_output(out_dir / TRAINING_MODEL)


def keep_only_loss_output(training_model: Path) -> None:
    """Drop the logits output from the training model; the eval model keeps (loss, logits).

    A training step needs only the loss. A graph output is never freed or reused by ONNX Runtime's
    planner, so an output `logits` pins a [batch, seq, vocab] float32 buffer (48 MiB for SmolLM2-135M
    at 2 x 128) through the whole backward pass; without it the buffer is released once the loss has
    consumed it. Gradient outputs (`*_grad.accumulation.out`) are kept.
    """
    model = onnx.load(str(training_model), load_external_data=False)
    dropped = [out for out in model.graph.output if out.name in OUTPUT_NAMES[1:]]
    if not dropped:
        return
    for out in dropped:
        model.graph.output.remove(out)
    onnx.save(model, str(training_model))


def _generate(graph_path: Path, out_dir: Path, trainable: list[str], frozen: list[str]) -> None:
    artifacts.generate_artifacts(
        str(graph_path),
        requires_grad=list(trainable),
        frozen_params=frozen,
        loss=None,  # the graph already ends in the causal-LM loss
        loss_input_names=[OUTPUT_NAMES[0]],
        additional_output_names=[OUTPUT_NAMES[1]],
        optimizer=artifacts.OptimType.AdamW,
        artifact_directory=str(out_dir),
    )


@contextlib.contextmanager
def _native_output_captured() -> Iterator[None]:
    """Silence ORT's native INFO logging (it ignores the Python-side severity while building gradients).

    The C++ side writes straight to file descriptors 1 and 2, so we point those at a temporary file and
    replay its tail if building fails, so an error never loses its explanation.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            sink.seek(0)
            tail = sink.read()[-4000:].decode(errors="replace")
            logger.error("onnxruntime output before the failure:\n%s", tail)
            raise
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def open_module(art_dir: Path) -> tuple[CheckpointState, Module]:
    """Load the artifacts into a CPU training Module (used at export time for checks)."""
    onnxruntime.set_default_logger_severity(3)  # sessions warn about every unused dropout constant
    state = CheckpointState.load_checkpoint(str(art_dir / CHECKPOINT))
    module = Module(str(art_dir / TRAINING_MODEL), state, str(art_dir / EVAL_MODEL), device="cpu")
    return state, module


def write_contiguous(module: Module, values: np.ndarray) -> None:
    """Copy a flat float32 vector into the module's trainable parameters.

    ORT 1.19.2's `Module.copy_buffer_to_parameters` hands the Python OrtValue wrapper to the binding,
    which rejects it; we call the binding with the underlying C object (docs/toolchain.md).
    """
    buffer = OrtValue.ortvalue_from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    module._model.copy_buffer_to_parameters(buffer._ortvalue, True)


def contiguous_layout(art_dir: Path, trainable: list[str]) -> list[tuple[str, tuple[int, ...], int]]:
    """Return (name, shape, offset) for each trainable tensor in ONNX Runtime's flat-buffer order.

    Writes 0..N-1 into the contiguous buffer and reads each named tensor back: its first element is its
    offset, and the whole tensor must be the consecutive run that follows.
    """
    state, module = open_module(art_dir)
    size = module.get_parameters_size(trainable_only=True)
    write_contiguous(module, np.arange(size, dtype=np.float32))
    layout: list[tuple[str, tuple[int, ...], int]] = []
    for name in trainable:
        data = state.parameters[name].data
        offset = int(data.reshape(-1)[0])
        expected = np.arange(offset, offset + data.size, dtype=np.float32).reshape(data.shape)
        if not np.array_equal(data, expected):
            raise ExportError(f"{name} is not one block of the contiguous buffer; cannot build a manifest")
        layout.append((name, tuple(data.shape), offset))
    layout.sort(key=lambda item: item[2])
    if sum(int(np.prod(shape)) for _, shape, _ in layout) != size:
        raise ExportError("the contiguous buffer does not hold exactly the trainable tensors")
    return layout


def reference_loss(art_dir: Path, batch: dict[str, np.ndarray]) -> float:
    """Eval loss of the untouched artifacts on `batch`; stored so field diagnostics can check parity."""
    _, module = open_module(art_dir)
    module.eval()
    outputs = module(batch["input_ids"], batch["attention_mask"], batch["labels"])
    return float(outputs[0])
