"""Byte tokenizer contract (fl_protocol.tokenizer) and bundle tokenizer loading
(edge_runtime.text_tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_runtime.text_tokenizer import HFTokenizer, TextTokenizer, load_tokenizer
from fl_protocol.errors import ConfigError
from fl_protocol.tokenizer import BOS_ID, BYTE_VOCAB_SIZE, EOS_ID, PAD_ID, UNK_ID, ByteTokenizer
from tests.kit.tokenizers import build_hf_tokenizer_file


def test_special_ids_are_the_documented_contract() -> None:
    assert (BYTE_VOCAB_SIZE, PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (260, 256, 257, 258, 259)
    tok = ByteTokenizer()
    assert (tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id) == (260, 256, 257, 258)
    assert tok.to_manifest() == {
        "kind": "byte",
        "vocab_size": 260,
        "pad_id": 256,
        "bos_id": 257,
        "eos_id": 258,
    }
    assert isinstance(tok, TextTokenizer)


@given(st.text())
def test_round_trip_on_arbitrary_unicode(text: str) -> None:
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert all(0 <= i < 256 for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode([BOS_ID, *ids, EOS_ID, PAD_ID, PAD_ID]) == text


def test_encode_adds_no_specials_and_decode_replaces_broken_utf8() -> None:
    tok = ByteTokenizer()
    assert tok.encode("") == []
    assert tok.encode("é") == [0xC3, 0xA9]
    assert tok.decode([0xC3]) == "\ufffd"
    assert tok.decode([UNK_ID, 104, 105]) == "hi"
    assert tok.encode("a\ud800b") == [97, 63, 98]  # a lone surrogate cannot be UTF-8: '?'


def test_decode_refuses_ids_outside_the_vocabulary() -> None:
    with pytest.raises(ValueError, match=r"token id 260 outside the byte vocabulary 0\.\.259"):
        ByteTokenizer().decode([260])
    with pytest.raises(ValueError, match=r"token id -1 outside the byte vocabulary 0\.\.259"):
        ByteTokenizer().decode([-1])


def test_load_byte_tokenizer_checks_the_contract(tmp_path: Path) -> None:
    tok = load_tokenizer(ByteTokenizer().to_manifest(), tmp_path)
    assert isinstance(tok, ByteTokenizer)
    with pytest.raises(ConfigError, match="eos_id"):
        load_tokenizer({"kind": "byte", "eos_id": 0}, tmp_path)


def test_unknown_kind_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown tokenizer kind"):
        load_tokenizer({"kind": "sentencepiece"}, tmp_path)


def test_load_hf_tokenizer_from_bundle_without_pad(tmp_path: Path) -> None:
    ids = build_hf_tokenizer_file(tmp_path / "tokenizer.json")
    spec = {
        "kind": "hf",
        "files": ["tokenizer.json"],
        "pad_id": None,
        "bos_id": ids["bos"],
        "eos_id": ids["eos"],
    }
    tok = load_tokenizer(json.loads(json.dumps(spec)), tmp_path)
    assert isinstance(tok, HFTokenizer)
    assert tok.pad_id == tok.eos_id == ids["eos"]  # no pad token: pad falls back to eos
    assert tok.bos_id == ids["bos"]
    encoded = tok.encode("the gateway sums")
    assert len(encoded) == 3 and ids["bos"] not in encoded and ids["eos"] not in encoded
    assert tok.decode(encoded) == "the gateway sums"
    assert tok.encode("zebra")[0] == ids["unk"]
    assert tok.vocab_size > max(encoded)


def test_hf_tokenizer_spec_errors(tmp_path: Path) -> None:
    ids = build_hf_tokenizer_file(tmp_path / "tokenizer.json")
    base = {"kind": "hf", "files": ["tokenizer.json"], "eos_id": ids["eos"]}
    with pytest.raises(ConfigError, match="outside the bundle"):
        load_tokenizer({**base, "files": ["../tokenizer.json"]}, tmp_path / "sub")
    with pytest.raises(ConfigError, match="does not exist"):
        load_tokenizer({**base, "files": ["missing.json"]}, tmp_path)
    with pytest.raises(ConfigError, match="eos_id"):
        load_tokenizer({"kind": "hf", "files": ["tokenizer.json"], "pad_id": None}, tmp_path)
    only_pad = load_tokenizer({"kind": "hf", "files": ["tokenizer.json"], "pad_id": ids["unk"]}, tmp_path)
    assert only_pad.eos_id == only_pad.bos_id == only_pad.pad_id == ids["unk"]
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        load_tokenizer({**base, "pad_id": 10_000}, tmp_path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot load"):
        load_tokenizer({**base, "files": ["broken.json"]}, tmp_path)
    tok = load_tokenizer(base, tmp_path)
    assert tok.bos_id == ids["eos"]  # no bos in the spec: GPT-2 style, eos doubles as bos
