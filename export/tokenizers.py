"""Put the model's tokenizer into the bundle in a form devices can load without transformers.

Built-in tiny models use the byte-level tokenizer of `fl_protocol.tokenizer`. Local Hugging Face models
ship their fast tokenizer as `tokenizer/tokenizer.json`, which devices load with the small `tokenizers`
library. A model directory without a tokenizer can still be exported with `--tokenizer byte` when its
vocabulary has room for the 260 byte-level ids.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from export.errors import ExportError
from export.sources import LoadedModel
from fl_protocol.tokenizer import BYTE_VOCAB_SIZE, ByteTokenizer

TOKENIZER_DIR = "tokenizer"
_SIDE_FILES = ("tokenizer_config.json", "special_tokens_map.json")


def bundle_tokenizer(loaded: LoadedModel, out_dir: Path, *, choice: str, vocab_size: int) -> dict[str, Any]:
    """Copy or describe the tokenizer; return the manifest's `tokenizer` section."""
    if choice not in ("auto", "byte"):
        raise ExportError(f"--tokenizer must be 'auto' or 'byte', got {choice!r}")
    if choice == "byte" or loaded.source_dir is None:
        if vocab_size < BYTE_VOCAB_SIZE:
            raise ExportError(
                f"the byte tokenizer needs a vocabulary of at least {BYTE_VOCAB_SIZE}; "
                f"the model has {vocab_size}"
            )
        return ByteTokenizer().to_manifest()
    return _bundle_hf_tokenizer(loaded.source_dir, out_dir, vocab_size)


def _bundle_hf_tokenizer(source_dir: Path, out_dir: Path, vocab_size: int) -> dict[str, Any]:
    from transformers import AutoTokenizer  # export-only dependency

    try:
        tok = AutoTokenizer.from_pretrained(source_dir, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ExportError(
            f"no usable tokenizer in {source_dir} ({exc}); add tokenizer files or pass --tokenizer byte"
        ) from exc
    if not getattr(tok, "is_fast", False):
        raise ExportError(
            f"the tokenizer in {source_dir} has no fast (tokenizer.json) form; devices need one"
        )
    eos_id = tok.eos_token_id
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else eos_id
    if pad_id is None:
        raise ExportError(f"the tokenizer in {source_dir} defines neither a pad nor an eos token")
    check_tokenizer_fits(tok, vocab_size, where=str(source_dir))
    target = out_dir / TOKENIZER_DIR
    target.mkdir(parents=True, exist_ok=True)
    tok.backend_tokenizer.save(str(target / "tokenizer.json"))
    for name in _SIDE_FILES:
        if (source_dir / name).is_file():
            shutil.copyfile(source_dir / name, target / name)
    return {
        "kind": "hf",
        "vocab_size": vocab_size,
        "files": [f"{TOKENIZER_DIR}/tokenizer.json"],
        "pad_id": int(pad_id),
        "bos_id": None if tok.bos_token_id is None else int(tok.bos_token_id),
        "eos_id": None if eos_id is None else int(eos_id),
    }


def check_tokenizer_fits(tok: Any, vocab_size: int, *, where: str) -> None:
    """Refuse a tokenizer that can emit an id the model has no embedding row for.

    Checks (each an ExportError naming the ids): every id of the tokenizer's vocabulary, added tokens
    included, is below `vocab_size`; the bos/eos/pad/unk tokens exist in the tokenizer's own vocabulary
    (transformers invents `<|endoftext|>` at id = len(vocab) for a tokenizer that defines no special
    tokens, which devices would then refuse) and have ids below `vocab_size`. A tokenizer smaller than
    the model (unused embedding rows) is fine.
    """
    backend = tok.backend_tokenizer
    for role in ("bos", "eos", "pad", "unk"):
        token = getattr(tok, f"{role}_token", None)
        token_id = getattr(tok, f"{role}_token_id", None)
        if token is None or token_id is None:
            continue
        if int(token_id) >= vocab_size:
            raise ExportError(
                f"the tokenizer in {where} has {role} token {str(token)!r} at id {token_id}, outside the "
                f"model's vocabulary of {vocab_size} (transformers invents default special tokens for a "
                "tokenizer whose files define none); define the special tokens in the tokenizer files"
            )
        if backend.token_to_id(str(token)) != int(token_id):
            raise ExportError(
                f"the tokenizer in {where} names {role} token {str(token)!r} (id {token_id}) that its "
                "vocabulary does not hold; define the special tokens in the tokenizer files"
            )
    vocab = backend.get_vocab(with_added_tokens=True)
    top_token, top_id = max(vocab.items(), key=lambda item: item[1]) if vocab else ("", -1)
    if top_id >= vocab_size:
        raise ExportError(
            f"the tokenizer in {where} has ids up to {top_id} ({top_token!r}) but the model's vocabulary has "
            f"{vocab_size} entries (ids 0..{vocab_size - 1}); use the tokenizer the model was trained with"
        )
