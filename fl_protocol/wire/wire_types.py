"""The wire types a message field can declare (fl_protocol.wire.schema): one value's rule, codec and cost.

A wire type knows three things about a field:
- its rule: `check(name, value)` returns the normalised value (ints as int, floats as float, sequences as
  tuples, mappings as key-sorted dicts, arrays as read-only copies) or raises ConfigError naming the field;
- its wire form: `to_wire` gives the fl_protocol.wire.fields value, `from_wire` turns a decoded value back
  into the attribute's type (a list into a tuple, a mapping into a settings block) without judging it;
- its worst-case decoding cost in the units of `FieldLimits`: `items` (decoded values, this one included),
  `depth` (nesting levels, a scalar is 1) and `arrays`; message budgets are summed from these.
`describe()` is the rule in words for the generated tables of docs/wire-format.md.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from fl_protocol.errors import ConfigError
from fl_protocol.wire.checks import (
    MAX_TEXT_CHARS,
    MAX_UINT63,
    check_bytes,
    check_float,
    check_id,
    check_int,
    check_mapping,
    check_text,
    check_vector,
)
from fl_protocol.wire.fields import FieldValue

MIN_INT64, MAX_INT64 = -(2**63), 2**63 - 1


def number_text(value: int) -> str:
    """An int for the docs: powers of two (minus one) from 2^16 up as `2^k`, others with thousands commas."""
    if value >= 2**16 and value & (value - 1) == 0:
        return f"2^{value.bit_length() - 1}"
    if value >= 2**16 - 1 and (value + 1) & value == 0:
        return f"2^{value.bit_length()} − 1"
    if value < 0:
        return "−" + number_text(-value)
    return f"{value:,}"


def size_text(size: int) -> str:
    """A byte count for the docs: whole KiB or MiB where exact."""
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size:,} B"


class WireType(ABC):
    """Base of every wire type: a scalar by default (one value, depth 1, no array, no conversion)."""

    items = 1
    depth = 1
    arrays = 0

    @abstractmethod
    def check(self, name: str, value: Any) -> Any:
        """The normalised value, or ConfigError naming `name`."""

    def to_wire(self, value: Any) -> FieldValue:
        """The value as fl_protocol.wire.fields encodes it."""
        return value  # type: ignore[no-any-return]

    def from_wire(self, name: str, raw: Any) -> Any:
        """A decoded wire value in the attribute's form (no judgement: `check` follows)."""
        return raw

    @abstractmethod
    def describe(self) -> str:
        """The rule in words (docs/wire-format.md tables)."""

    # A field is one key on the wire unless its type says otherwise (the bit-packed masked values are
    # two: `count` and `packed`). The schema calls these three hooks and `check`; the docs call `rows`.

    def keys(self, name: str) -> tuple[str, ...]:
        """The wire keys the field `name` occupies."""
        return (name,)

    def encode_into(self, out: dict[str, FieldValue], name: str, value: Any, owner: object) -> None:
        """Write the field's wire entries into `out` (`owner`: the whole message, for cross-field forms)."""
        out[name] = self.to_wire(value)

    def decode_from(self, values: Mapping[str, Any], name: str, decoded: Mapping[str, Any]) -> Any:
        """The attribute value from the body `values` (`decoded`: the fields decoded so far)."""
        return self.from_wire(name, values[name])

    def rows(self, name: str, doc: str) -> list[tuple[str, str, str]]:
        """(wire key, rule in words, meaning) per key for the docs; `doc` is the field's meaning."""
        return [(name, self.describe(), doc)]


class Int(WireType):
    """An int (not a bool; numpy ints accepted and returned as int) in [lo, hi]; hi None: no upper bound
    (the field codec still caps an int at 1024 bytes)."""

    def __init__(self, lo: int = 0, hi: int | None = MAX_UINT63) -> None:
        self.lo, self.hi = lo, hi

    def check(self, name: str, value: Any) -> int:
        if self.hi is not None:
            return check_int(name, value, lo=self.lo, hi=self.hi)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < self.lo:
            raise ConfigError(f"{name} must be an int >= {self.lo}")
        return int(value)

    def describe(self) -> str:
        if self.hi is None:
            return f"int ≥ {number_text(self.lo)}"
        return f"int in [{number_text(self.lo)}, {number_text(self.hi)}]"


class Float(WireType):
    """A finite number in [lo, hi], returned as float; lo_open / hi_open exclude the bound itself."""

    def __init__(
        self,
        lo: float = -math.inf,
        hi: float = math.inf,
        *,
        lo_open: bool = False,
        hi_open: bool = False,
    ) -> None:
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open

    def check(self, name: str, value: Any) -> float:
        result = check_float(name, value, lo=self.lo, hi=self.hi, lo_open=self.lo_open)
        if self.hi_open and result >= self.hi:
            raise ConfigError(f"{name} must be < {self.hi:g}")
        return result

    def describe(self) -> str:
        if self.lo == -math.inf and self.hi == math.inf:
            return "finite float"
        low = "(−∞" if self.lo == -math.inf else f"{'(' if self.lo_open else '['}{self.lo:g}"
        high = "∞)" if self.hi == math.inf else f"{self.hi:g}{')' if self.hi_open else ']'}"
        return f"finite float in {low}, {high}"


class Text(WireType):
    """A str of min_chars..max_chars characters (free text: a reason, a topic, a peer name)."""

    def __init__(self, min_chars: int = 0, max_chars: int = MAX_TEXT_CHARS) -> None:
        self.min_chars, self.max_chars = min_chars, max_chars

    def check(self, name: str, value: Any) -> str:
        text = check_text(name, value, self.max_chars)
        if len(text) < self.min_chars:
            raise ConfigError(f"{name} must have at least {self.min_chars} chars")
        return text

    def describe(self) -> str:
        if self.min_chars:
            return f"str of {self.min_chars}..{number_text(self.max_chars)} chars"
        return f"str ≤ {number_text(self.max_chars)} chars"


class Id(WireType):
    """A node, fleet, tier or stage id: [A-Za-z0-9_.-], 1..64 chars (fl_protocol.topics.is_valid_id)."""

    def check(self, name: str, value: Any) -> str:
        return check_id(name, value)

    def describe(self) -> str:
        return "id"


class Choice(WireType):
    """One of a fixed set of str values."""

    def __init__(self, options: Iterable[str]) -> None:
        self.options = tuple(sorted(options))

    def check(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or value not in self.options:
            raise ConfigError(f"{name} must be one of {', '.join(self.options)}")
        return value

    def describe(self) -> str:
        return "one of " + ", ".join(f"`{option}`" for option in self.options)


class Bytes(WireType):
    """bytes of exactly `length`, or of min_bytes..max_bytes (bytearray accepted, returned as bytes)."""

    def __init__(
        self, length: int | None = None, *, min_bytes: int = 0, max_bytes: int | None = None
    ) -> None:
        self.length, self.min_bytes, self.max_bytes = length, min_bytes, max_bytes

    def check(self, name: str, value: Any) -> bytes:
        result = check_bytes(name, value, length=self.length, max_bytes=self.max_bytes)
        if len(result) < self.min_bytes:
            raise ConfigError(f"{name} has the wrong length")
        return result

    def describe(self) -> str:
        if self.length is not None:
            return f"bytes ({self.length})"
        bounds = [f"≥ {self.min_bytes}"] if self.min_bytes else []
        bounds += [f"≤ {size_text(self.max_bytes)}"] if self.max_bytes is not None else []
        return ", ".join(["bytes", *bounds])


class Vector(WireType):
    """A finite 1-D ndarray of one dtype, stored as a read-only copy."""

    arrays = 1

    def __init__(self, dtype: type) -> None:
        self.dtype = np.dtype(dtype)

    def check(self, name: str, value: Any) -> np.ndarray:
        return check_vector(name, value, self.dtype.type)

    def describe(self) -> str:
        return f"1-D {self.dtype.name} array, finite"


class Seq(WireType):
    """A list (a tuple in the attribute) of at most max_entries items of one wire type.

    order: None, "unique" (no repeats) or "sorted" (strictly increasing, hence unique).
    """

    def __init__(self, item: WireType, max_entries: int, *, order: str | None = None) -> None:
        if order not in (None, "unique", "sorted"):
            raise ValueError(f"unknown order {order!r}")
        self.item, self.max_entries, self.order = item, max_entries, order
        self.items = 1 + max_entries * item.items
        self.depth = 1 + item.depth
        self.arrays = max_entries * item.arrays

    def check(self, name: str, value: Any) -> tuple[Any, ...]:
        if not isinstance(value, (list, tuple)) or len(value) > self.max_entries:
            raise ConfigError(f"{name} must be a sequence of at most {self.max_entries} entries")
        items = tuple(self.item.check(f"{name} entry", item) for item in value)
        if self.order == "sorted" and any(a >= b for a, b in zip(items, items[1:], strict=False)):
            raise ConfigError(f"{name} must be sorted and unique")
        if self.order == "unique" and len(set(items)) != len(items):
            raise ConfigError(f"{name} must be unique")
        return items

    def to_wire(self, value: Any) -> FieldValue:
        return [self.item.to_wire(item) for item in value]

    def from_wire(self, name: str, raw: Any) -> Any:
        if not isinstance(raw, list):
            return raw  # `check` refuses it
        return tuple(self.item.from_wire(name, item) for item in raw)

    def describe(self) -> str:
        order = {None: "", "unique": ", unique", "sorted": ", sorted, unique"}[self.order]
        return f"list of ≤ {number_text(self.max_entries)} × {self.item.describe()}{order}"


class Map(WireType):
    """A mapping of at most max_entries keys (a wire type on str) to values of one wire type; stored as a
    dict sorted by key (the order the field codec writes)."""

    def __init__(self, key: WireType, value: WireType, max_entries: int) -> None:
        self.key, self.value, self.max_entries = key, value, max_entries
        self.items = 1 + max_entries * value.items
        self.depth = 1 + value.depth
        self.arrays = max_entries * value.arrays

    def check(self, name: str, value: Any) -> dict[str, Any]:
        mapping = check_mapping(name, value)
        if len(mapping) > self.max_entries:
            raise ConfigError(f"{name} has more than {self.max_entries} entries")
        checked = {
            self.key.check(f"{name} key", key): self.value.check(f"{name} {key}", item)
            for key, item in mapping.items()
        }
        return dict(sorted(checked.items()))

    def to_wire(self, value: Any) -> FieldValue:
        return {key: self.value.to_wire(item) for key, item in value.items()}

    def describe(self) -> str:
        return f"map of ≤ {number_text(self.max_entries)}: {self.key.describe()} → {self.value.describe()}"


class Nested(WireType):
    """A settings block or message inside a message: a mapping on the wire, an instance in the attribute.

    `kind` is a schema-declared class (fl_protocol.wire.schema) or another frozen dataclass of scalar fields
    with `to_fields` / `from_fields` (fl_protocol.codec.settings.CodecSettings, which sits below the wire
    package and keeps its own codec).
    """

    def __init__(self, kind: type) -> None:
        self.kind = kind
        schema = getattr(kind, "SCHEMA", None)
        if schema is not None:
            self.items, self.depth, self.arrays = schema.items, 1 + schema.depth, schema.arrays
        else:
            self.items, self.depth = 1 + len(getattr(kind, "__dataclass_fields__")), 2  # noqa: B009

    def check(self, name: str, value: Any) -> Any:
        if not isinstance(value, self.kind):
            raise ConfigError(f"{name} must be a {self.kind.__name__}")
        return value

    def to_wire(self, value: Any) -> FieldValue:
        return value.to_fields()  # type: ignore[no-any-return]

    def from_wire(self, name: str, raw: Any) -> Any:
        return self.kind.from_fields(dict(check_mapping(name, raw)))  # type: ignore[attr-defined]

    def describe(self) -> str:
        return f"`{self.kind.__name__}` mapping"


class DetailValue(WireType):
    """A status detail: an int in [-2^63, 2^63), a float (NaN and ±inf allowed: "unknown") or a str of at
    most 1024 chars. numpy numbers come back as int / float."""

    def check(self, name: str, value: Any) -> int | float | str:
        if isinstance(value, str):
            return check_text(name, value)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return check_int(name, value, lo=MIN_INT64, hi=MAX_INT64)
        if isinstance(value, (float, np.floating)):
            return float(value)
        raise ConfigError(f"{name} must be a number or a short string")

    def describe(self) -> str:
        return f"int in [−2^63, 2^63 − 1], float (NaN, ±inf allowed) or str ≤ {MAX_TEXT_CHARS:,} chars"


def nested_kinds(kind: WireType) -> list[type]:
    """The classes nested in a wire type (a settings block, the members of a list), outermost first."""
    if isinstance(kind, Nested):
        return [kind.kind]
    if isinstance(kind, Seq):
        return nested_kinds(kind.item)
    if isinstance(kind, Map):
        return nested_kinds(kind.value)
    return []
