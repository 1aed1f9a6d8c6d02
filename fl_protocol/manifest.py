"""The bundle manifest: what a device needs to know about a model bundle, and its integrity check.

A bundle is a directory written by `fedlora export`: ONNX Runtime training artifacts, the tokenizer,
the initial flat LoRA vector and `manifest.json`. The manifest pins which tensors are trained, in which
order they sit in the flat vector (the order ONNX Runtime's contiguous parameter buffer uses), and the
sha256 of every file, so a device refuses a bundle that was altered in transit or on disk.

This module is torch-free on purpose: devices verify bundles without the export toolchain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fl_protocol.errors import FedloraError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
_HASH_CHUNK_BYTES = 1 << 20


class BundleError(FedloraError):
    """A bundle is missing, unreadable, of an unknown format, or fails its integrity check."""


@dataclass(frozen=True)
class TrainableTensor:
    """One trainable LoRA tensor and its slice [offset, offset+length) of the flat vector."""

    name: str  # initializer name in the ONNX graph
    peft_key: str  # key in a PEFT adapter state dict (adapter name stripped)
    shape: tuple[int, ...]
    offset: int
    length: int


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed so large ONNX files never sit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def hash_tree(root: Path, relative_paths: list[str]) -> dict[str, str]:
    """Map each relative path (files only, sorted) under `root` to its sha256."""
    return {rel: sha256_file(root / rel) for rel in sorted(relative_paths)}


def bundle_id(raw: dict[str, Any]) -> str:
    """Identity of a bundle: sha256 of its manifest's canonical JSON without the file-hash table.

    Flat vectors carry this id so they are never applied to another bundle. The file table is left out
    so that files inside the bundle (the initial vector) can themselves carry the id and be hashed.
    """
    content = {k: v for k, v in raw.items() if k != "files"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest, the sha256 of its bytes, and the bundle id flat vectors are bound to."""

    raw: dict[str, Any]
    sha256: str
    bundle_dir: Path

    @property
    def bundle_id(self) -> str:
        """See `bundle_id()`."""
        return bundle_id(self.raw)

    @property
    def trainable_tensors(self) -> list[TrainableTensor]:
        """Trainable tensors in canonical (flat vector) order."""
        return [
            TrainableTensor(t["name"], t["peft_key"], tuple(t["shape"]), int(t["offset"]), int(t["length"]))
            for t in self.raw["trainable"]["tensors"]
        ]

    @property
    def total_length(self) -> int:
        """Number of float32 elements in the flat trainable vector."""
        return int(self.raw["trainable"]["total_length"])

    @property
    def seq_len(self) -> int:
        """Sequence length the bundle was exported and is meant to be trained with."""
        return int(self.raw["training"]["seq_len"])

    @property
    def tokenizer_spec(self) -> dict[str, Any]:
        """Tokenizer description (kind, vocab size, special ids, files relative to the bundle)."""
        return dict(self.raw["tokenizer"])

    def path(self, relative: str) -> Path:
        """Absolute path of a bundle file named in the manifest."""
        return self.bundle_dir / relative


def write_manifest(bundle_dir: Path, raw: dict[str, Any]) -> Manifest:
    """Write manifest.json (stable key order) and return it parsed with its hash."""
    data = (json.dumps(raw, indent=2, sort_keys=True) + "\n").encode()
    (bundle_dir / MANIFEST_NAME).write_bytes(data)
    return Manifest(raw, hashlib.sha256(data).hexdigest(), bundle_dir)


def load_manifest(bundle_dir: Path, *, verify: bool = True) -> Manifest:
    """Read a bundle's manifest; with `verify`, check every listed file's sha256 and refuse on mismatch."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"no {MANIFEST_NAME} in {bundle_dir}: not a fedlora bundle (run `fedlora export`)")
    data = path.read_bytes()
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from exc
    if raw.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{path}: manifest format {raw.get('format_version')!r} is not supported "
            f"(this fedlora reads format {FORMAT_VERSION})"
        )
    manifest = Manifest(raw, hashlib.sha256(data).hexdigest(), bundle_dir)
    if verify:
        verify_files(manifest)
    return manifest


def verify_files(manifest: Manifest) -> None:
    """Raise BundleError naming the first file that is missing or whose sha256 differs from the manifest."""
    for rel, expected in sorted(manifest.raw["files"].items()):
        file_path = manifest.bundle_dir / rel
        if not file_path.is_file():
            raise BundleError(f"bundle file {rel} is missing from {manifest.bundle_dir}")
        actual = sha256_file(file_path)
        if actual != expected:
            raise BundleError(
                f"bundle file {rel} was modified: sha256 {actual[:16]}… does not match the manifest "
                f"({expected[:16]}…); refusing to load a tampered bundle"
            )
