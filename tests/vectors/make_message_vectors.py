"""Regenerate tests/vectors/message_bodies.json: the encoded body of every sample message.

Run from the repository root: `PYTHONPATH=. python tests/vectors/make_message_vectors.py`. Only rerun on a
deliberate format change: the test asserts the checked-in bytes, not this script's output. The file was
first written by the hand-written `to_fields` methods that the declarative schema (fl_protocol/wire/schema.py)
replaced, so it pins the schema's encodings to the bytes of the format as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

from fl_protocol.wire.fields import encode_fields
from tests import wire_samples as ws

OUT = Path(__file__).with_name("message_bodies.json")


def bodies() -> list[dict[str, str]]:
    """One entry per sample of tests/wire_samples.py: its class and its encoded body."""
    return [
        {
            "class": f"{type(m).__module__}.{type(m).__qualname__}",
            "body_hex": encode_fields(m.to_fields()).hex(),
        }
        for m in ws.samples()
    ]


def main() -> None:
    """Write the vectors file."""
    document = {
        "description": "fedlora message bodies (field codec) of tests/wire_samples.py; docs/wire-format.md",
        "bodies": bodies(),
    }
    OUT.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
