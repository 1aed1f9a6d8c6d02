"""Validation helpers behind the wire types (fl_protocol.wire.wire_types) and the schema's key check.

Each returns the normalised value or raises ConfigError naming the field. `decode_message` turns these into
an opaque DecodeError when the values came off the wire.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from fl_protocol.errors import ConfigError
from fl_protocol.topics import is_valid_id

MAX_UINT63 = 2**63 - 1
MAX_TEXT_CHARS = 1024


def exact_keys(what: str, fields: Mapping[str, object], names: set[str] | frozenset[str]) -> None:
    """Require exactly the keys `names` (unknown keys are an error, not ignored)."""
    if not isinstance(fields, Mapping) or set(fields) != set(names):
        raise ConfigError(f"{what}: field names differ from the format")


def check_int(name: str, value: object, lo: int = 0, hi: int = MAX_UINT63) -> int:
    """An int (not bool) in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise ConfigError(f"{name} must be an int in [{lo}, {hi}]")
    return int(value)


def check_float(
    name: str, value: object, *, lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False
) -> float:
    """A finite number in [lo, hi] (or (lo, hi] with lo_open), returned as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} must be a number")
    try:
        result = float(value)
    except OverflowError:  # an int beyond the float range (e.g. 2**1100 off the wire)
        raise ConfigError(f"{name} must be finite") from None
    if not math.isfinite(result) or result > hi or result < lo or (lo_open and result == lo):
        raise ConfigError(f"{name} must be finite and in {'(' if lo_open else '['}{lo}, {hi}]")
    return result


def check_bool(name: str, value: object) -> bool:
    """A real bool (not an int)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be a bool")
    return bool(value)


def check_text(name: str, value: object, max_chars: int = MAX_TEXT_CHARS) -> str:
    """A str of at most `max_chars` characters (free text such as a reason)."""
    if not isinstance(value, str) or len(value) > max_chars:
        raise ConfigError(f"{name} must be a str of at most {max_chars} chars")
    return value


def check_id(name: str, value: object) -> str:
    """A node/fleet/tier identifier: [A-Za-z0-9_.-], 1..64 chars."""
    if not is_valid_id(value):
        raise ConfigError(f"{name} must match [A-Za-z0-9_.-]{{1,64}}")
    return value  # type: ignore[return-value]


def check_bytes(name: str, value: object, length: int | None = None, max_bytes: int | None = None) -> bytes:
    """bytes of exactly `length` (if given) and at most `max_bytes` (if given)."""
    if not isinstance(value, (bytes, bytearray)):
        raise ConfigError(f"{name} must be bytes")
    if (length is not None and len(value) != length) or (max_bytes is not None and len(value) > max_bytes):
        raise ConfigError(f"{name} has the wrong length")
    return bytes(value)


def check_vector(name: str, value: object, dtype: type) -> np.ndarray:
    """A finite 1-D array of `dtype`, returned as a read-only copy."""
    if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype != np.dtype(dtype):
        raise ConfigError(f"{name} must be a 1-D {np.dtype(dtype).name} array")
    if not np.all(np.isfinite(value)):
        raise ConfigError(f"{name} must be finite")
    result = value.copy()
    result.flags.writeable = False
    return result


def check_mapping(name: str, value: object) -> Mapping[str, object]:
    """A mapping with str keys (a nested settings block)."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{name} must be a mapping with str keys")
    return value
