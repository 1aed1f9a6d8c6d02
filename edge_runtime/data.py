"""A device's local training data: read the data directory, tokenise, pack, batch (numpy only, no torch).

Directory format (for operators; examples in docs/data.md):

- `*.jsonl`: one JSON object per line, `{"text": str, "tier": str}`; `tier` is optional. Other keys are
  ignored. Lines end at `\n` only (a `\r` before it is dropped): U+2028, U+0085 and the other characters
  Python's `str.splitlines` also breaks on are ordinary text inside a record. Each line is decoded as UTF-8
  on its own, so one undecodable line, invalid JSON, or a text that is not valid Unicode (a lone surrogate
  escape such as `"\ud83d"`) costs that line only: skipped, counted as malformed and logged with its
  file and line number, never a crash.
- `*.txt`: the whole file is one record.
- `tiers.toml` (optional, at the top of the directory): file glob → tier, e.g. `"health/*.txt" = "health"`.
  Globs match the path relative to the data directory (POSIX separators); the first match in file order wins.

A record's tier is its own `tier` field, else the first matching glob in `tiers.toml`, else the configured
default tier. Files are read recursively in sorted order; hidden files and directories are skipped.
A record whose tier is not allowed (a typo such as "helth") is dropped, never downgraded to a lower tier.

`LocalDataset` turns the records of one round's tier into fixed-length rows: each document becomes
BOS + tokens + EOS, documents are concatenated and cut into rows of `seq_len`; the last partial row is
padded (attention_mask 0, labels -100). Labels equal input_ids (the model shifts by one itself).
"""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError, NoLocalDataError
from edge_runtime.text_tokenizer import TextTokenizer, load_tokenizer

try:
    import tomllib
except ImportError:  # Python 3.10 (some Jetson images)
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ImportError:
        tomllib = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

TIERS_FILE = "tiers.toml"
DATA_SUFFIXES = (".jsonl", ".txt")
IGNORE_INDEX = -100

__all__ = [
    "IGNORE_INDEX",
    "Batch",
    "LoadReport",
    "LocalDataset",
    "Record",
    "load_records",
    "load_tokenizer",
    "read_data_dir",
]


@dataclass(frozen=True)
class Record:
    """One training text with its sensitivity tier; `origin` (file[:line]) is for log messages only."""

    text: str
    tier: str
    origin: str = ""


@dataclass
class LoadReport:
    """What reading a data directory found: the usable records and the counts of what was skipped."""

    records: list[Record] = field(default_factory=list)
    files_read: int = 0
    unreadable_files: int = 0
    malformed_lines: int = 0
    empty_records: int = 0
    disallowed_tier_records: int = 0

    def skipped(self) -> int:
        """Total records or lines skipped for any reason (unreadable files count once each)."""
        return (
            self.unreadable_files + self.malformed_lines + self.empty_records + self.disallowed_tier_records
        )


def load_records(data_dir: Path, *, default_tier: str, allowed_tiers: set[str] | None = None) -> list[Record]:
    """Read every usable record under `data_dir` (see the module doc for the format).

    Raises NoLocalDataError when the directory is missing or yields no usable record, so the device can
    sit the round out; ConfigError when `tiers.toml` or `default_tier` is invalid.
    """
    return read_data_dir(data_dir, default_tier=default_tier, allowed_tiers=allowed_tiers).records


def read_data_dir(data_dir: Path, *, default_tier: str, allowed_tiers: set[str] | None = None) -> LoadReport:
    """Like `load_records`, but also return the skip counts (for the device's status report)."""
    data_dir = Path(data_dir)
    if allowed_tiers is not None and default_tier not in allowed_tiers:
        raise ConfigError(
            f"default tier {default_tier!r} is not one of the allowed tiers {sorted(allowed_tiers)}"
        )
    if not data_dir.is_dir():
        raise NoLocalDataError(f"data directory {data_dir} does not exist or is not a directory")
    tier_globs = _read_tier_globs(data_dir / TIERS_FILE, allowed_tiers)
    try:
        files = _data_files(data_dir)
    except OSError as exc:
        raise NoLocalDataError(f"cannot list data directory {data_dir}: {exc}") from exc
    report = LoadReport()
    for path in files:
        relative = path.relative_to(data_dir).as_posix()
        file_tier = _match_tier(relative, tier_globs) or default_tier
        try:
            raw = path.read_bytes()
            content = raw.decode("utf-8") if path.suffix == ".txt" else ""
        except (OSError, UnicodeDecodeError) as exc:
            logger.warning("skipping unreadable data file %s: %s", relative, exc)
            report.unreadable_files += 1
            continue
        report.files_read += 1
        if path.suffix == ".txt":
            _add(report, Record(content, file_tier, relative), allowed_tiers)
        else:
            _read_jsonl(raw, relative, file_tier, allowed_tiers, report)
    if report.malformed_lines:
        logger.warning("skipped %d malformed JSONL line(s) under %s", report.malformed_lines, data_dir)
    if not report.records:
        raise NoLocalDataError(
            f"no usable records in {data_dir}: {report.files_read} file(s) read, "
            f"{report.unreadable_files} unreadable, {report.malformed_lines} malformed line(s), "
            f"{report.empty_records} empty, {report.disallowed_tier_records} with a disallowed tier"
        )
    logger.info("loaded %d record(s) from %d file(s) in %s", len(report.records), report.files_read, data_dir)
    return report


def _data_files(data_dir: Path) -> list[Path]:
    files = []
    for path in sorted(data_dir.rglob("*")):
        parts = path.relative_to(data_dir).parts
        if any(part.startswith(".") for part in parts):
            continue
        if path.suffix in DATA_SUFFIXES and path.is_file():
            files.append(path)
    return files


def _read_tier_globs(path: Path, allowed_tiers: set[str] | None) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    if tomllib is None:
        raise ConfigError(f"{path} needs Python 3.11+ or the 'tomli' package to be read")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    globs = []
    for pattern, tier in table.items():
        if not isinstance(tier, str):
            raise ConfigError(f"{path}: the tier for {pattern!r} must be a string, got {tier!r}")
        if allowed_tiers is not None and tier not in allowed_tiers:
            raise ConfigError(f"{path}: tier {tier!r} for {pattern!r} is not one of {sorted(allowed_tiers)}")
        globs.append((pattern, tier))
    return globs


def _match_tier(relative: str, tier_globs: list[tuple[str, str]]) -> str | None:
    for pattern, tier in tier_globs:
        if fnmatch.fnmatchcase(relative, pattern):
            return tier
    return None


def _read_jsonl(
    raw: bytes, relative: str, file_tier: str, allowed_tiers: set[str] | None, report: LoadReport
) -> None:
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark some editors write
        raw = raw[3:]
    for line_no, raw_line in enumerate(raw.split(b"\n"), start=1):
        line = raw_line[:-1] if raw_line.endswith(b"\r") else raw_line
        if not line.strip():
            continue
        origin = f"{relative}:{line_no}"
        record = _parse_line(line, origin, file_tier)
        if record is None:
            report.malformed_lines += 1
            continue
        _add(report, record, allowed_tiers)


def _parse_line(line: bytes, origin: str, file_tier: str) -> Record | None:
    try:
        obj: Any = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        logger.warning("skipping JSONL line %s: not UTF-8 (%s)", origin, exc.reason)
        return None
    except (json.JSONDecodeError, RecursionError) as exc:
        logger.warning("skipping malformed JSONL line %s: %s", origin, getattr(exc, "msg", "nested too deep"))
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        logger.warning("skipping JSONL line %s: expected an object with a string 'text'", origin)
        return None
    tier = obj.get("tier", file_tier)
    if not isinstance(tier, str):
        logger.warning("skipping JSONL line %s: 'tier' must be a string", origin)
        return None
    if not _is_unicode(obj["text"]) or not _is_unicode(tier):
        logger.warning("skipping JSONL line %s: text is not valid Unicode (lone surrogate escape)", origin)
        return None
    return Record(obj["text"], tier, origin)


def _is_unicode(text: str) -> bool:
    """False for a str holding a lone surrogate (JSON allows `"\\ud83d"`; no tokenizer can encode it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _add(report: LoadReport, record: Record, allowed_tiers: set[str] | None) -> None:
    if not record.text.strip():
        report.empty_records += 1
        return
    if allowed_tiers is not None and record.tier not in allowed_tiers:
        logger.warning(
            "dropping record %s: tier %r is not one of %s", record.origin, record.tier, sorted(allowed_tiers)
        )
        report.disallowed_tier_records += 1
        return
    report.records.append(record)


@dataclass(frozen=True)
class Batch:
    """One training or eval batch, the arrays the trainer backends feed to the model."""

    input_ids: np.ndarray  # int64 [B, S]
    attention_mask: np.ndarray  # int64 [B, S], 1 = real token, 0 = padding
    labels: np.ndarray  # int64 [B, S], input_ids with IGNORE_INDEX where attention_mask == 0

    @property
    def num_tokens(self) -> int:
        """Real (unpadded) tokens in the batch."""
        return int(self.attention_mask.sum())

    def as_dict(self) -> dict[str, np.ndarray]:
        """The batch as named model inputs (`input_ids`, `attention_mask`, `labels`)."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "labels": self.labels}


def pack_documents(
    docs: Sequence[Sequence[int]], *, seq_len: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate token lists and cut them into rows of `seq_len`; pad the last partial row.

    Returns (input_ids, attention_mask), both int64 [N, seq_len]; N is 0 when `docs` hold no tokens.
    Packing wastes no compute on padding except in the very last row.
    """
    total = sum(len(doc) for doc in docs)
    num_rows = -(-total // seq_len)
    ids = np.full(num_rows * seq_len, pad_id, dtype=np.int64)
    mask = np.zeros(num_rows * seq_len, dtype=np.int64)
    if total:
        ids[:total] = np.fromiter((t for doc in docs for t in doc), dtype=np.int64, count=total)
        mask[:total] = 1
    return ids.reshape(num_rows, seq_len), mask.reshape(num_rows, seq_len)


def _make_batch(ids: np.ndarray, mask: np.ndarray) -> Batch:
    labels = np.where(mask == 1, ids, IGNORE_INDEX).astype(np.int64)
    return Batch(input_ids=ids, attention_mask=mask, labels=labels)


def _split_eval(docs: list[list[int]], eval_fraction: float) -> tuple[list[list[int]], list[list[int]]]:
    """Hold out whole documents (the last ones of the already shuffled list), so eval text is unseen.

    With a single document there is nothing to hold out whole: its token list is cut in two instead.
    """
    if eval_fraction <= 0.0:
        return docs, []
    if len(docs) >= 2:
        num_eval = min(max(1, round(eval_fraction * len(docs))), len(docs) - 1)
        return docs[:-num_eval], docs[-num_eval:]
    (doc,) = docs
    if len(doc) < 2:
        return docs, []
    cut = len(doc) - min(max(1, round(eval_fraction * len(doc))), len(doc) - 1)
    return [doc[:cut]], [doc[cut:]]


class LocalDataset:
    """The packed rows of one tier's records, split into train and held-out eval rows.

    Shuffling is deterministic: document order and the eval split come from `seed`, the row order of each
    epoch from (`seed`, `epoch`). numpy's RNG is fine here: data order is not a privacy mechanism.
    """

    def __init__(
        self,
        train: tuple[np.ndarray, np.ndarray],
        held_out: tuple[np.ndarray, np.ndarray],
        *,
        seed: int,
        tier: str,
    ) -> None:
        self._train_ids, self._train_mask = train
        self._eval_ids, self._eval_mask = held_out
        self.seed = seed
        self.tier = tier
        self.seq_len = int(self._train_ids.shape[1])

    @classmethod
    def from_records(
        cls,
        records: Sequence[Record],
        tokenizer: TextTokenizer,
        *,
        seq_len: int,
        tier: str,
        eval_fraction: float = 0.1,
        seed: int,
    ) -> LocalDataset:
        """Keep the records of `tier`, frame each as BOS + tokens + EOS, hold out eval docs, pack rows.

        Raises NoLocalDataError when no record has the round's tier; ConfigError for bad settings or
        token ids outside the tokenizer's vocabulary.
        """
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
            raise ConfigError(f"seq_len must be an integer >= 2, got {seq_len!r}")
        if not 0.0 <= eval_fraction < 1.0:
            raise ConfigError(f"eval_fraction must be in [0, 1), got {eval_fraction!r}")
        of_tier = [r for r in records if r.tier == tier]
        if not of_tier:
            raise NoLocalDataError(
                f"no local records of tier {tier!r} ({len(records)} record(s) of other tiers)"
            )
        docs = tokenize_records(of_tier, tokenizer)
        order = np.random.default_rng(seed).permutation(len(docs))
        train_docs, eval_docs = _split_eval([docs[i] for i in order], eval_fraction)
        train = pack_documents(train_docs, seq_len=seq_len, pad_id=tokenizer.pad_id)
        held_out = pack_documents(eval_docs, seq_len=seq_len, pad_id=tokenizer.pad_id)
        for ids in (train[0], held_out[0]):
            if ids.size and (ids.min() < 0 or ids.max() >= tokenizer.vocab_size):
                raise ConfigError(
                    f"token ids outside the tokenizer vocabulary of size {tokenizer.vocab_size}"
                )
        logger.info(
            "tier %r: %d doc(s) -> %d train row(s), %d eval row(s) of %d tokens",
            tier,
            len(docs),
            train[0].shape[0],
            held_out[0].shape[0],
            seq_len,
        )
        return cls(train, held_out, seed=seed, tier=tier)

    @property
    def num_train_rows(self) -> int:
        """Rows available for training (each `seq_len` tokens, the last possibly padded)."""
        return int(self._train_ids.shape[0])

    @property
    def num_eval_rows(self) -> int:
        """Held-out rows for local evaluation (0 when eval_fraction was 0)."""
        return int(self._eval_ids.shape[0])

    @property
    def num_train_tokens(self) -> int:
        """Real training tokens: the natural data-size weight of this device."""
        return int(self._train_mask.sum())

    def batches(self, batch_size: int, *, epoch: int, drop_last: bool = False) -> Iterator[Batch]:
        """Yield the training rows of one epoch in a shuffled order fixed by (seed, epoch).

        `drop_last` drops a final smaller batch, for backends exported with a fixed batch dimension.
        """
        _check_batch_size(batch_size)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_train_rows)
        yield from _iter_batches(self._train_ids, self._train_mask, order, batch_size, drop_last)

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        """Yield the held-out rows in their stored order (evaluation needs no shuffling)."""
        _check_batch_size(batch_size)
        order = np.arange(self.num_eval_rows)
        yield from _iter_batches(self._eval_ids, self._eval_mask, order, batch_size, False)


def tokenize_records(records: Sequence[Record], tokenizer: TextTokenizer) -> list[list[int]]:
    """Frame each record as BOS + tokens + EOS; a record the tokenizer fails on is skipped and logged.

    Whatever one record makes the tokenizer raise (TypeError for text Rust cannot take, ValueError, a
    panic of the Rust extension), it costs that record only. NoLocalDataError if no record is left.
    """
    docs = []
    failed = 0
    for record in records:
        try:
            ids = tokenizer.encode(record.text)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - pyo3's PanicException is a BaseException
            failed += 1
            logger.warning(
                "skipping record %s: tokenizer failed (%s)", record.origin or "?", type(exc).__name__
            )
            continue
        docs.append([tokenizer.bos_id, *ids, tokenizer.eos_id])
    if failed:
        logger.warning("skipped %d record(s) the tokenizer could not encode", failed)
    if not docs:
        raise NoLocalDataError(f"the tokenizer failed on every one of {len(records)} record(s)")
    return docs


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")


def _iter_batches(
    ids: np.ndarray, mask: np.ndarray, order: np.ndarray, batch_size: int, drop_last: bool
) -> Iterator[Batch]:
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        if drop_last and len(index) < batch_size:
            return
        yield _make_batch(ids[index], mask[index])
