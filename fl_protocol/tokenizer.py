"""Byte-level tokenizer: the documented tokenizer of fedlora's built-in tiny models.

Why bytes: a device needs a tokenizer that is identical on every node, has no vocabulary file to ship or
get out of sync, and needs neither transformers nor a Rust extension. UTF-8 bytes cover every text.

Contract (fixed; the export code and bundle manifests depend on it; see docs/data.md):

| id       | meaning                                     |
|----------|---------------------------------------------|
| 0..255   | the UTF-8 byte with that value              |
| 256      | PAD                                         |
| 257      | BOS                                         |
| 258      | EOS                                         |
| 259      | UNK (reserved, never produced)              |

`vocab_size` is 260.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fl_protocol.errors import ConfigError

BYTE_VOCAB_SIZE = 260
PAD_ID = 256
BOS_ID = 257
EOS_ID = 258
UNK_ID = 259
NUM_BYTES = 256

TOKENIZER_KIND_BYTE = "byte"


class ByteTokenizer:
    """Maps text to its UTF-8 bytes (ids 0..255) and back; ids 256..259 are the special tokens."""

    kind = TOKENIZER_KIND_BYTE
    vocab_size = BYTE_VOCAB_SIZE
    pad_id = PAD_ID
    bos_id = BOS_ID
    eos_id = EOS_ID
    unk_id = UNK_ID

    def encode(self, text: str) -> list[int]:
        """Return the UTF-8 bytes of `text` as ids; no BOS/EOS is added (callers frame documents).

        Lone surrogates (not encodable in UTF-8) are replaced by '?' so encoding never fails on odd input.
        """
        return list(text.encode("utf-8", errors="replace"))

    def decode(self, ids: Iterable[int]) -> str:
        """Return the text for `ids`, skipping special ids; broken UTF-8 sequences decode as U+FFFD.

        Ids outside 0..259 are a caller bug (e.g. a sampled id from a wrong vocabulary) and raise ValueError.
        """
        out = bytearray()
        for token_id in ids:
            value = int(token_id)
            if 0 <= value < NUM_BYTES:
                out.append(value)
            elif not NUM_BYTES <= value < BYTE_VOCAB_SIZE:
                raise ValueError(f"token id {value} outside the byte vocabulary 0..{BYTE_VOCAB_SIZE - 1}")
        return out.decode("utf-8", errors="replace")

    def to_manifest(self) -> dict[str, Any]:
        """Describe this tokenizer for a bundle manifest (`tokenizer` section); `from_manifest` inverts it."""
        return {
            "kind": TOKENIZER_KIND_BYTE,
            "vocab_size": BYTE_VOCAB_SIZE,
            "pad_id": PAD_ID,
            "bos_id": BOS_ID,
            "eos_id": EOS_ID,
        }

    @classmethod
    def from_manifest(cls, spec: dict[str, Any]) -> ByteTokenizer:
        """Check a manifest `tokenizer` section against the fixed contract and return a tokenizer.

        A manifest that claims kind "byte" with other ids was produced by an incompatible exporter;
        training on it would silently corrupt the model, so this raises ConfigError instead.
        """
        if spec.get("kind") != TOKENIZER_KIND_BYTE:
            raise ConfigError(f"tokenizer kind {spec.get('kind')!r} is not {TOKENIZER_KIND_BYTE!r}")
        expected = cls().to_manifest()
        for key, value in expected.items():
            if key in spec and spec[key] != value:
                raise ConfigError(
                    f"byte tokenizer field {key!r} is {spec[key]!r}, the contract says {value!r}"
                )
        return cls()

    def __repr__(self) -> str:
        return f"ByteTokenizer(vocab_size={BYTE_VOCAB_SIZE})"
