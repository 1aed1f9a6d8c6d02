"""Tokenizer files for tests: a tiny Hugging Face WordLevel tokenizer trained offline."""

from __future__ import annotations

from pathlib import Path

SENTENCES = [
    "the device trains a small adapter",
    "the gateway sums the masked updates",
    "the cloud applies the server optimizer",
    "privacy holds against the aggregators",
]


def build_hf_tokenizer_file(path: Path) -> dict[str, int]:
    """Train a WordLevel tokenizer on SENTENCES (whitespace words, specials <unk> <bos> <eos>, no pad) and
    save it as a tokenizer.json at `path`; return the special ids by name ("unk", "bos", "eos")."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["<unk>", "<bos>", "<eos>"])
    tokenizer.train_from_iterator(SENTENCES, trainer=trainer)
    tokenizer.save(str(path))
    ids = {name: tokenizer.token_to_id(f"<{name}>") for name in ("unk", "bos", "eos")}
    return {name: value for name, value in ids.items() if value is not None}
