"""`fedlora export` end to end: base model -> LoRA -> ONNX graph -> ORT training artifacts -> bundle."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers.utils import logging as transformers_logging

from export import ort_artifacts
from export.errors import ExportError
from export.lora import LoraSettings, attach_lora, peft_key, trainable_parameter_names
from export.onnx_graph import (
    INPUT_NAMES,
    OPSET,
    OUTPUT_NAMES,
    example_batch,
    export_training_graph,
    onnx_name,
)
from export.sources import DEFAULT_TARGETS, LoadedModel, load_source
from export.tokenizers import bundle_tokenizer
from fl_protocol.flatvec import FlatVector, save_flat_vector
from fl_protocol.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Manifest,
    bundle_id,
    hash_tree,
    load_manifest,
    write_manifest,
)

Progress = Callable[[str], None]
INITIAL_VECTOR = "initial_vector.safetensors"
FROZEN_LORA = "frozen_lora.safetensors"
BASE_MODEL_DIR = "base_model"
_STEPS = 7


@dataclass(frozen=True)
class ExportOptions:
    """Everything `fedlora export` takes from the command line."""

    model: str
    out_dir: Path
    lora_r: int = 8
    lora_alpha: float = 16.0
    targets: tuple[str, ...] | None = None  # None: the family's default
    ffa: bool = False
    seq_len: int = 128
    seed: int = 0
    tokenizer: str = "auto"  # "auto" | "byte"
    force: bool = False
    cache_dir: Path | None = None  # where GGUF sources are converted (None: export.gguf.default_cache_dir())


def _versions() -> dict[str, str]:
    names = (
        "torch",
        "onnx",
        "onnxruntime-training-cpu",
        "onnxruntime-training",
        "peft",
        "transformers",
        "fedlora",
    )
    found: dict[str, str] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _check_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse a non-empty --out that is not a bundle (without --force); nothing is deleted yet."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a directory")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not force and not (out_dir / MANIFEST_NAME).exists():
            raise ExportError(f"{out_dir} exists and is not empty (not a bundle); use --force to overwrite")


def _publish(staging: Path, out_dir: Path) -> None:
    """Replace `out_dir` by the finished `staging` directory (the old bundle goes only now)."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)


def _check_disk(out_dir: Path, model: torch.nn.Module) -> None:
    param_bytes = sum(p.numel() * 4 for p in model.parameters())
    needed = 4 * param_bytes + (64 << 20)  # graph + training model + eval model + checkpoint, + slack
    free = shutil.disk_usage(out_dir).free
    if free < needed:
        raise ExportError(
            f"not enough disk at {out_dir}: export needs about {needed / 2**20:.0f} MiB, "
            f"{free / 2**20:.0f} MiB free"
        )


def _lora_layout(peft_model: Any, art_dir: Path) -> tuple[list[dict[str, Any]], np.ndarray]:
    torch_names = trainable_parameter_names(peft_model)
    by_onnx = {onnx_name(n): n for n in torch_names}
    layout = ort_artifacts.contiguous_layout(art_dir, list(by_onnx))
    params = dict(peft_model.named_parameters())
    tensors, chunks = [], []
    for name, shape, offset in layout:
        torch_name = by_onnx[name]
        length = int(np.prod(shape))
        tensors.append(
            {
                "name": name,
                "peft_key": peft_key(torch_name),
                "shape": list(shape),
                "dtype": "float32",
                "offset": offset,
                "length": length,
            }
        )
        chunks.append(params[torch_name].detach().float().numpy().reshape(-1))
    return tensors, np.concatenate(chunks).astype(np.float32)


def _frozen_lora(peft_model: Any, out_dir: Path) -> dict[str, Any] | None:
    frozen = {
        peft_key(n): p.detach().float().numpy().copy()
        for n, p in peft_model.named_parameters()
        if ".lora_" in n and not p.requires_grad
    }
    if not frozen:
        return None
    save_file(frozen, str(out_dir / FROZEN_LORA))
    return {"file": FROZEN_LORA, "keys": sorted(frozen)}


def run_export(options: ExportOptions, progress: Progress = print) -> Manifest:
    """Export `options.model` into a bundle at `options.out_dir`; returns the written manifest.

    The bundle is built in a staging directory next to `--out` and renamed into place only when complete:
    an export that fails (bad model, tokenizer mismatch, no disk) leaves `--out` as it was.
    Raises ExportError with a one-line reason.
    """
    out_dir = options.out_dir.expanduser().resolve()
    transformers_logging.disable_progress_bar()
    _check_out_dir(out_dir, options.force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.export-"))
    try:
        with warnings.catch_warnings():
            # transformers' own deprecation notices (is_gradient_checkpointing, ...) are not the user's
            warnings.simplefilter("ignore", FutureWarning)
            _export_into(staging, options, progress)
        _publish(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    manifest = load_manifest(out_dir)
    progress(
        f"bundle ready: {out_dir} ({len(manifest.trainable_tensors)} LoRA tensors, "
        f"{manifest.total_length} trainable values)"
    )
    return manifest


def _export_into(out_dir: Path, options: ExportOptions, progress: Progress) -> None:
    progress(f"[1/{_STEPS}] loading base model {options.model}")
    loaded = load_source(options.model, seed=options.seed, cache_dir=options.cache_dir, progress=progress)
    _check_disk(out_dir, loaded.model)
    vocab_size = int(loaded.model.config.vocab_size)
    tokenizer_spec = bundle_tokenizer(loaded, out_dir, choice=options.tokenizer, vocab_size=vocab_size)
    if loaded.source_dir is None:
        loaded.model.save_pretrained(out_dir / BASE_MODEL_DIR)  # built-ins: ship the base so adapters load
    targets = options.targets or DEFAULT_TARGETS[loaded.family]
    settings = LoraSettings(options.lora_r, options.lora_alpha, tuple(targets), options.ffa, options.seed)
    progress(
        f"[2/{_STEPS}] attaching LoRA r={settings.r} alpha={settings.alpha} targets={','.join(targets)}"
        f"{' (FFA: A frozen)' if settings.ffa else ''}"
    )
    peft_model = attach_lora(loaded.model, settings)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".work-") as work:
        graph_path = Path(work) / "model.onnx"
        progress(f"[3/{_STEPS}] tracing ONNX graph (opset {OPSET}, training mode)")
        export_training_graph(peft_model, graph_path, vocab_size=vocab_size)
        progress(f"[4/{_STEPS}] generating ONNX Runtime training artifacts")
        trainable = [onnx_name(n) for n in trainable_parameter_names(peft_model)]
        ort_artifacts.generate(graph_path, out_dir, trainable=trainable)
    progress(f"[5/{_STEPS}] recording the flat trainable vector layout")
    tensors, initial = _lora_layout(peft_model, out_dir)
    frozen_lora = _frozen_lora(peft_model, out_dir)
    progress(f"[6/{_STEPS}] checking the bundle: reference loss through ONNX Runtime")
    ref_batch = {
        k: v.numpy()
        for k, v in example_batch(batch_size=2, seq_len=16, vocab_size=vocab_size, seed=1234).items()
    }
    ref_loss = ort_artifacts.reference_loss(out_dir, ref_batch)
    progress(f"[7/{_STEPS}] writing manifest")
    raw = _manifest(options, loaded, settings, peft_model, tensors, tokenizer_spec, frozen_lora, ref_loss)
    save_flat_vector(out_dir / INITIAL_VECTOR, FlatVector(initial, bundle_id(raw), 0))
    raw["files"] = hash_tree(out_dir, _bundle_files(out_dir))
    write_manifest(out_dir, raw)


def _bundle_files(out_dir: Path) -> list[str]:
    return [
        str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file() and p.name != MANIFEST_NAME
    ]


def _base_parameter_count(base: Any) -> int:
    """Parameters of the base model, each tensor once (a tied lm_head shares the embedding's), no LoRA."""
    return int(sum(p.numel() for name, p in base.named_parameters() if ".lora_" not in name))


def _manifest(
    options: ExportOptions,
    loaded: LoadedModel,
    settings: LoraSettings,
    peft_model: Any,
    tensors: list[dict[str, Any]],
    tokenizer_spec: dict[str, Any],
    frozen_lora: dict[str, Any] | None,
    ref_loss: float,
) -> dict[str, Any]:
    base = peft_model.get_base_model()
    base_state = {k: v for k, v in base.state_dict().items() if ".lora_" not in k}
    digest = hashlib.sha256()
    for key in sorted(base_state):
        digest.update(key.encode())
        digest.update(base_state[key].detach().float().numpy().tobytes())
    lora_config = peft_model.peft_config["default"].to_dict()
    return {
        "format_version": FORMAT_VERSION,
        "model": {
            "family": loaded.family,
            "source": loaded.source,
            "base_weights_sha256": digest.hexdigest(),
            "num_parameters": _base_parameter_count(base),
            "vocab_size": int(base.config.vocab_size),
            "base_model_dir": BASE_MODEL_DIR if loaded.source_dir is None else None,
            "tie_word_embeddings": bool(getattr(base.config, "tie_word_embeddings", False)),
            "gguf": loaded.gguf,
        },
        "tokenizer": tokenizer_spec,
        "lora": {
            "r": settings.r,
            "alpha": settings.alpha,
            "targets": list(settings.targets),
            "ffa": settings.ffa,
            "init_seed": settings.init_seed,
            "frozen": frozen_lora,
            "peft_config": {k: (sorted(v) if isinstance(v, set) else v) for k, v in lora_config.items()},
        },
        "trainable": {"tensors": tensors, "total_length": int(sum(t["length"] for t in tensors))},
        "onnx": {"opset": OPSET, "inputs": list(INPUT_NAMES), "outputs": list(OUTPUT_NAMES)},
        "artifacts": {
            "training_model": ort_artifacts.TRAINING_MODEL,
            "eval_model": ort_artifacts.EVAL_MODEL,
            "optimizer_model": ort_artifacts.OPTIMIZER_MODEL,
            "checkpoint": ort_artifacts.CHECKPOINT,
            "initial_vector": INITIAL_VECTOR,
        },
        "training": {
            "seq_len": options.seq_len,
            "optimizer": "AdamW",
            "loss": "causal LM cross entropy: labels shifted by one, ignore_index=-100 (padding)",
        },
        "reference": {"batch": "example_batch(batch_size=2, seq_len=16, seed=1234)", "eval_loss": ref_loss},
        "versions": _versions(),
    }
