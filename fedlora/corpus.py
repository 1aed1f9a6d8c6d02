"""Demo corpus: docstrings of the Python standard library, split into non-IID shards with privacy tiers.

Why this text: it exists on every machine that runs fedlora, needs no download, is English prose about
distinct topics, and is deterministic for a given Python version. Modules are grouped into families
(text, numbers, files, networking, ...); `shard_corpus` gives each shard one dominant family plus a thin
slice of everything else, which is the label/feature skew federated learning has to cope with.

Each record carries a sensitivity tier ("public", "personal", "health") assigned from a SHA-256 hash of
its source and name with fixed proportions (60/30/10), so every shard holds every tier in roughly those
proportions and the privacy-tier machinery can be exercised on the demo. See docs/data.md.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
import platform
import random
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from fl_protocol.errors import ConfigError, DecodeError

logger = logging.getLogger(__name__)

CORPUS_VERSION = 1
TIERS: tuple[tuple[str, float], ...] = (("public", 0.6), ("personal", 0.3), ("health", 0.1))
DEFAULT_MIN_CHARS = 120
SHARD_FILE = "data.jsonl"

# Fixed module list per family. Only modules without import side effects and present in CPython
# 3.10-3.13 (no antigravity, this, idlelib, tkinter, turtle, readline, curses, or modules removed in 3.13).
# A module missing on a given build (e.g. no sqlite3) is skipped.
_FAMILY_TABLE = """
text: codecs difflib fnmatch gettext locale pprint re reprlib shlex string stringprep textwrap
    unicodedata
numbers: bisect calendar cmath datetime decimal fractions heapq math numbers random statistics time
    zoneinfo
files: bz2 filecmp fileinput glob gzip io lzma os os.path pathlib shutil stat tarfile tempfile zipfile zlib
networking: ftplib http.client http.cookiejar http.cookies http.server imaplib ipaddress poplib selectors
    smtplib socket socketserver ssl urllib.parse urllib.request urllib.robotparser xmlrpc.client
    xmlrpc.server
concurrency: asyncio.events asyncio.locks asyncio.queues asyncio.streams asyncio.subprocess asyncio.tasks
    concurrent.futures contextvars multiprocessing.managers multiprocessing.pool multiprocessing.queues
    queue sched signal subprocess threading
formats: base64 binascii configparser csv email.message email.parser email.policy email.utils html
    html.parser json mailbox mimetypes pickle plistlib quopri shelve sqlite3 struct xml.dom.minidom
    xml.etree.ElementTree xml.sax
devtools: ast cProfile dis doctest inspect pdb pstats symtable timeit tokenize trace traceback
    unittest.case unittest.mock warnings
language: abc array collections contextlib copy dataclasses enum functools itertools operator types
    typing weakref
"""


def _parse_family_table(table: str) -> dict[str, tuple[str, ...]]:
    families: dict[str, list[str]] = {}
    family = ""
    for line in table.strip().splitlines():
        if not line.startswith(" "):
            family, line = line.split(":", 1)
            families[family] = []
        families[family].extend(line.split())
    return {name: tuple(modules) for name, modules in families.items()}


FAMILIES: dict[str, tuple[str, ...]] = _parse_family_table(_FAMILY_TABLE)


@dataclass(frozen=True)
class CorpusRecord:
    """One docstring: `text`, its privacy `tier`, `source` module, module `family` and qualified `name`."""

    text: str
    tier: str
    source: str
    family: str
    name: str

    def to_json(self) -> str:
        """One JSONL line (keys sorted, non-ASCII kept) in the device data-directory format."""
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)


def tier_for(key: str) -> str:
    """Deterministic tier for a record key: SHA-256 of the key mapped onto the TIERS proportions."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    for tier, share in TIERS:
        cumulative += share
        if point < cumulative:
            return tier
    return TIERS[-1][0]


def build_corpus(*, min_chars: int = DEFAULT_MIN_CHARS, max_records: int | None = None) -> list[CorpusRecord]:
    """Collect module, class, function and method docstrings of the FAMILIES modules, in a fixed order.

    Docstrings shorter than `min_chars` are dropped; an exact repeat of an earlier text is dropped too
    (re-exports, inherited boilerplate). Same Python version -> identical output.
    """
    if min_chars < 1:
        raise ConfigError(f"min_chars must be >= 1, got {min_chars}")
    records: list[CorpusRecord] = []
    seen: set[str] = set()
    for family, module_names in FAMILIES.items():
        for module_name in module_names:
            module = _import_quietly(module_name)
            if module is None:
                continue
            for name, doc in _docstrings(module):
                if len(doc) < min_chars or doc in seen:
                    continue
                seen.add(doc)
                key = f"{module_name}:{name}"
                records.append(CorpusRecord(f"{name}\n\n{doc}", tier_for(key), module_name, family, name))
                if max_records is not None and len(records) >= max_records:
                    return records
    logger.info("built corpus: %d records from %d families", len(records), len(FAMILIES))
    return records


def _import_quietly(module_name: str) -> ModuleType | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(module_name)
    except Exception as exc:  # any failure means "not on this build": skip, never crash
        logger.info("corpus: skipping module %s (%s)", module_name, exc)
        return None


def _docstrings(module: ModuleType) -> Iterator[tuple[str, str]]:
    """(qualified name, cleaned docstring) for the module and its own public classes and functions."""
    module_name = module.__name__
    yield from _own_doc(module_name, module)
    for attr in sorted(_public_names(module)):
        obj = getattr(module, attr, None)
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        if getattr(obj, "__module__", None) not in _owners(module_name):
            continue
        qualname = f"{module_name}.{attr}"
        yield from _own_doc(qualname, obj)
        if inspect.isclass(obj):
            for member_name, member in sorted(vars(obj).items()):
                if member_name.startswith("_") and member_name != "__init__":
                    continue
                yield from _own_doc(f"{qualname}.{member_name}", _unwrap(member))


def _public_names(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    return [n for n in names if isinstance(n, str)]


def _owners(module_name: str) -> set[str]:
    """Module names that count as "defined here": the module, its C accelerator (_json), posix for os."""
    last = module_name.rsplit(".", 1)[-1]
    owners = {module_name, f"_{last}", f"_{module_name}"}
    if module_name in ("os", "os.path"):
        owners.update({"posix", "posixpath", "nt", "ntpath", "genericpath"})
    return owners


def _unwrap(member: Any) -> Any:
    if isinstance(member, (staticmethod, classmethod)):
        return member.__func__
    return member


def _own_doc(name: str, obj: Any) -> Iterator[tuple[str, str]]:
    if not (
        inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isroutine(obj) or isinstance(obj, property)
    ):
        return
    doc = obj.__doc__  # not inspect.getdoc: that inherits from base classes and would repeat text
    if isinstance(doc, str) and doc.strip():
        yield name, inspect.cleandoc(doc)


def family_counts(records: Iterable[CorpusRecord]) -> dict[str, int]:
    """Records per family, in FAMILIES order (families with no record omitted)."""
    counts = {family: 0 for family in FAMILIES}
    for record in records:
        counts[record.family] = counts.get(record.family, 0) + 1
    return {family: n for family, n in counts.items() if n}


def held_out_split(
    records: Sequence[CorpusRecord], *, fraction: float, seed: int
) -> tuple[list[CorpusRecord], list[CorpusRecord]]:
    """Split off a held-out set (the cloud's eval set) stratified by family, so it covers every topic.

    Returns (train, held_out), each in corpus order; no record is in both.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"held-out fraction must be in (0, 1), got {fraction}")
    rng = random.Random(seed)
    held: set[int] = set()
    for family in FAMILIES:
        indices = [i for i, r in enumerate(records) if r.family == family]
        rng.shuffle(indices)
        held.update(indices[: round(fraction * len(indices))])
    train = [r for i, r in enumerate(records) if i not in held]
    return train, [r for i, r in enumerate(records) if i in held]


def shard_corpus(
    records: Sequence[CorpusRecord], *, num_shards: int, seed: int, dominant_fraction: float = 0.8
) -> list[list[CorpusRecord]]:
    """Deal records to `num_shards` non-IID shards: each shard is dominated by one or two families.

    Families are permuted by `seed`; shard s gets primary family s mod F. A family's records go
    `dominant_fraction` to the shards it is primary for and the rest round-robin to all other shards.
    When there are fewer shards than families, each leftover family goes whole to one shard as its
    secondary family. Every record lands in exactly one shard.
    """
    if num_shards < 1:
        raise ConfigError(f"num_shards must be >= 1, got {num_shards}")
    if not 0.0 <= dominant_fraction <= 1.0:
        raise ConfigError(f"dominant_fraction must be in [0, 1], got {dominant_fraction}")
    rng = random.Random(seed)
    families = [f for f in FAMILIES if any(r.family == f for r in records)]
    rng.shuffle(families)
    shards: list[list[CorpusRecord]] = [[] for _ in range(num_shards)]
    for index, family in enumerate(families):
        members = [r for r in records if r.family == family]
        rng.shuffle(members)
        owners = list(range(index, num_shards, len(families)))
        if not owners:  # fewer shards than families: a leftover family is a secondary one, whole
            shards[index % num_shards].extend(members)
            continue
        others = [s for s in range(num_shards) if s not in owners] or owners
        num_dominant = round(dominant_fraction * len(members)) if others != owners else len(members)
        for i, record in enumerate(members[:num_dominant]):
            shards[owners[i % len(owners)]].append(record)
        for i, record in enumerate(members[num_dominant:]):
            shards[others[(i + index) % len(others)]].append(record)
    for shard in shards:
        rng.shuffle(shard)
    return shards


def write_jsonl(records: Iterable[CorpusRecord], path: Path) -> Path:
    """Write records as JSONL (UTF-8, one object per line), atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(record.to_json() + "\n")
    tmp.replace(path)
    return path


def read_jsonl(path: Path) -> list[CorpusRecord]:
    """Read a JSONL file written by `write_jsonl` (e.g. a cached corpus). Raises DecodeError if malformed."""
    records = []
    # Split on "\n" only: str.splitlines() would also split at U+2028, U+0085 and friends, which
    # json.dumps(ensure_ascii=False) leaves raw inside strings.
    for line_no, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            records.append(
                CorpusRecord(**{k: str(obj[k]) for k in ("text", "tier", "source", "family", "name")})
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DecodeError(f"{path}:{line_no}: not a corpus record") from exc
    return records


def write_shards(shards: Sequence[Sequence[CorpusRecord]], out_dir: Path) -> list[Path]:
    """Write shard i to `out_dir/device-{i:03d}/data.jsonl` (a device data directory); return the paths."""
    return [
        write_jsonl(shard, Path(out_dir) / f"device-{i:03d}" / SHARD_FILE) for i, shard in enumerate(shards)
    ]


def corpus_fingerprint(records: Iterable[CorpusRecord]) -> str:
    """SHA-256 over the records' JSONL lines: equal fingerprints mean identical corpora."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(record.to_json().encode("utf-8") + b"\n")
    return digest.hexdigest()


def cache_key(*, min_chars: int = DEFAULT_MIN_CHARS) -> str:
    """A file-name-safe key for caching the built corpus: changes with the Python version and settings."""
    return f"stdlib-docs-v{CORPUS_VERSION}-py{platform.python_version()}-min{min_chars}"
