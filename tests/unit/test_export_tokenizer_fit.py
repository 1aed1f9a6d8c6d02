"""Export refuses a tokenizer that does not fit the model's vocabulary (issue 12, finding 9).

Both inputs used to export with "bundle ready" and then fail on every device.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig

from export.errors import ExportError
from export.pipeline import ExportOptions, run_export


def _model_dir(where: Path, *, vocab_size: int, tokens: int, tokenizer_class: str, specials: bool) -> Path:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(where)
    vocab = {f"w{i}": i for i in range(tokens)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(where / "tokenizer.json"))
    tok_config: dict[str, object] = {"tokenizer_class": tokenizer_class}
    if specials:
        tok_config.update({"eos_token": "w1", "bos_token": "w2", "unk_token": "w0", "pad_token": "w1"})
    (where / "tokenizer_config.json").write_text(json.dumps(tok_config))
    return where


def _export(src: Path, out: Path) -> None:
    run_export(ExportOptions(model=str(src), out_dir=out, lora_r=2, seq_len=8), progress=lambda _l: None)


def test_tokenizer_ids_beyond_the_model_vocabulary_are_refused(tmp_path: Path) -> None:
    src = _model_dir(
        tmp_path / "m", vocab_size=300, tokens=387, tokenizer_class="TokenizersBackend", specials=True
    )
    with pytest.raises(ExportError, match=r"ids up to 386 .* vocabulary has 300 entries"):
        _export(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_invented_special_token_is_refused(tmp_path: Path) -> None:
    src = _model_dir(
        tmp_path / "m", vocab_size=384, tokens=384, tokenizer_class="GPT2Tokenizer", specials=False
    )
    with pytest.raises(
        ExportError, match=r"'<\|endoftext\|>' at id 384, outside the model's vocabulary of 384"
    ):
        _export(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_fitting_tokenizer_smaller_than_the_model_exports(tmp_path: Path) -> None:
    src = _model_dir(
        tmp_path / "m", vocab_size=300, tokens=280, tokenizer_class="TokenizersBackend", specials=True
    )
    _export(src, tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["tokenizer"]["eos_id"] == 1 and manifest["tokenizer"]["pad_id"] == 1
