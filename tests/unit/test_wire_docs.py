"""The field tables in the docs are generated from the schema declarations (fl_protocol/wire/schema_docs.py)
and must match the code; the catalog lists one declared class per message type."""

from __future__ import annotations

from pathlib import Path

import pytest

from fl_protocol.message_catalog import GENERATED_DOCS, MESSAGE_CLASSES, WIRE_MESSAGES
from fl_protocol.message_types import MessageType
from fl_protocol.secagg.messages import MaskedUpdate
from fl_protocol.wire.schema_docs import class_table, generated_block, replace_block
from tests import wire_samples as ws

ROOT = Path(__file__).resolve().parents[2]


def test_the_docs_hold_exactly_the_generated_tables() -> None:
    for name, block, render in GENERATED_DOCS:
        text = (ROOT / "docs" / name).read_text(encoding="utf-8")
        assert generated_block(text, block) == render(), (
            f"docs/{name} is stale: run `python -m fl_protocol.message_catalog --write-docs docs`"
        )


def test_replace_block_swaps_only_the_block_and_refuses_a_missing_one() -> None:
    text = "a\n<!-- BEGIN generated: t (how) -->\nold\n<!-- END generated: t -->\nb\n"
    new = replace_block(text, "t", "new\nlines")
    assert generated_block(new, "t") == "new\nlines"
    assert new == "a\n<!-- BEGIN generated: t (how) -->\nnew\nlines\n<!-- END generated: t -->\nb\n"
    with pytest.raises(ValueError, match="no generated block 'u'"):
        replace_block(text, "u", "x")


def test_the_catalog_has_one_declared_class_per_message_type() -> None:
    assert set(MESSAGE_CLASSES) == set(MessageType)
    assert len(WIRE_MESSAGES) == len(set(WIRE_MESSAGES)) == len(MESSAGE_CLASSES)
    assert {type(m) for m in ws.samples()} == set(WIRE_MESSAGES) - {MESSAGE_CLASSES[MessageType.CHUNK]}


def test_a_field_on_two_wire_keys_is_documented_by_its_keys() -> None:
    table = class_table(MaskedUpdate)
    assert "| `count` |" in table and "| `packed` |" in table and "| `values` |" not in table
