"""Inputs of a demo run: the exported bundle (cached across runs) and the devices' non-IID data shards.

The bundle cache key covers everything that changes the export (model, LoRA settings, sequence length,
seed and the toolchain versions), so a cached bundle is reused only when a fresh export would be identical;
a cached bundle is still verified against its manifest hashes before use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from fedlora.corpus import CorpusRecord, build_corpus, held_out_split, shard_corpus, write_jsonl, write_shards
from fl_protocol.errors import FedloraError
from fl_protocol.manifest import BundleError, load_manifest

logger = logging.getLogger(__name__)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class BundleSpec:
    """Export settings of the demo's model."""

    model: str = "tiny-llama"
    lora_r: int = 8
    lora_alpha: float = 16.0
    seq_len: int = 64
    seed: int = 0
    ffa: bool = False  # FFA-LoRA: A frozen from the seed, only B trains and travels


def default_cache_dir() -> Path:
    """$FEDLORA_CACHE_DIR, else $XDG_CACHE_HOME/fedlora, else ~/.cache/fedlora (as `fedlora export`)."""
    from export.gguf import default_cache_dir as export_cache_dir  # stdlib-only module

    return export_cache_dir()


def _cache_key(spec: BundleSpec) -> str:
    versions = {}
    for name in ("fedlora", "torch", "transformers", "peft", "onnx", "onnxruntime-training-cpu"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = ""
    from export.graph_version import GRAPH_VERSION  # stdlib-only module

    graph = {"graph_version": GRAPH_VERSION}
    text = json.dumps({"spec": asdict(spec), "versions": versions, **graph}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_bundle(spec: BundleSpec, cache_dir: Path, progress: Progress) -> Path:
    """Return a verified bundle for `spec`, exporting it into the cache the first time."""
    target = cache_dir / f"bundle-{spec.model}-{_cache_key(spec)}"
    if (target / "manifest.json").exists():
        try:
            load_manifest(target)
            progress(f"using cached bundle {target}")
            return target
        except BundleError as exc:
            progress(f"cached bundle is damaged ({exc}); exporting again")
            shutil.rmtree(target)
    from export.pipeline import ExportOptions, run_export  # torch is needed only on a cache miss

    progress(f"exporting {spec.model} (first run only; cached in {cache_dir})")
    staging = cache_dir / f".staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    run_export(
        ExportOptions(
            model=spec.model,
            out_dir=staging,
            lora_r=spec.lora_r,
            lora_alpha=spec.lora_alpha,
            seq_len=spec.seq_len,
            seed=spec.seed,
            ffa=spec.ffa,
            cache_dir=cache_dir,
        ),
        progress=lambda line: None if line.startswith("bundle ready") else progress(f"  {line}"),
    )
    if target.exists():  # a concurrent demo published it first
        shutil.rmtree(staging)
        return target
    staging.rename(target)  # atomic publish: a killed export never leaves a half bundle under the key
    progress(f"  bundle ready: {target}")
    return target


@dataclass(frozen=True)
class DemoData:
    """Per-device data directories plus the central held-out set the demo evaluates the model on."""

    device_dirs: list[Path]
    eval_file: Path
    eval_records: list[CorpusRecord]


def prepare_data(out_dir: Path, *, num_devices: int, seed: int, eval_fraction: float = 0.1) -> DemoData:
    """Build the stdlib-docstring corpus, hold out an eval set, and write one non-IID shard per device."""
    records = build_corpus()
    if len(records) < num_devices * 4:
        raise FedloraError(f"the corpus has {len(records)} records, too few for {num_devices} devices")
    train, held_out = held_out_split(records, fraction=eval_fraction, seed=seed)
    shards = shard_corpus(train, num_shards=num_devices, seed=seed)
    shard_files = write_shards(shards, out_dir / "shards")
    eval_file = write_jsonl(held_out, out_dir / "eval" / "data.jsonl")
    return DemoData([p.parent for p in shard_files], eval_file, held_out)
