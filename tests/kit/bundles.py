"""Model bundles for tests.

- `export_tiny_llama`: the real export pipeline on the built-in tiny-llama model (seq_len 32), what the
  trainer, device and operator tests run; tests/conftest.py exports it once per session
  (`tiny_llama_bundle`), tests that change a bundle copy it first.
- `write_vector_bundle`: a bundle holding only an initial vector and its manifest, enough for the cloud
  (which never trains) and much faster than an export.
- `tiny_llama_config`: the small random Llama (grouped-query heads) that export and graph tests build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fl_protocol.flatvec import FlatVector, save_flat_vector
from fl_protocol.manifest import Manifest, bundle_id, sha256_file, write_manifest


def export_tiny_llama(out_dir: Path, **options: Any) -> Manifest:
    """Export tiny-llama (seq_len 32 unless `options` say otherwise; other ExportOptions fields by name)
    into `out_dir`; returns the bundle's manifest."""
    from export.pipeline import ExportOptions, run_export  # torch and onnx: only for tests that export

    settings: dict[str, Any] = {"model": "tiny-llama", "seq_len": 32, **options}
    return run_export(ExportOptions(out_dir=out_dir, **settings), progress=lambda _line: None)


def tiny_llama_config(**overrides: Any) -> Any:
    """A transformers LlamaConfig: byte vocabulary, hidden 32, MLP 64, 2 layers, 4 heads over 2 key/value
    heads, 64 positions; `overrides` replace any of these by field name."""
    from transformers import LlamaConfig  # only for tests that build a model

    from fl_protocol.tokenizer import BYTE_VOCAB_SIZE

    fields: dict[str, Any] = {
        "vocab_size": BYTE_VOCAB_SIZE,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
    }
    return LlamaConfig(**{**fields, **overrides})


def write_vector_bundle(bundle_dir: Path, initial: np.ndarray) -> Path:
    """A bundle in `bundle_dir` (created) whose only artifact is `initial` (float32, [d]) as the initial
    flat vector; returns `bundle_dir`."""
    bundle_dir.mkdir()
    raw: dict[str, Any] = {
        "format_version": 1,
        "trainable": {"total_length": int(initial.shape[0]), "tensors": []},
        "training": {"seq_len": 16},
        "artifacts": {"initial_vector": "initial_vector.safetensors"},
    }
    vector_path = bundle_dir / "initial_vector.safetensors"
    save_flat_vector(vector_path, FlatVector(initial, bundle_id(raw), 0))
    raw["files"] = {"initial_vector.safetensors": sha256_file(vector_path)}
    write_manifest(bundle_dir, raw)
    return bundle_dir
