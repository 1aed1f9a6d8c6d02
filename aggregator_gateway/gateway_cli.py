"""`fedlora gateway --config gateway.toml`: run a gateway until SIGTERM or SIGINT.

Exit codes: 0 clean stop; 1 a fedlora error (bad config, unreadable keys); 2 usage error. The module
imports the stdlib only at the top so `fedlora --help` stays cheap; `python -m aggregator_gateway.gateway_cli`
runs it without the `fedlora` entry point (used by the integration tests).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

# One line in `fedlora --help` and this command's description (fl_transport/command.py).
HELP = "secure aggregation of a device cohort; signed partial sums to the cloud"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `fedlora gateway`."""
    from aggregator_gateway.cloud_cli import add_log_level_argument

    parser.add_argument(
        "--config", type=Path, required=True, help="gateway config.toml (from fedlora provision)"
    )
    add_log_level_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Load the config and run the gateway (blocks until stopped)."""
    from aggregator_gateway.cloud_cli import apply_log_level
    from aggregator_gateway.gateway.config import load_gateway_config
    from aggregator_gateway.gateway.gateway import run_gateway

    apply_log_level(args)
    config = load_gateway_config(args.config)
    logging.getLogger(__name__).info(
        "gateway %s of fleet %s: %d expected device(s), broker %s:%d",
        config.node.id,
        config.node.fleet,
        len(config.expected_devices),
        config.broker.host,
        config.broker.port,
    )
    return run_gateway(config)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (`python -m aggregator_gateway.gateway_cli`): exactly `fedlora gateway ...`."""
    from fl_transport.command import standalone

    return standalone("gateway", "aggregator_gateway.gateway_cli", argv)


if __name__ == "__main__":
    sys.exit(main())
