"""The package layering of docs/architecture.md ("Layering"), enforced as an allow-list.

Every module of the seven product packages is parsed with `ast`. Each first-party import it makes counts,
wherever it stands: at module level (inside `if TYPE_CHECKING:` or `try: ... except ImportError:` too),
inside a function body (a lazy import), or as `importlib.import_module("literal")` / `__import__("literal")`.
An import is allowed when the importing package's row of `LAYERS` lists the imported package under
`may_import`, or under `lazily` with the import inside a function body of a module under one of the listed
paths. Optional and lazy imports are no exception: they are dependencies all the same, and only the `lazily`
column admits them, by place. Modules named by a computed string (the `fedlora` command registry in
fedlora/cli.py, run by fl_transport/command.py) are not seen; that registry lives in `fedlora`, which may
import anything.

fl_protocol is also the contract every node runs, including devices without torch: it may import only
numpy, cryptography and zstandard (checked by importing it in a fresh interpreter).
"""

from __future__ import annotations

import ast
import pkgutil
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"


@dataclass(frozen=True)
class Layer:
    """What one top-level package may import.

    may_import: first-party packages importable anywhere in the package (its own is always allowed).
    lazily: first-party package -> path prefixes (repository-relative) of the modules that may import it,
    and only inside a function body.
    why: one line for docs/architecture.md.
    """

    may_import: tuple[str, ...]
    why: str
    lazily: dict[str, tuple[str, ...]] = field(default_factory=dict)


PACKAGES = (
    "fl_protocol",
    "fl_transport",
    "export",
    "edge_runtime",
    "aggregator_gateway",
    "hardware_tests",
    "fedlora",
)

LAYERS: dict[str, Layer] = {
    "fl_protocol": Layer((), "the contract every node runs, devices without torch included"),
    "fl_transport": Layer(("fl_protocol",), "MQTT and command-line plumbing shared by every role"),
    "export": Layer(
        ("fl_protocol",), "model -> training bundle (torch), flat vector -> PEFT adapter; runs off the device"
    ),
    "edge_runtime": Layer(
        ("fl_protocol", "fl_transport"),
        "the device; the torch fallback trainer rebuilds the model with the exporter's code",
        lazily={"export": ("edge_runtime/trainer/torch_backend.py",)},
    ),
    "aggregator_gateway": Layer(
        ("fl_protocol", "fl_transport"),
        "gateway and cloud; the cloud writes the final PEFT adapter with `export.adapter` (no torch)",
        lazily={"export": ("aggregator_gateway/cloud/",)},
    ),
    "hardware_tests": Layer(
        ("fl_protocol", "fl_transport", "edge_runtime"), "field diagnostics of the device node"
    ),
    "fedlora": Layer(
        tuple(p for p in PACKAGES if p != "fedlora"), "the umbrella CLI, demo, simulate and provision"
    ),
}


@dataclass(frozen=True)
class Import:
    """One first-party import: where it stands and what it reaches."""

    path: str  # repository-relative, posix
    line: int
    package: str  # the importing module's top-level package
    target: str  # the imported module's top-level package
    lazy: bool  # inside a function (or lambda) body


def _dynamic_import_name(node: ast.Call) -> str | None:
    """The literal module name of `importlib.import_module("x")`, `import_module("x")`, `__import__("x")`."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if name not in ("import_module", "__import__") or not node.args:
        return None
    first = node.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


class _ImportCollector(ast.NodeVisitor):
    """Collect the first-party imports of one module, noting which stand inside a function body."""

    def __init__(self, path: str, package: str) -> None:
        self.path, self.package = path, package
        self.depth = 0
        self.found: list[Import] = []

    def _add(self, node: ast.AST, module: str) -> None:
        target = module.split(".")[0]
        if target in PACKAGES:
            line = getattr(node, "lineno", 0)
            self.found.append(Import(self.path, line, self.package, target, self.depth > 0))

    def _visit_body(self, header: list[ast.AST], body: list[ast.stmt] | ast.expr) -> None:
        for child in header:  # decorators, defaults, annotations: evaluated when the def runs
            self.visit(child)
        self.depth += 1
        for stmt in body if isinstance(body, list) else [body]:
            self.visit(stmt)
        self.depth -= 1

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        returns = [node.returns] if node.returns else []
        self._visit_body([*node.decorator_list, node.args, *returns], node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._visit_body([node.args], node.body)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self._add(node, self.package if node.level else node.module or "")

    def visit_Call(self, node: ast.Call) -> None:
        name = _dynamic_import_name(node)
        if name is not None:
            self._add(node, name)
        self.generic_visit(node)


def imports_of(source: str, path: str) -> list[Import]:
    """The first-party imports of one module's `source`; `path` is repository-relative."""
    collector = _ImportCollector(path, path.split("/")[0])
    collector.visit(ast.parse(source, filename=path))
    return collector.found


def all_imports() -> list[Import]:
    """The first-party imports of every module of every product package."""
    found: list[Import] = []
    for package in PACKAGES:
        for file in sorted((ROOT / package).rglob("*.py")):
            path = file.relative_to(ROOT).as_posix()
            found.extend(imports_of(file.read_text(encoding="utf-8"), path))
    return found


def is_allowed(imp: Import) -> bool:
    """Whether `LAYERS` admits `imp` (see the module doc)."""
    layer = LAYERS[imp.package]
    if imp.target == imp.package or imp.target in layer.may_import:
        return True
    return imp.lazy and any(imp.path.startswith(prefix) for prefix in layer.lazily.get(imp.target, ()))


def layering_table() -> str:
    """The Markdown table docs/architecture.md carries under "## Layering"."""
    lines = ["| package | may import | lazily only (inside a function, in) | why |", "|---|---|---|---|"]
    for package, layer in LAYERS.items():
        may = ", ".join(f"`{p}`" for p in layer.may_import) or "no first-party package"
        lazy = "; ".join(
            f"`{target}` in " + ", ".join(f"`{p}`" for p in prefixes)
            for target, prefixes in layer.lazily.items()
        )
        lines.append(f"| `{package}` | {may} | {lazy or '-'} | {layer.why} |")
    return "\n".join(lines) + "\n"


def _layering_section() -> str:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    match = re.search(r"^## Layering\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"{ARCHITECTURE.relative_to(ROOT)} has no '## Layering' section"
    return match.group(1)


def test_every_product_package_has_a_row() -> None:
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert on_disk == set(PACKAGES) == set(LAYERS)
    for layer in LAYERS.values():
        assert set(layer.may_import) | set(layer.lazily) <= set(PACKAGES)


def test_every_first_party_import_is_allowed() -> None:
    found = all_imports()
    assert len({imp.path for imp in found}) > 50, "the import scan found too few modules"
    bad = [
        f"{imp.path}:{imp.line}: {imp.package} imports {imp.target}"
        f" ({'inside a function' if imp.lazy else 'at module level'})"
        for imp in found
        if not is_allowed(imp)
    ]
    assert not bad, "imports outside docs/architecture.md's layering:\n" + "\n".join(bad)


def test_every_lazy_permission_is_used() -> None:
    """A `lazily` entry nothing needs any more is stale: drop it from the table and the docs."""
    used = {(imp.package, imp.target) for imp in all_imports() if imp.lazy}
    stale = [(pkg, dep) for pkg, layer in LAYERS.items() for dep in layer.lazily if (pkg, dep) not in used]
    assert not stale, f"unused lazy permissions: {stale}"


def test_the_collector_sees_every_kind_of_import() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import numpy\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n"
        "    from fl_transport.mqtt import MqttConnection\n"
        "try:\n"
        "    import export.adapter\n"
        "except ImportError:\n"
        "    pass\n"
        "@decorate(__import__('fedlora'))\n"
        "def run():\n"
        "    from edge_runtime.cli import main\n"
        "    return importlib.import_module('hardware_tests.diag_cli')\n"
        "later = lambda: importlib.import_module('aggregator_gateway')\n"
    )
    seen = {(i.line, i.target, i.lazy) for i in imports_of(source, "fl_protocol/example.py")}
    assert seen == {
        (3, "fl_protocol", False),
        (5, "fl_transport", False),
        (7, "export", False),
        (10, "fedlora", False),
        (12, "edge_runtime", True),
        (13, "hardware_tests", True),
        (14, "aggregator_gateway", True),
    }


@pytest.mark.parametrize(
    ("path", "source", "allowed"),
    [
        ("fl_protocol/x.py", "import fl_transport\n", False),
        ("edge_runtime/x.py", "import fedlora.cli\n", False),
        ("edge_runtime/x.py", "import aggregator_gateway\n", False),
        ("aggregator_gateway/x.py", "def f():\n    import edge_runtime\n", False),
        ("edge_runtime/trainer/torch_backend.py", "import export.lora\n", False),
        ("edge_runtime/trainer/torch_backend.py", "def f():\n    import export.lora\n", True),
        ("edge_runtime/trainer/ort_backend.py", "def f():\n    import export.lora\n", False),
        ("hardware_tests/x.py", "import edge_runtime.ledger\n", True),
        ("fedlora/x.py", "import hardware_tests, edge_runtime, export\n", True),
    ],
)
def test_the_allow_list_decides_by_package_and_place(path: str, source: str, allowed: bool) -> None:
    imports = imports_of(source, path)
    assert imports
    assert all(is_allowed(imp) for imp in imports) is allowed


def test_docs_show_the_layering_table() -> None:
    expected = layering_table()
    assert expected in _layering_section(), (
        "docs/architecture.md's '## Layering' section must contain this table (generated from LAYERS in "
        f"tests/unit/test_import_rules.py):\n{expected}"
    )


def _modules(package: str) -> list[str]:
    pkg_dir = ROOT / package
    names = [package]
    for info in pkgutil.walk_packages([str(pkg_dir)], prefix=f"{package}."):
        names.append(info.name)
    return names


def test_fl_protocol_imports_no_heavy_dependency() -> None:
    modules = _modules("fl_protocol")
    assert len(modules) > 1, "fl_protocol has no modules to check"
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'onnxruntime', 'paho', 'transformers', 'peft', 'onnx'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"fl_protocol pulled in: {out.stdout.strip()}"
