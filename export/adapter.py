"""Flat federated LoRA vector + bundle manifest -> standard PEFT adapter directory.

The result loads with `PeftModel.from_pretrained(base_model, adapter_dir)`: `adapter_config.json` is the
LoRA config recorded at export, `adapter_model.safetensors` holds every LoRA tensor under PEFT's keys
(trained tensors sliced from the flat vector; in FFA mode the frozen A tensors come from the bundle).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from export.errors import ExportError
from fl_protocol.flatvec import load_flat_vector
from fl_protocol.manifest import Manifest, load_manifest

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def adapter_tensors(manifest: Manifest, flat: np.ndarray) -> dict[str, np.ndarray]:
    """Split `flat` into PEFT-keyed tensors and add the bundle's frozen LoRA tensors."""
    if flat.shape != (manifest.total_length,):
        raise ExportError(
            f"vector has {flat.size} values, the bundle's LoRA layout has {manifest.total_length}"
        )
    tensors = {
        t.peft_key: np.ascontiguousarray(
            flat[t.offset : t.offset + t.length].reshape(t.shape), dtype=np.float32
        )
        for t in manifest.trainable_tensors
    }
    frozen = manifest.raw["lora"].get("frozen")
    if frozen:
        tensors.update(load_file(str(manifest.path(frozen["file"]))))
    return tensors


def _adapter_config(manifest: Manifest, base_model: str | None) -> dict[str, object]:
    config = dict(manifest.raw["lora"]["peft_config"])
    source = manifest.raw["model"]["source"]
    if base_model is None:  # an absolute path: the adapter loads from any working directory
        if manifest.raw["model"].get("base_model_dir"):
            base_model = str(manifest.path(manifest.raw["model"]["base_model_dir"]).resolve())
        elif source.startswith("path:"):
            base_model = str(Path(source.removeprefix("path:")).resolve())
        else:
            base_model = source
    config["base_model_name_or_path"] = base_model
    config["inference_mode"] = True
    return config


def write_adapter(bundle_dir: Path, weights: Path, out_dir: Path, *, base_model: str | None = None) -> Path:
    """Write the PEFT adapter for `weights` (a flat vector file bound to `bundle_dir`) into `out_dir`.

    `base_model_name_or_path` is `base_model` when given (a hub name or a path on the machine that will
    load the adapter), else the absolute path of the bundle's `base_model/` (built-in models) or of the
    export's source directory, so `AutoPeftModelForCausalLM.from_pretrained(out_dir)` works from any
    working directory on this machine."""
    manifest = load_manifest(Path(bundle_dir).resolve())
    if not Path(weights).is_file():
        raise ExportError(f"weights file {weights} does not exist")
    flat = load_flat_vector(weights, expected_bundle_id=manifest.bundle_id)
    tensors = adapter_tensors(manifest, flat.values)
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": "pt",
        "fedlora_model_version": str(flat.model_version),
        "bundle_id": manifest.bundle_id,
    }
    save_file(tensors, str(out_dir / ADAPTER_WEIGHTS), metadata=metadata)
    config = _adapter_config(manifest, base_model)
    (out_dir / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out_dir
