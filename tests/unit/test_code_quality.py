"""Lint, type and size gates: ruff on the whole tree, mypy on every product package, and the size rule.

The size rule: no product-code file over 400 lines and no function over 60 lines (from its `def` line to
the last line of its body; decorators not counted), unless a one-line reason is given. For a file: a line
`# size: <reason>` among its first 30 lines. For a function: a line `# size: <reason>` directly above its
`def`, or above its first decorator if it has any. The reason must not be empty. Product code is the seven
packages below, not tests/, bench/ or scripts/.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = (
    "fl_protocol",
    "fl_transport",
    "export",
    "edge_runtime",
    "aggregator_gateway",
    "hardware_tests",
    "fedlora",
)
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
FILE_REASON_WITHIN = 30
_REASON = re.compile(r"^\s*# size: *(?P<reason>.*?)\s*$")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_is_clean() -> None:
    proc = _run("ruff", "check", ".")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_mypy_is_clean_on_every_product_package() -> None:
    proc = _run("mypy", *PRODUCT_PACKAGES)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def _has_reason(line: str) -> bool:
    match = _REASON.match(line)
    return bool(match and match.group("reason"))


def size_violations(source: str, path: str) -> list[str]:
    """The size rule's violations in one module's `source` (`path` names it in the messages)."""
    lines = source.splitlines()
    found = []
    if len(lines) > MAX_FILE_LINES and not any(_has_reason(line) for line in lines[:FILE_REASON_WITHIN]):
        found.append(
            f"{path}: {len(lines)} lines > {MAX_FILE_LINES}, no '# size: <reason>' in its first "
            f"{FILE_REASON_WITHIN} lines"
        )
    for node in ast.walk(ast.parse(source, filename=path)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        if length > MAX_FUNCTION_LINES and not (first >= 2 and _has_reason(lines[first - 2])):
            found.append(
                f"{path}:{node.lineno}: {node.name}() {length} lines > {MAX_FUNCTION_LINES}, "
                "no '# size: <reason>' directly above it"
            )
    return found


def test_product_code_keeps_the_size_rule() -> None:
    found = []
    for package in PRODUCT_PACKAGES:
        for file in sorted((ROOT / package).rglob("*.py")):
            path = file.relative_to(ROOT).as_posix()
            found.extend(size_violations(file.read_text(encoding="utf-8"), path))
    assert not found, "split these, or give a one-line reason:\n" + "\n".join(found)


def _function(name: str, body_lines: int, above: str = "", decorators: tuple[str, ...] = ()) -> str:
    body = "".join(f"    x{i} = {i}\n" for i in range(body_lines))
    return f"{above}\n" + "".join(f"{d}\n" for d in decorators) + f"def {name}():\n{body}"


@pytest.mark.parametrize(
    ("source", "violations"),
    [
        (_function("short", MAX_FUNCTION_LINES - 1), 0),
        (_function("long", MAX_FUNCTION_LINES), 1),
        (_function("long", MAX_FUNCTION_LINES, above="# size: one table, read top to bottom"), 0),
        (_function("long", MAX_FUNCTION_LINES, above="# size:   "), 1),
        (_function("long", MAX_FUNCTION_LINES, above="# size: why", decorators=("@cache",)), 0),
        (_function("long", MAX_FUNCTION_LINES, decorators=("@cache", "# size: between: too low")), 1),
        ("x = 1\n" * (MAX_FILE_LINES + 1), 1),
        ("# size: one generated table\n" + "x = 1\n" * MAX_FILE_LINES, 0),
        ("\n" * FILE_REASON_WITHIN + "# size: too late\n" + "x = 1\n" * MAX_FILE_LINES, 1),
    ],
)
def test_the_size_checker_counts_and_reads_reasons(source: str, violations: int) -> None:
    assert len(size_violations(source, "example.py")) == violations
