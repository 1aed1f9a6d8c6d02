"""Demo corpus (fedlora.corpus): deterministic, non-IID shards, tier proportions, device-loadable output."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from edge_runtime.data import load_records
from fedlora.corpus import (
    FAMILIES,
    TIERS,
    CorpusRecord,
    build_corpus,
    corpus_fingerprint,
    family_counts,
    held_out_split,
    read_jsonl,
    shard_corpus,
    tier_for,
    write_jsonl,
    write_shards,
)
from fl_protocol.errors import ConfigError, DecodeError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus() -> list[CorpusRecord]:
    return build_corpus()


def test_build_is_fast_and_identical_in_a_fresh_process(corpus: list[CorpusRecord]) -> None:
    assert corpus_fingerprint(build_corpus()) == corpus_fingerprint(corpus)
    code = "from fedlora.corpus import build_corpus as b, corpus_fingerprint as f; print(f(b()))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # set/dict order must not leak into the output
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert time.perf_counter() - start < 10.0  # fresh interpreter: every module imported for real
    assert out.stdout.strip() == corpus_fingerprint(corpus)


def test_records_are_substantial_unique_and_cover_every_family(corpus: list[CorpusRecord]) -> None:
    assert len(corpus) > 800
    assert sum(len(r.text) for r in corpus) > 300_000
    assert len({r.text for r in corpus}) == len(corpus)
    assert set(family_counts(corpus)) == set(FAMILIES)
    for record in corpus[:50]:
        assert record.source in FAMILIES[record.family]
        assert record.text.startswith(record.name + "\n\n") and len(record.text) >= 120
    assert len(build_corpus(max_records=10)) == 10
    assert all(len(r.text) >= 400 for r in build_corpus(min_chars=400, max_records=50))
    with pytest.raises(ConfigError, match="min_chars must be >= 1"):
        build_corpus(min_chars=0)


def test_tiers_follow_the_fixed_proportions(corpus: list[CorpusRecord]) -> None:
    counts = Counter(r.tier for r in corpus)
    for tier, share in TIERS:
        assert abs(counts[tier] / len(corpus) - share) < 0.04, (tier, counts)
    synthetic = Counter(tier_for(f"key-{i}") for i in range(20_000))
    for tier, share in TIERS:
        assert abs(synthetic[tier] / 20_000 - share) < 0.015
    assert tier_for("json:json.dumps") == tier_for("json:json.dumps")


def _shares(shard: list[CorpusRecord]) -> list[tuple[str, float]]:
    counts = family_counts(shard)
    return sorted(((f, n / len(shard)) for f, n in counts.items()), key=lambda kv: -kv[1])


@pytest.mark.parametrize("num_shards", [4, 8, 12])
@pytest.mark.parametrize("seed", [0, 1])
def test_shards_are_non_iid(corpus: list[CorpusRecord], num_shards: int, seed: int) -> None:
    shards = shard_corpus(corpus, num_shards=num_shards, seed=seed)
    assert sorted(r.text for s in shards for r in s) == sorted(r.text for r in corpus)  # a partition
    total = family_counts(corpus)
    global_share = {f: n / len(corpus) for f, n in total.items()}
    dominant = []
    for shard in shards:
        shares = _shares(shard)
        dominant.append(shares[0][0])
        assert shares[0][1] + shares[1][1] >= 0.6, shares  # one or two families dominate
        tv_distance = 0.5 * sum(abs(dict(shares).get(f, 0.0) - g) for f, g in global_share.items())
        assert tv_distance >= 0.4, (tv_distance, shares)  # far from the IID mix
        if num_shards >= len(FAMILIES):
            assert shares[0][1] >= 0.6
    assert len(set(dominant)) == min(num_shards, len(FAMILIES))


def test_sharding_is_deterministic_per_seed(corpus: list[CorpusRecord]) -> None:
    first = shard_corpus(corpus, num_shards=5, seed=3)
    assert [corpus_fingerprint(s) for s in first] == [
        corpus_fingerprint(s) for s in shard_corpus(corpus, num_shards=5, seed=3)
    ]
    assert [corpus_fingerprint(s) for s in first] != [
        corpus_fingerprint(s) for s in shard_corpus(corpus, num_shards=5, seed=4)
    ]
    (single,) = shard_corpus(corpus, num_shards=1, seed=0)
    assert len(single) == len(corpus)
    with pytest.raises(ConfigError, match="num_shards must be >= 1"):
        shard_corpus(corpus, num_shards=0, seed=0)


def test_held_out_split_is_disjoint_and_stratified(corpus: list[CorpusRecord]) -> None:
    train, held_out = held_out_split(corpus, fraction=0.1, seed=0)
    assert len(train) + len(held_out) == len(corpus)
    assert not {r.text for r in train} & {r.text for r in held_out}
    assert set(family_counts(held_out)) == set(FAMILIES)
    assert abs(len(held_out) / len(corpus) - 0.1) < 0.01
    assert held_out_split(corpus, fraction=0.1, seed=0)[1] == held_out
    with pytest.raises(ConfigError, match=r"held-out fraction must be in \(0, 1\)"):
        held_out_split(corpus, fraction=1.0, seed=0)


def test_written_shards_load_as_device_data_directories(corpus: list[CorpusRecord], tmp_path: Path) -> None:
    shards = shard_corpus(corpus[:200], num_shards=3, seed=0)
    paths = write_shards(shards, tmp_path)
    assert paths == [tmp_path / f"device-{i:03d}" / "data.jsonl" for i in range(3)]
    for path, shard in zip(paths, shards, strict=True):
        assert read_jsonl(path) == shard
        records = load_records(path.parent, default_tier="public", allowed_tiers={t for t, _ in TIERS})
        assert [(r.text, r.tier) for r in records] == [(r.text, r.tier) for r in shard]
    bad = write_jsonl(corpus[:2], tmp_path / "bad.jsonl")
    bad.write_text(bad.read_text() + '{"text": "no tier"}\n')
    with pytest.raises(DecodeError, match="bad.jsonl:3: not a corpus record"):
        read_jsonl(bad)


def test_jsonl_with_raw_line_separators_reads_back_whole(tmp_path: Path) -> None:
    """U+2028 and U+0085 are valid raw inside JSON strings: they must not split a record."""
    records = [
        CorpusRecord("line\u2028separator and\u0085next line", "public", "m", "text", "m.a"),
        CorpusRecord("paragraph\u2029end\x1c\x1d\x1e", "personal", "m", "text", "m.b"),
    ]
    path = write_jsonl(records, tmp_path / "data.jsonl")
    assert read_jsonl(path) == records
