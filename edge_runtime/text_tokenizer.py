"""Load the tokenizer a bundle's manifest names, without transformers.

A bundle's manifest carries a `tokenizer` section (see docs/data.md):

- `{"kind": "byte", "vocab_size": 260, "pad_id": 256, "bos_id": 257, "eos_id": 258}`: the built-in
  byte tokenizer of the tiny models (`fl_protocol.tokenizer.ByteTokenizer`), no files.
- `{"kind": "hf", "files": ["tokenizer/tokenizer.json"], "vocab_size": N, "pad_id": P|null,
  "bos_id": B|null, "eos_id": E|null}`: a Hugging Face *fast* tokenizer file shipped in the bundle (path
  relative to the bundle), loaded with the small `tokenizers` package (a Rust extension with aarch64
  wheels), never with transformers. Missing ids fall back: pad and bos to eos, eos to bos then pad.

Both give an object with `encode(text) -> list[int]` (no special tokens), `decode(ids)`, `vocab_size`,
`pad_id`, `bos_id` and `eos_id`: the `TextTokenizer` protocol the local data pipeline depends on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from fl_protocol.errors import ConfigError
from fl_protocol.tokenizer import TOKENIZER_KIND_BYTE, ByteTokenizer

logger = logging.getLogger(__name__)

TOKENIZER_KIND_HF = "hf"


@runtime_checkable
class TextTokenizer(Protocol):
    """What the device needs from a tokenizer: text → ids plus the special ids used for framing."""

    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...


class HFTokenizer:
    """A `tokenizers.Tokenizer` behind the `TextTokenizer` interface, with special ids from the manifest.

    `encode` adds no special tokens (the data pipeline frames each document as BOS + text + EOS itself,
    the same for every tokenizer kind).
    """

    kind = TOKENIZER_KIND_HF

    def __init__(self, tokenizer: Any, *, vocab_size: int, pad_id: int, bos_id: int, eos_id: int) -> None:
        self._tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.bos_id = bos_id
        self.eos_id = eos_id

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens.

        The Rust extension raises TypeError for a str it cannot convert (a lone surrogate); the data
        pipeline (`edge_runtime.data.tokenize_records`) skips such a record and logs where it came from.
        """
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`, special tokens skipped."""
        return str(self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True))

    def __repr__(self) -> str:
        ids = f"pad={self.pad_id}, bos={self.bos_id}, eos={self.eos_id}"
        return f"HFTokenizer(vocab_size={self.vocab_size}, {ids})"


def load_tokenizer(spec: dict[str, Any], bundle_dir: Path) -> TextTokenizer:
    """Build the tokenizer described by a manifest `tokenizer` section; files resolve inside `bundle_dir`.

    Raises ConfigError for an unknown kind, a missing or unreadable file, a file path that leaves the
    bundle, or special ids outside the vocabulary: training with a wrong tokenizer corrupts the model
    silently, so every mismatch is refused up front.
    """
    if not isinstance(spec, dict):
        raise ConfigError(f"tokenizer spec must be a table, got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind == TOKENIZER_KIND_BYTE:
        return ByteTokenizer.from_manifest(spec)
    if kind == TOKENIZER_KIND_HF:
        return _load_hf(spec, Path(bundle_dir))
    raise ConfigError(
        f"unknown tokenizer kind {kind!r}; expected {TOKENIZER_KIND_BYTE!r} or {TOKENIZER_KIND_HF!r}"
    )


def _bundle_file(spec: dict[str, Any], bundle_dir: Path) -> Path:
    files = spec.get("files")
    if not isinstance(files, list) or not files or not isinstance(files[0], str):
        raise ConfigError("tokenizer kind 'hf' needs 'files': [\"tokenizer.json\"] in the manifest")
    root = bundle_dir.resolve()
    path = (root / files[0]).resolve()
    if root not in path.parents:
        raise ConfigError(f"tokenizer file {files[0]!r} is outside the bundle directory")
    if not path.is_file():
        raise ConfigError(f"tokenizer file {path} does not exist")
    return path


def _optional_id(spec: dict[str, Any], key: str) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"tokenizer field {key!r} must be an integer or null, got {value!r}")
    return value


def _load_hf(spec: dict[str, Any], bundle_dir: Path) -> HFTokenizer:
    path = _bundle_file(spec, bundle_dir)
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            "tokenizer kind 'hf' needs the 'tokenizers' package (pip install tokenizers)"
        ) from exc
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises a bare Exception on a malformed file
        raise ConfigError(f"cannot load tokenizer file {path}: {exc}") from exc

    pad_id, bos_id, eos_id = _special_ids(spec)
    vocab_size = _optional_id(spec, "vocab_size") or tokenizer.get_vocab_size(with_added_tokens=True)
    for name, value in (("pad_id", pad_id), ("bos_id", bos_id), ("eos_id", eos_id)):
        if not 0 <= value < vocab_size:
            raise ConfigError(f"tokenizer {name}={value} is outside the vocabulary of size {vocab_size}")
    return HFTokenizer(tokenizer, vocab_size=vocab_size, pad_id=pad_id, bos_id=bos_id, eos_id=eos_id)


def _special_ids(spec: dict[str, Any]) -> tuple[int, int, int]:
    """(pad, bos, eos) with fallbacks: GPT-2 style models have one <|endoftext|> for bos and eos and no pad.

    eos falls back to bos then pad, bos to eos, pad to eos (padded positions are masked, so any id works).
    """
    pad_id, bos_id, eos_id = (_optional_id(spec, key) for key in ("pad_id", "bos_id", "eos_id"))
    eos_id = next((i for i in (eos_id, bos_id, pad_id) if i is not None), None)
    if eos_id is None:
        raise ConfigError("tokenizer kind 'hf' needs at least one of 'eos_id', 'bos_id', 'pad_id'")
    if pad_id is None:
        logger.info(
            "tokenizer has no pad token; padding with eos id %d (padded positions are masked)", eos_id
        )
    return (eos_id if pad_id is None else pad_id), (eos_id if bos_id is None else bos_id), eos_id
