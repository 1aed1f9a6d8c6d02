"""Retained messages that need chunks: one retained sub-topic per chunk, and what an old version left behind.

The broker keeps one retained message per topic, so chunks of a retained message on its own topic would
leave only the last chunk for a subscriber that arrives later. A retained task or model message larger than
the packet limit is therefore published as chunk `i` on `{topic}/chunk/{i}` (fl_protocol.topics), each
retained. Chunks carry the SHA-256 of the whole message as its id, so chunks of two versions never combine.

What a new version does not overwrite is cleared with a retained empty payload, in an order that never
leaves a late subscriber a complete *old* version next to the new one:

    new version            old version (this publisher's record)   packets, in order
    chunked (M chunks)     chunked (N chunks)                      chunk 0..M-1, then clear chunk M..N-1
    chunked (M chunks)     none or unknown                         clear {topic}, then chunk 0..M-1
    whole (or a clear)     chunked (N chunks)                      clear chunk 0..N-1, then {topic}
    whole (or a clear)     none                                    {topic}

A chunked old version stops being complete as soon as its chunk 0 is overwritten or cleared; clearing the
rest only frees the broker's storage. The record (`RetainedChunkLedger`) says how many chunk topics of each
topic this publisher may have filled. It is written ahead (the larger of the old and new count) before the
packets are handed to the MQTT client, and set to the new count afterwards; with a file it survives a
restart, so a cloud that clears an interrupted round's chunked task after a crash clears its chunk topics too.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from fl_protocol.atomic_file import PUBLIC_MODE, write_atomic
from fl_protocol.topics import retained_chunk_topic

logger = logging.getLogger(__name__)

Packet = tuple[str, bytes]  # (topic, payload)

_FORMAT = 1


class RetainedChunkLedger:
    """How many retained chunk topics of each topic this publisher may have filled; thread-safe.

    With `path` the record is a small JSON file (`{"format": 1, "chunks": {topic: count}}`), replaced
    atomically on every change; without it the record lives as long as the process. A file that cannot be
    read is logged and treated as empty (the old chunk topics are then cleared only when overwritten).
    """

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._counts: dict[str, int] = self._load(path) if path is not None else {}

    def count(self, topic: str) -> int:
        """Chunk topics of `topic` that may hold a retained chunk (0: none known)."""
        with self._lock:
            return self._counts.get(topic, 0)

    def set(self, topic: str, count: int) -> None:
        """Record that chunk topics 0..count-1 of `topic` may hold retained chunks (0 forgets the topic)."""
        with self._lock:
            if self._counts.get(topic, 0) == count:
                return
            if count > 0:
                self._counts[topic] = count
            else:
                self._counts.pop(topic, None)
            if self._path is not None:
                data = {"format": _FORMAT, "chunks": dict(sorted(self._counts.items()))}
                write_atomic(self._path, json.dumps(data).encode(), mode=PUBLIC_MODE)

    @staticmethod
    def _load(path: Path) -> dict[str, int]:
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("retained chunk record %s unreadable (%s): starting empty", path, exc)
            return {}
        chunks = data.get("chunks") if isinstance(data, dict) and data.get("format") == _FORMAT else None
        if not isinstance(chunks, dict) or not all(
            isinstance(t, str) and type(n) is int and n > 0 for t, n in chunks.items()
        ):
            logger.warning("retained chunk record %s is not in format %d: starting empty", path, _FORMAT)
            return {}
        return dict(chunks)


def replace_retained(
    ledger: RetainedChunkLedger, topic: str, chunks: list[bytes] | None, payload: bytes
) -> list[Packet]:
    """The packets (all retained) that replace the retained message of `topic`, in publishing order.

    `chunks`: the signed chunk frames of `payload` when it needs chunks, else None (`payload` goes whole;
    an empty payload clears the topic). Writes the ledger ahead; call `ledger.set(topic, len(chunks or []))`
    once the packets were handed to the MQTT client.
    """
    old = ledger.count(topic)
    new = len(chunks) if chunks is not None else 0
    ledger.set(topic, max(old, new))
    clears = [(retained_chunk_topic(topic, i), b"") for i in range(new, old)]
    if chunks is None:
        return [*clears, (topic, payload)]
    frames = [(retained_chunk_topic(topic, i), frame) for i, frame in enumerate(chunks)]
    return [*frames, *clears] if old else [(topic, b""), *frames]
