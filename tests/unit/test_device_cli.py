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


def test_ledger_reset_is_explicit_logged_and_lets_the_device_start_again(tmp_path: Path, capsys) -> None:
    """Issue 11 finding 5: a refused ledger stays refused until `fedlora device ledger-reset`."""
    import argparse

    import pytest

    from edge_runtime.agent.config import load_device_config
    from edge_runtime.ledger import LedgerTamperedError, open_device_ledger, round_ref
    from fedlora.provision.cli import add_arguments, run
    from tests.kit.tasks import dp_task

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = ["--out", str(tmp_path / "f"), "--fleet", "demo", "--gateways", "g1", "--devices", "1"]
    assert run(parser.parse_args(args)) == 0
    node = tmp_path / "f" / "nodes" / "dev-0001"
    config_path = node / "device.toml"
    config_path.write_text(
        (node / "config.toml").read_text()
        + f'\n[device]\nbundle_dir = "{tmp_path / "b"}"\ndata_dir = "{tmp_path / "d"}"\n'
        f'state_dir = "{tmp_path / "s"}"\n'
    )
    config = load_device_config(config_path)
    ledger = open_device_ledger(tmp_path / "s", config.identity.signing_key_file, config.tiers)
    task = dp_task(mechanism="gaussian", noise_multiplier=3.0, tier="personal")
    ledger.charge(round_ref(task, fleet="demo", cloud_id="cloud"), task)
    (tmp_path / "s" / "ledger.json").unlink()
    with pytest.raises(LedgerTamperedError, match="privacy ledger"):
        open_device_ledger(tmp_path / "s", config.identity.signing_key_file, config.tiers)
    assert main(["ledger-reset", "--config", str(config_path)]) == 2  # no reason: usage error
    assert main(["ledger-reset", "--config", str(config_path), "--reason", "disk replaced"]) == 0
    entry = json.loads((tmp_path / "s" / "ledger-resets.log").read_text().splitlines()[-1])
    assert entry["reason"] == "disk replaced" and entry["node"] == "dev-0001"
    assert '"level": "warning"' in capsys.readouterr().err  # the reset is logged as a warning
    reopened = open_device_ledger(tmp_path / "s", config.identity.signing_key_file, config.tiers)
    assert reopened.spent_epsilon("personal") == 0.0 and reopened.sequence == 2
