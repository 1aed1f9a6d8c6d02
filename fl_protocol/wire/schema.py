"""Declarative wire schema: a message declares each field once; codec, checks, budget and docs follow.

A message (or a settings block inside one) is a subclass of `Message` (or `Record`) whose fields are
declared with `wire(<wire type>, ...)` (fl_protocol.wire.wire_types). The subclass becomes a frozen
dataclass, and from that one declaration come:

- `to_fields()`: the body mapping for fl_protocol.wire.fields (each field's `to_wire`);
- `from_fields(values)`: exactly the declared keys (an unknown or missing key is an error; fields declared
  `optional` may be absent all together: a body from an older sender, their defaults apply), each value
  through its type's `from_wire` and `check`;
- the checks: `checked="init"` runs every field's `check` (normalising the value) and then `validate()`
  when an instance is built, so a bad value is a ConfigError naming the field, wherever it came from;
  `checked="decode"` leaves building unchecked (the SecAgg+ stage messages, built by the protocol state
  machines) and runs the same checks in `from_fields`, where every failure is the opaque DecodeError;
- `FIELD_LIMITS`: the decoding budget (fl_protocol.wire.fields.FieldLimits), summed from the field types'
  worst cases: values, depth and arrays exactly; body bytes as declared (`max_bytes`, default the frame
  limit);
- equality: dataclass equality, with arrays compared by value (such messages are unhashable);
- the field tables of docs/wire-format.md (fl_protocol.wire.schema_docs).

`decode_message` (fl_protocol.wire.envelope) turns any failure of `from_fields` into the opaque
DecodeError, so a peer never learns which rule its frame broke.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self, TypeVar, dataclass_transform

import numpy as np

from fl_protocol.errors import ConfigError, DecodeError
from fl_protocol.message_types import MessageType
from fl_protocol.wire.checks import exact_keys
from fl_protocol.wire.fields import DEFAULT_MAX_BYTES, FieldLimits, FieldValue
from fl_protocol.wire.wire_types import Vector, WireType

logger = logging.getLogger(__name__)

Checked = Literal["init", "decode"]
_SPEC_KEY = "fl_protocol.wire.schema"
R = TypeVar("R", bound="Record")


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One declared field: attribute name, wire type, whether the wire may omit it, and its meaning."""

    name: str
    kind: WireType
    optional: bool
    doc: str
    default: Any


def wire(
    kind: WireType,
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
    optional: bool = False,
    doc: str = "",
    repr: bool = True,  # the dataclasses.field keyword
) -> Any:
    """Declare a field of a `Record`: its wire type, optional default, and a short meaning for the docs.

    optional: the field was added to the format later; a body may omit the optional fields all together
    and they then take their defaults (so an optional field needs a default). TypeError otherwise.
    """
    if optional and default is dataclasses.MISSING and default_factory is dataclasses.MISSING:
        raise TypeError("an optional wire field needs a default")
    spec = {_SPEC_KEY: (kind, optional, doc)}
    return dataclasses.field(default=default, default_factory=default_factory, repr=repr, metadata=spec)


def _label(cls: type) -> str:
    """'RoundTask' -> 'round task': how errors name a body of this class."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", cls.__name__).lower()


class Schema:
    """The declared fields of one class and everything derived from them (see the module docstring)."""

    def __init__(self, cls: type, *, checked: Checked, max_bytes: int) -> None:
        if checked not in ("init", "decode"):
            raise ValueError(f"checked must be 'init' or 'decode', not {checked!r}")
        self.label, self.checked = _label(cls), checked
        self.fields = tuple(_spec(f, cls) for f in dataclasses.fields(cls))
        keys = [key for spec in self.fields for key in spec.kind.keys(spec.name)]
        optional = {key for spec in self.fields if spec.optional for key in spec.kind.keys(spec.name)}
        if len(set(keys)) != len(keys):
            raise TypeError(f"{cls.__name__}: two fields share a wire key")
        self.keys, self.required_keys = frozenset(keys), frozenset(keys) - optional
        self.items = 1 + sum(spec.kind.items for spec in self.fields)
        self.depth = max((spec.kind.depth for spec in self.fields), default=0)
        self.arrays = sum(spec.kind.arrays for spec in self.fields)
        self.limits = FieldLimits(
            max_bytes=max_bytes, max_items=self.items, max_depth=self.depth, max_arrays=self.arrays
        )

    def check(self, record: Record) -> None:
        """Check and normalise every field of `record` in place, then its cross-field rules (ConfigError)."""
        for spec in self.fields:
            value = getattr(record, spec.name)
            checked = spec.kind.check(spec.name, value)
            if checked is not value:
                object.__setattr__(record, spec.name, checked)
        record.validate()

    def encode(self, record: Record) -> dict[str, FieldValue]:
        """The field mapping of `record` for fl_protocol.wire.fields."""
        out: dict[str, FieldValue] = {}
        for spec in self.fields:
            spec.kind.encode_into(out, spec.name, getattr(record, spec.name), record)
        return out

    def decode(self, cls: type[R], values: Mapping[str, Any]) -> R:
        """Build `cls` from a decoded field mapping; ConfigError ("init") or DecodeError ("decode")."""
        try:
            return self._decode(cls, values)
        except ConfigError as exc:
            if self.checked == "init":
                raise
            logger.debug("%s rejected: %s", self.label, exc)
            raise DecodeError() from None

    def _decode(self, cls: type[R], values: Mapping[str, Any]) -> R:
        # An older sender omits every optional field; a body with any of them must have them all.
        older = isinstance(values, Mapping) and not (self.keys - self.required_keys) & set(values)
        exact_keys(self.label, values, self.required_keys if older else self.keys)
        decoded: dict[str, Any] = {}
        for spec in self.fields:
            if older and spec.optional:
                continue
            value = spec.kind.decode_from(values, spec.name, decoded)
            decoded[spec.name] = spec.kind.check(spec.name, value) if self.checked == "decode" else value
        record = cls(**decoded)
        if self.checked == "decode":
            record.validate()
        return record


def _spec(field: dataclasses.Field[Any], cls: type) -> FieldSpec:
    declared = field.metadata.get(_SPEC_KEY)
    if declared is None:
        raise TypeError(f"{cls.__name__}.{field.name} is not declared with wire(...)")
    kind, optional, doc = declared
    default = field.default
    if field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    return FieldSpec(field.name, kind, optional, doc, default)


@dataclass_transform(frozen_default=True, field_specifiers=(wire,))
class Record:
    """A frozen dataclass declared field by field with `wire(...)`: a settings block, or (as `Message`) a
    wire message. Class keywords: checked ("init" or "decode", see the module docstring), max_bytes (body
    budget in bytes), eq (False keeps identity equality), kw_only (fields passed by keyword only, as the
    settings blocks that carry privacy values are) and base (an abstract base, left undeclared)."""

    SCHEMA: ClassVar[Schema]
    FIELD_LIMITS: ClassVar[FieldLimits]

    def __init_subclass__(
        cls,
        *,
        checked: Checked = "init",
        max_bytes: int = DEFAULT_MAX_BYTES,
        eq: bool = True,
        kw_only: bool = False,
        base: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if base:  # an abstract base such as Message: no fields, not a dataclass itself
            return
        dataclasses.dataclass(frozen=True, eq=eq, kw_only=kw_only)(cls)
        cls.SCHEMA = Schema(cls, checked=checked, max_bytes=max_bytes)
        cls.FIELD_LIMITS = cls.SCHEMA.limits
        if eq and cls.SCHEMA.arrays:
            cls.__eq__ = _equal_with_arrays  # type: ignore[method-assign,assignment]
            cls.__hash__ = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if type(self).SCHEMA.checked == "init":
            type(self).SCHEMA.check(self)

    def validate(self) -> None:
        """Rules across fields, run after every field passed its own check; ConfigError when broken.

        A subclass that overrides this documents its rules in the docstring: docs/wire-format.md prints it.
        """

    def to_fields(self) -> dict[str, FieldValue]:
        """The field mapping for the wire (fl_protocol.wire.fields); `from_fields` is its exact inverse."""
        return type(self).SCHEMA.encode(self)

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> Self:
        """Rebuild from a decoded field mapping: exactly the declared keys, every value checked.

        Raises ConfigError naming the rule (classes checked on init) or the opaque DecodeError (classes
        checked on decode).
        """
        return cls.SCHEMA.decode(cls, values)  # type: ignore[no-any-return]


class Message(Record, base=True):
    """A `Record` that travels as a frame body of its own: class keyword message_type (MessageType)."""

    MESSAGE_TYPE: ClassVar[MessageType]

    def __init_subclass__(cls, *, message_type: MessageType, **kwargs: Any) -> None:
        cls.MESSAGE_TYPE = MessageType(message_type)
        super().__init_subclass__(**kwargs)


def _equal_with_arrays(self: Record, other: object) -> bool:
    """Field-wise equality with ndarray fields compared by value (same dtype-independent contents)."""
    if other.__class__ is not self.__class__:
        return NotImplemented
    for spec in type(self).SCHEMA.fields:
        mine, theirs = getattr(self, spec.name), getattr(other, spec.name)
        if isinstance(spec.kind, Vector):
            if not np.array_equal(mine, theirs):
                return False
        elif mine != theirs:
            return False
    return True


def declared_fields(cls: type) -> tuple[FieldSpec, ...]:
    """The declared fields of a schema class, in declaration order (TypeError for another class)."""
    schema = getattr(cls, "SCHEMA", None)
    if not isinstance(schema, Schema):
        raise TypeError(f"{cls.__name__} is not declared with fl_protocol.wire.schema")
    return schema.fields
