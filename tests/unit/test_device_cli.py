"""`fedlora device` entry: exit codes and JSON-lines logging, without starting an agent."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from edge_runtime.cli import JsonLineFormatter, main

ROOT = Path(__file__).resolve().parents[2]


def test_missing_config_is_exit_code_1(tmp_path: Path, capsys) -> None:
    assert main(["--config", str(tmp_path / "nope.toml")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_usage_error_is_exit_code_2() -> None:
    result = subprocess.run([sys.executable, "-m", "edge_runtime.cli"], cwd=ROOT, capture_output=True)
    assert result.returncode == 2


def test_cli_module_imports_only_the_standard_library() -> None:
    heavy = "('paho', 'onnxruntime', 'numpy')"
    code = f"import sys, edge_runtime.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_json_lines_carry_node_and_round() -> None:
    formatter = JsonLineFormatter("dev-7", lambda: 12)
    record = logging.LogRecord(
        "edge_runtime.agent", logging.INFO, __file__, 1, "round %d: sent %s", (12, "x"), None
    )
    doc = json.loads(formatter.format(record))
    assert doc["node"] == "dev-7" and doc["round"] == 12 and doc["msg"] == "round 12: sent x"
    assert doc["level"] == "info"
