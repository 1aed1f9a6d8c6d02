"""Local data directory reading and the packed, batched LocalDataset (edge_runtime.data)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.data import (
    IGNORE_INDEX,
    LocalDataset,
    Record,
    load_records,
    pack_documents,
    read_data_dir,
)
from edge_runtime.errors import ConfigError, NoLocalDataError
from edge_runtime.text_tokenizer import load_tokenizer
from fl_protocol.errors import FedloraError
from fl_protocol.tokenizer import BOS_ID, EOS_ID, PAD_ID, ByteTokenizer

TIERS = {"public", "personal", "health"}


def write_jsonl(path: Path, lines: list[object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")


def docs(n: int, tier: str = "public") -> list[Record]:
    return [Record(f"document {i:03d} " + "lorem ipsum " * (i % 5 + 1), tier) for i in range(n)]


def dataset(records: list[Record], **overrides: object) -> LocalDataset:
    settings: dict = {"seq_len": 16, "tier": "public", "eval_fraction": 0.2, "seed": 7, **overrides}
    return LocalDataset.from_records(records, ByteTokenizer(), **settings)


# ---- reading the data directory ----------------------------------------------------------------------


def test_jsonl_tiers_default_and_malformed_lines_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_jsonl(
        tmp_path / "a.jsonl",
        [
            {"text": "one", "tier": "health"},
            {"text": "two"},
            "{not json",
            {"tier": "public"},
            [1, 2],
            {"text": "three", "tier": 5},
            {"text": "   "},
            "",
        ],
    )
    with caplog.at_level(logging.WARNING, logger="edge_runtime.data"):
        report = read_data_dir(tmp_path, default_tier="personal", allowed_tiers=TIERS)
    assert [(r.text, r.tier) for r in report.records] == [("one", "health"), ("two", "personal")]
    assert report.malformed_lines == 4 and report.empty_records == 1
    assert "a.jsonl:3" in caplog.text


def test_txt_files_take_tiers_from_tiers_toml(tmp_path: Path) -> None:
    (tmp_path / "health").mkdir()
    (tmp_path / "health" / "visit.txt").write_text("blood pressure fine")
    (tmp_path / "notes.txt").write_text("buy milk")
    (tmp_path / ".hidden.txt").write_text("ignored")
    (tmp_path / "readme.md").write_text("ignored")
    (tmp_path / "tiers.toml").write_text('"health/*" = "health"\n"*.txt" = "personal"\n')
    write_jsonl(
        tmp_path / "health" / "log.jsonl", [{"text": "pulse 60"}, {"text": "weather", "tier": "public"}]
    )
    records = load_records(tmp_path, default_tier="public", allowed_tiers=TIERS)
    got = {(r.text, r.tier, r.origin) for r in records}
    assert got == {
        ("pulse 60", "health", "health/log.jsonl:1"),
        ("weather", "public", "health/log.jsonl:2"),
        ("blood pressure fine", "health", "health/visit.txt"),
        ("buy milk", "personal", "notes.txt"),
    }


def test_disallowed_tiers_are_dropped_not_downgraded(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "d.jsonl", [{"text": "x", "tier": "helth"}, {"text": "y"}])
    report = read_data_dir(tmp_path, default_tier="public", allowed_tiers=TIERS)
    assert [r.tier for r in report.records] == ["public"] and report.disallowed_tier_records == 1
    with pytest.raises(ConfigError, match="default tier"):
        load_records(tmp_path, default_tier="secret", allowed_tiers=TIERS)
    (tmp_path / "tiers.toml").write_text('"*.txt" = "secret"\n')
    with pytest.raises(ConfigError, match="secret"):
        load_records(tmp_path, default_tier="public", allowed_tiers=TIERS)
    (tmp_path / "tiers.toml").write_text("= broken")
    with pytest.raises(ConfigError, match="tiers.toml"):
        load_records(tmp_path, default_tier="public", allowed_tiers=TIERS)


def test_missing_empty_or_useless_directories_raise_no_local_data(tmp_path: Path) -> None:
    with pytest.raises(NoLocalDataError, match="does not exist"):
        load_records(tmp_path / "nope", default_tier="public", allowed_tiers=None)
    with pytest.raises(NoLocalDataError, match="no usable records"):
        load_records(tmp_path, default_tier="public", allowed_tiers=None)
    (tmp_path / "file.txt").write_text("a file, not a directory")
    with pytest.raises(NoLocalDataError, match="not a directory"):
        load_records(tmp_path / "file.txt", default_tier="public", allowed_tiers=None)
    (tmp_path / "file.txt").unlink()
    write_jsonl(tmp_path / "bad.jsonl", ["garbage", "{}"])
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9")
    with pytest.raises(NoLocalDataError, match="1 unreadable, 2 malformed") as info:
        load_records(tmp_path, default_tier="public", allowed_tiers=None)
    assert isinstance(info.value, FedloraError)


# ---- packing and batching -----------------------------------------------------------------------------


def test_pack_documents_concatenates_and_pads_only_the_last_row() -> None:
    ids, mask = pack_documents([[1, 2, 3], [4, 5], [6, 7, 8, 9]], seq_len=4, pad_id=PAD_ID)
    assert ids.dtype == mask.dtype == np.int64
    assert ids.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8], [9, PAD_ID, PAD_ID, PAD_ID]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 0, 0]]
    empty_ids, _ = pack_documents([], seq_len=4, pad_id=PAD_ID)
    assert empty_ids.shape == (0, 4)


def test_rows_frame_documents_and_labels_mask_padding() -> None:
    ds = dataset([Record("hello", "public")], eval_fraction=0.0, seq_len=8)
    (batch,) = list(ds.batches(4, epoch=0))
    assert batch.input_ids.shape == batch.attention_mask.shape == batch.labels.shape == (1, 8)
    assert batch.input_ids.tolist() == [[BOS_ID, *b"hello", EOS_ID, PAD_ID]]
    assert batch.attention_mask.tolist() == [[1] * 7 + [0]]
    assert batch.labels.tolist() == [[BOS_ID, *b"hello", EOS_ID, IGNORE_INDEX]]
    assert batch.num_tokens == ds.num_train_tokens == 7
    assert set(batch.as_dict()) == {"input_ids", "attention_mask", "labels"}


def test_shuffling_is_deterministic_per_seed_and_epoch() -> None:
    records = docs(40)

    def epoch_rows(seed: int, epoch: int) -> list[list[int]]:
        ds = dataset(records, seed=seed)
        return [row for b in ds.batches(3, epoch=epoch) for row in b.input_ids.tolist()]

    assert epoch_rows(1, 0) == epoch_rows(1, 0)
    assert epoch_rows(1, 0) != epoch_rows(1, 1)
    assert epoch_rows(1, 0) != epoch_rows(2, 0)
    assert sorted(epoch_rows(1, 0)) == sorted(epoch_rows(1, 1))  # same rows, other order


def test_batches_cover_every_row_once_and_drop_last() -> None:
    ds = dataset(docs(40))
    sizes = [b.input_ids.shape[0] for b in ds.batches(4, epoch=3)]
    assert sum(sizes) == ds.num_train_rows and max(sizes) == 4
    dropped = [b.input_ids.shape[0] for b in ds.batches(4, epoch=3, drop_last=True)]
    assert dropped == [4] * (ds.num_train_rows // 4)
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        next(ds.batches(0, epoch=0))


def test_held_out_documents_are_disjoint_from_training() -> None:
    # each document fills exactly one row (BOS + 14 bytes + EOS = 16), so a row names its document
    records = [Record(f"document {i:03d} .", "public") for i in range(50)]
    ds = dataset(records, eval_fraction=0.2, seq_len=16)
    tok = ByteTokenizer()

    def doc_names(batches: object) -> list[str]:
        return [tok.decode(row) for b in batches for row in b.input_ids.tolist()]

    train, held_out = doc_names(ds.batches(8, epoch=0)), doc_names(ds.eval_batches(8))
    assert (len(held_out), len(train)) == (10, 40) == (ds.num_eval_rows, ds.num_train_rows)
    assert not set(train) & set(held_out)
    assert set(train) | set(held_out) == {r.text for r in records}
    assert doc_names(dataset(records, eval_fraction=0.2, seq_len=16).eval_batches(3)) == held_out
    assert doc_names(dataset(records, eval_fraction=0.2, seq_len=16, seed=8).eval_batches(3)) != held_out


def test_single_document_is_cut_for_evaluation() -> None:
    ds = dataset([Record("x" * 200, "public")], eval_fraction=0.25, seq_len=16)
    assert ds.num_eval_rows >= 1 and ds.num_train_rows >= 1
    total = sum(b.num_tokens for b in ds.batches(8, epoch=0)) + sum(b.num_tokens for b in ds.eval_batches(8))
    assert total == 202  # BOS + 200 bytes + EOS, each token in exactly one split


def test_tier_filtering_and_errors() -> None:
    records = docs(6, "public") + [Record("secret diagnosis " * 3, "health")]
    ds = dataset(records, tier="health", eval_fraction=0.0, seq_len=64)
    text = ByteTokenizer().decode(t for b in ds.batches(8, epoch=0) for t in b.input_ids.ravel())
    assert text == "secret diagnosis " * 3
    with pytest.raises(NoLocalDataError, match="personal"):
        dataset(records, tier="personal")
    with pytest.raises(ConfigError, match="seq_len"):
        dataset(records, seq_len=1)
    with pytest.raises(ConfigError, match="eval_fraction"):
        dataset(records, eval_fraction=1.0)


def test_hf_tokenizer_feeds_the_dataset(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    hf = Tokenizer(models.WordLevel(unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.train_from_iterator(["the device trains"], trainer=trainers.WordLevelTrainer(special_tokens=["<eos>"]))
    hf.save(str(tmp_path / "tokenizer.json"))
    ids = {"eos": hf.token_to_id("<eos>")}
    tok = load_tokenizer({"kind": "hf", "files": ["tokenizer.json"], "eos_id": ids["eos"]}, tmp_path)
    ds = LocalDataset.from_records(
        [Record("the device trains", "public")], tok, seq_len=8, tier="public", eval_fraction=0.0, seed=0
    )
    (batch,) = list(ds.batches(2, epoch=0))
    row = batch.input_ids[0].tolist()
    assert row[0] == row[4] == ids["eos"] and row[5:] == [tok.pad_id] * 3  # bos=pad=eos for this spec
    assert batch.labels[0].tolist()[5:] == [IGNORE_INDEX] * 3
