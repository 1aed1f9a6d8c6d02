"""`fedlora device --config device.toml`: run the device agent until SIGTERM/SIGINT.

Also runnable as `python -m edge_runtime.cli --config device.toml`. `fedlora device ledger-reset --config
device.toml --reason TEXT` is the only way back from a refused (missing, altered, rolled-back) privacy
ledger (docs/privacy.md, "The device ledger"). Logs are JSON lines on stderr with
the node id and the current round. Exit codes: 0 stopped by a signal; 1 a fedlora error (bad config,
unreadable ledger or state, no trainer backend, test hooks without FEDLORA_TEST_HOOKS=1); 2 usage error.
Heavy modules (paho, onnxruntime) are imported inside `run`, so `fedlora --help` stays light.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fl_transport import stderr_handler

_LEVELS = ("debug", "info", "warning", "error")


# One line in `fedlora --help` and this command's description (fl_transport/command.py).
HELP = "run the device agent: take part in federated rounds over MQTT"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `fedlora device`."""
    parser.add_argument(
        "--config",
        type=Path,
        required=True,
        help="device.toml (provisioned config.toml "
        "plus [device], [gates], [privacy.tiers.*]; see docs/device.md)",
    )
    parser.add_argument("--log-level", choices=_LEVELS, default="info", help="log level (default: info)")
    parser.add_argument(
        "action",
        nargs="?",
        choices=("run", "ledger-reset"),
        default="run",
        help="run (default): take part in rounds; ledger-reset: start a new privacy ledger after the old one "
        "was refused as missing, altered or rolled back (every tier's ε restarts at 0; needs --reason; "
        "logged and recorded in the ledger)",
    )
    parser.add_argument("--reason", default="", help="ledger-reset: why the operator resets (required)")


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, node and round (when in one)."""

    def __init__(self, node_id: str, current_round: Callable[[], int | None]) -> None:
        super().__init__()
        self._node_id, self._current_round = node_id, current_round

    def format(self, record: logging.LogRecord) -> str:
        """Render `record`; exceptions go into an `exc` field."""
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": self._node_id,
            "round": self._current_round(),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(node_id: str, current_round: Callable[[], int | None], level: str) -> None:
    """One JSON-lines handler on the current stderr replaces fedlora's plain-text one (CLI entry only)."""
    stderr_handler.install(JsonLineFormatter(node_id, current_round), level.upper())


def ledger_reset(args: argparse.Namespace) -> int:
    """`fedlora device ledger-reset --config device.toml --reason TEXT`: archive the old ledger, start a
    fresh sealed one, log a WARNING and append one JSON line to <state_dir>/ledger-resets.log."""
    from edge_runtime.agent.config import load_device_config
    from edge_runtime.ledger import LEDGER_FILE, PrivacyLedger, device_seal

    if not args.reason.strip():
        print("fedlora device ledger-reset: --reason is required", file=sys.stderr)
        return 2
    config = load_device_config(args.config)
    configure_logging(config.node.id, lambda: None, getattr(args, "log_level", "info"))
    state_dir = config.device.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    ledger, archived = PrivacyLedger.reset(
        state_dir / LEDGER_FILE,
        config.tiers,
        seal=device_seal(config.identity.signing_key_file),
        reason=args.reason,
    )
    entry = {
        "ts": round(time.time(), 3),
        "node": config.node.id,
        "reason": args.reason,
        "archived_as": None if archived is None else archived.name,
        "sequence": ledger.sequence,
    }
    with open(state_dir / "ledger-resets.log", "a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")
    print(json.dumps(entry))
    return 0


def run(args: argparse.Namespace) -> int:
    """Load the config, build the agent and serve rounds until a signal; see the module doc for exit codes."""
    if getattr(args, "action", "run") == "ledger-reset":
        return ledger_reset(args)
    from edge_runtime.agent.agent import DeviceAgent
    from edge_runtime.agent.config import load_device_config

    config = load_device_config(args.config)
    agent_ref: list[Any] = []
    configure_logging(
        config.node.id,
        lambda: agent_ref[0].current_round if agent_ref else None,
        getattr(args, "log_level", "info"),
    )
    logging.getLogger(__name__).info(
        "device %s of fleet %s: gateway %s, broker %s:%d, bundle %s, data %s",
        config.node.id,
        config.node.fleet,
        config.node.gateway,
        config.broker.host,
        config.broker.port,
        config.device.bundle_dir,
        config.device.data_dir,
    )
    agent = DeviceAgent(config)
    agent_ref.append(agent)

    def on_signal(signum: int, frame: object) -> None:
        logging.getLogger(__name__).info("signal %d: stopping", signum)
        agent.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    agent.run()
    logging.getLogger(__name__).info("device agent stopped after %.0f s", time.monotonic() - started)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (`python -m edge_runtime.cli`): exactly `fedlora device ...`."""
    from fl_transport.command import standalone

    return standalone("device", "edge_runtime.cli", argv)


if __name__ == "__main__":
    sys.exit(main())
