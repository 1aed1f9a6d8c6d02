"""The package boundaries of docs/architecture.md, "Packages", enforced.

fl_protocol is the contract every node runs, including devices without torch; it may import only numpy,
cryptography and zstandard. Devices never import gateway code and vice versa.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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


def _imported_top_levels(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        tops: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                tops.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = tops
    return found


def test_device_and_gateway_do_not_import_each_other() -> None:
    for path, tops in _imported_top_levels("edge_runtime").items():
        assert "aggregator_gateway" not in tops, f"{path} imports gateway code"
    for path, tops in _imported_top_levels("aggregator_gateway").items():
        assert "edge_runtime" not in tops, f"{path} imports device code"
