"""A tier's records as training rows: tokenise, pack, split off held-out eval rows, batch (numpy only).

`LocalDataset` turns the records of one round's tier into fixed-length rows: each document becomes
BOS + tokens + EOS, documents are concatenated and cut into rows of `seq_len`; the last partial row is
padded (attention_mask 0, labels -100). Labels equal input_ids (the model shifts by one itself).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from edge_runtime.data.records import Record
from edge_runtime.errors import ConfigError, NoLocalDataError
from edge_runtime.text_tokenizer import TextTokenizer

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


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
