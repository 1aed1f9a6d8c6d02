"""A device's local training data: read the data directory into records with their sensitivity tier.

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
"""

from __future__ import annotations

import fnmatch
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.errors import ConfigError, NoLocalDataError

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
