"""One bad record costs that record only (issue 12, finding 8).

- JSONL strings holding raw U+2028 / U+0085 (valid JSON, as `json.dumps(ensure_ascii=False)` writes
  them) used to split a record mid-line ("4 malformed lines" for a 2-line file, later line numbers wrong).
- A lone surrogate escape (`"\\ud83d"`) made an HF-tokenizer device raise TypeError in the participation
  decision, every round.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from edge_runtime.data import LocalDataset, Record, read_data_dir, tokenize_records
from edge_runtime.errors import NoLocalDataError
from edge_runtime.text_tokenizer import load_tokenizer
from fl_protocol.tokenizer import ByteTokenizer
from tests.kit.tokenizers import build_hf_tokenizer_file


def _write_jsonl(path: Path, texts: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), "utf-8")


def test_unicode_line_separators_inside_records_do_not_split_them(tmp_path: Path) -> None:
    texts = ["first\u2028half of one record", "second\x85record\u2029with\x1cseparators\x0b\x0c"]
    _write_jsonl(tmp_path / "a.jsonl", texts)
    report = read_data_dir(tmp_path, default_tier="public")
    assert report.malformed_lines == 0
    assert [r.text for r in report.records] == texts
    assert [r.origin for r in report.records] == ["a.jsonl:1", "a.jsonl:2"]


def test_line_numbers_stay_true_after_separators(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "a.jsonl"
    _write_jsonl(path, ["one\u2028two", "three\x85four"])
    with path.open("ab") as f:
        f.write(b"{not json\r\n")  # line 3, with a CRLF ending
        f.write(b'{"text": "bad utf-8 \xff here"}\n')  # line 4: one undecodable line, not the file
        f.write(b'{"text": "last"}\r\n')  # line 5
    with caplog.at_level(logging.WARNING, logger="edge_runtime.data"):
        report = read_data_dir(tmp_path, default_tier="public")
    assert report.malformed_lines == 2 and report.unreadable_files == 0
    assert [r.origin for r in report.records] == ["a.jsonl:1", "a.jsonl:2", "a.jsonl:5"]
    assert report.records[-1].text == "last"
    assert "a.jsonl:3" in caplog.text and "a.jsonl:4" in caplog.text


def test_lone_surrogate_record_is_skipped_counted_and_located(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a.jsonl").write_text(
        '{"text": "the gateway sums"}\n{"text": "\\ud83d"}\n{"text": "the cloud averages"}\n', "utf-8"
    )
    with caplog.at_level(logging.WARNING, logger="edge_runtime.data"):
        report = read_data_dir(tmp_path, default_tier="public")
    assert [r.text for r in report.records] == ["the gateway sums", "the cloud averages"]
    assert report.malformed_lines == 1
    assert "a.jsonl:2" in caplog.text and "surrogate" in caplog.text


def test_hf_tokenizer_device_trains_on_the_rest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ids = build_hf_tokenizer_file(tmp_path / "tokenizer.json")
    tok = load_tokenizer(
        {"kind": "hf", "files": ["tokenizer.json"], "bos_id": ids["bos"], "eos_id": ids["eos"]}, tmp_path
    )
    with pytest.raises(TypeError, match="TextInputSequence must be str"):
        tok.encode("\ud83d")  # what the Rust extension does with a lone surrogate
    records = [
        Record("the gateway sums", "public", "a.jsonl:1"),
        Record("\ud83d", "public", "a.jsonl:2"),  # reaches the tokenizer (e.g. from another loader)
        Record("the cloud averages", "public", "a.jsonl:3"),
    ]
    with caplog.at_level(logging.WARNING, logger="edge_runtime.data"):
        dataset = LocalDataset.from_records(records, tok, seq_len=4, tier="public", eval_fraction=0.0, seed=1)
    assert dataset.num_train_tokens == 5 + 5  # two records of three words each, framed bos + words + eos
    assert "a.jsonl:2" in caplog.text


class _Flaky:
    """A tokenizer that fails differently on different records."""

    vocab_size, pad_id, bos_id, eos_id = 260, 256, 257, 258

    def encode(self, text: str) -> list[int]:
        if text == "type":
            raise TypeError("argument 'input': failed to extract enum")
        if text == "value":
            raise ValueError("bad")
        if text == "panic":
            raise _PanicLike("rust panicked")
        return ByteTokenizer().encode(text)

    def decode(self, ids: object) -> str:
        return ""


class _PanicLike(BaseException):
    """Stands in for pyo3's PanicException, which derives from BaseException."""


def test_any_tokenizer_failure_costs_one_record() -> None:
    records = [
        Record(t, "public", f"f.jsonl:{i}") for i, t in enumerate(["ok", "type", "value", "panic", "fine"], 1)
    ]
    docs = tokenize_records(records, _Flaky())
    assert docs == [[257, *b"ok", 258], [257, *b"fine", 258]]
    with pytest.raises(NoLocalDataError, match="every one of 2"):
        tokenize_records(records[1:3], _Flaky())
