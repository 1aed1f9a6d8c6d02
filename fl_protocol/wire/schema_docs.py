"""Markdown tables of the wire messages, rendered from their schema declarations (fl_protocol.wire.schema).

docs/wire-format.md and docs/failure-policy.md carry these tables between `<!-- BEGIN generated: NAME -->`
and `<!-- END generated: NAME -->` markers; a test checks the docs hold exactly what the code renders, and
`python -m fl_protocol.message_catalog --write-docs docs` rewrites the blocks.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable

from fl_protocol.wire.schema import FieldSpec, Record, declared_fields
from fl_protocol.wire.wire_types import nested_kinds, number_text, size_text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _paragraph(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    first = inspect.cleandoc(doc or "").split("\n\n")[0]
    return " ".join(line.strip() for line in first.splitlines())


def _meaning(spec: FieldSpec) -> str:
    """The field's meaning; for an optional field also what its absence means."""
    parts = [spec.doc] if spec.doc else []
    if spec.optional:
        parts.append(f"may be absent (older senders): then `{spec.default}`")
    return "; ".join(parts)


def _title(cls: type[Record], parent: str | None) -> str:
    message_type = getattr(cls, "MESSAGE_TYPE", None)
    where = f"`{cls.__module__}`"
    if message_type is not None:
        return f"### `{cls.__name__}`: type {int(message_type)} `{message_type.name}`, {where}"
    return f"### `{cls.__name__}`: inside `{parent}`, {where}"


def budget_text(cls: type[Record]) -> str:
    """The decoding budget of `cls` in words."""
    limits = cls.FIELD_LIMITS
    arrays = "no array" if not limits.max_arrays else f"≤ {limits.max_arrays} array(s)"
    return (
        f"body ≤ {size_text(limits.max_bytes)}, ≤ {number_text(limits.max_items)} values, "
        f"depth {limits.max_depth}, {arrays}"
    )


def class_table(cls: type[Record], parent: str | None = None) -> str:
    """One class: title, summary, field table, cross-field rules, when it is checked, its budget."""
    lines = [
        _title(cls, parent),
        "",
        _paragraph(cls.__doc__),
        "",
        "| field | value | meaning |",
        "|---|---|---|",
    ]
    for spec in declared_fields(cls):
        for key, rule, meaning in spec.kind.rows(spec.name, _meaning(spec)):
            lines.append(f"| `{key}` | {_cell(rule)} | {_cell(meaning)} |")
    lines.append("")
    if "validate" in vars(cls):
        lines.append(f"Across fields: {_paragraph(vars(cls)['validate'].__doc__)}")
    checked = cls.SCHEMA.checked
    if checked == "init":
        lines.append("Checked when built (ConfigError naming the field), so also when decoded.")
    else:
        lines.append("Checked when decoded (any failure is the opaque DecodeError); built unchecked.")
    if getattr(cls, "MESSAGE_TYPE", None) is not None:
        lines.append(f"Budget: {budget_text(cls)}.")
    return "\n".join(lines)


def message_tables(classes: Iterable[type[Record]]) -> str:
    """Every class's table, each followed by the tables of the blocks nested in it (each block once)."""
    seen: set[type] = set()
    sections: list[str] = []

    def add(cls: type[Record], parent: str | None) -> None:
        if cls in seen:
            return
        seen.add(cls)
        sections.append(class_table(cls, parent))
        for spec in declared_fields(cls):
            for kind in nested_kinds(spec.kind):
                if getattr(kind, "MESSAGE_TYPE", None) is None and hasattr(kind, "SCHEMA"):
                    add(kind, f"{cls.__name__}.{spec.name}")

    for cls in classes:
        add(cls, None)
    return "\n\n".join(sections)


def budget_table(classes: Iterable[type[Record]]) -> str:
    """One row per message: its decoding budget (docs/failure-policy.md, "Decoding budgets")."""
    lines = ["| message | type | body bytes | values | depth | arrays |", "|---|---|---|---|---|---|"]
    for cls in classes:
        limits, message_type = cls.FIELD_LIMITS, int(getattr(cls, "MESSAGE_TYPE", -1))
        lines.append(
            f"| `{cls.__name__}` | {message_type} | {size_text(limits.max_bytes)} | "
            f"{number_text(limits.max_items)} | {limits.max_depth} | {limits.max_arrays} |"
        )
    return "\n".join(lines)


def _block_pattern(name: str) -> re.Pattern[str]:
    """Group 1: the BEGIN marker line; 2: the content; 3: the END marker (with the newline before it)."""
    begin, end = f"<!-- BEGIN generated: {re.escape(name)} ", f"<!-- END generated: {re.escape(name)} -->"
    return re.compile(rf"({begin}[^\n]*-->\n)(.*?)(\n{end})", re.DOTALL)


def replace_block(text: str, name: str, content: str) -> str:
    """`text` with the generated block `name` replaced by `content`; ValueError if its markers are missing."""
    pattern = _block_pattern(name)
    if not pattern.search(text):
        raise ValueError(f"no generated block {name!r}")
    return pattern.sub(lambda match: match.group(1) + content + match.group(3), text, count=1)


def generated_block(text: str, name: str) -> str:
    """The content of the generated block `name` in `text`; ValueError if its markers are missing."""
    match = _block_pattern(name).search(text)
    if match is None:
        raise ValueError(f"no generated block {name!r}")
    return match.group(2)
