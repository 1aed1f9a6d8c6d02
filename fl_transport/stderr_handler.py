"""A logging handler that writes to the *current* `sys.stderr`.

`logging.StreamHandler(sys.stderr)` binds the stream object it was created with. When a command's `main`
runs more than once in one process (tests, embedding) and stderr was replaced in between (pytest's capture,
a redirect), that handler writes to a closed stream and every later record prints a
"--- Logging error ---" traceback into the next command's output. This handler looks `sys.stderr` up at
each emit instead. Only command-line entry points install it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any


class CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """`logging.StreamHandler` on whatever `sys.stderr` is when a record is emitted."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def install(formatter: logging.Formatter, level: int | str) -> CurrentStderrHandler:
    """Give the root logger exactly one `CurrentStderrHandler` (replacing an earlier one) at `level`.

    Other handlers on the root logger (a test's capture, an embedding application's own) are kept.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, CurrentStderrHandler)]:
        root.removeHandler(old)
    handler = CurrentStderrHandler()
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
