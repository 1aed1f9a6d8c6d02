"""Every wire message class in one place, in the order of docs/wire-format.md, and the generated docs.

The classes live with their concept (fl_protocol.wire.messages, fl_protocol.secagg.messages,
fl_protocol.wire.chunks); this module sits above them all, so it can list them without an upward import.
`python -m fl_protocol.message_catalog --write-docs docs` rewrites the generated tables in
docs/wire-format.md and docs/failure-policy.md from the declarations (a test checks they match).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fl_protocol.message_types import MessageType
from fl_protocol.secagg import messages as secagg
from fl_protocol.wire.chunks import ChunkBody
from fl_protocol.wire.messages import (
    GlobalModel,
    GlobalModelDelta,
    PartialAggregate,
    PlainUpdate,
    RoundTask,
    Status,
)
from fl_protocol.wire.schema import Message
from fl_protocol.wire.schema_docs import budget_table, message_tables, replace_block

WIRE_MESSAGES: tuple[type[Message], ...] = (
    RoundTask,
    GlobalModel,
    GlobalModelDelta,
    PlainUpdate,
    PartialAggregate,
    Status,
    secagg.AdvertiseKeys,
    secagg.Roster,
    secagg.ShareKeys,
    secagg.RoutedShares,
    secagg.MaskedUpdate,
    secagg.Survivors,
    secagg.ConsistencySignature,
    secagg.UnmaskRequest,
    secagg.UnmaskShares,
    secagg.Abort,
    ChunkBody,
)

MESSAGE_CLASSES: dict[MessageType, type[Message]] = {cls.MESSAGE_TYPE: cls for cls in WIRE_MESSAGES}

# (docs file, generated block name, renderer) for every generated table.
GENERATED_DOCS = (
    ("wire-format.md", "message-tables", lambda: message_tables(WIRE_MESSAGES)),
    ("failure-policy.md", "decoding-budgets", lambda: budget_table(WIRE_MESSAGES)),
)


def write_docs(docs_dir: Path) -> list[Path]:
    """Rewrite every generated block under `docs_dir`; returns the files that changed."""
    changed = []
    for name, block, render in GENERATED_DOCS:
        path = docs_dir / name
        text = path.read_text(encoding="utf-8")
        updated = replace_block(text, block, render())
        if updated != text:
            path.write_text(updated, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    """CLI: print the generated tables, or rewrite them in place with --write-docs DOCS_DIR."""
    parser = argparse.ArgumentParser(prog="python -m fl_protocol.message_catalog", description=__doc__)
    parser.add_argument("--write-docs", type=Path, metavar="DOCS_DIR", help="rewrite the generated blocks")
    args = parser.parse_args(argv)
    if args.write_docs is None:
        for _name, block, render in GENERATED_DOCS:
            print(f"<!-- {block} -->\n{render()}\n")
        return 0
    for path in write_docs(args.write_docs):
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
