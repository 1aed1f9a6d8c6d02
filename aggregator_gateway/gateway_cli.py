"""`fedlora gateway --config gateway.toml`: run a gateway until SIGTERM or SIGINT.

Exit codes: 0 clean stop; 1 a fedlora error (bad config, unreadable keys); 2 usage error. The module
imports the stdlib only at the top so `fedlora --help` stays cheap; `python -m aggregator_gateway.gateway_cli`
runs it without the `fedlora` entry point (used by the integration tests).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `fedlora gateway`."""
    parser.add_argument(
        "--config", type=Path, required=True, help="gateway config.toml (from fedlora provision)"
    )


def run(args: argparse.Namespace) -> int:
    """Load the config and run the gateway (blocks until stopped)."""
    from aggregator_gateway.gateway.config import load_gateway_config
    from aggregator_gateway.gateway.gateway import run_gateway

    return run_gateway(load_gateway_config(args.config))


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (`python -m aggregator_gateway.gateway_cli`): exactly `fedlora gateway ...`."""
    from fedlora.cli import standalone

    return standalone("gateway", argv)


if __name__ == "__main__":
    sys.exit(main())
