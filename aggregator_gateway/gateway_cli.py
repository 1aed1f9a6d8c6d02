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
    """Standalone entry point mirroring `fedlora gateway`."""
    from fl_protocol.errors import FedloraError

    parser = argparse.ArgumentParser(prog="fedlora gateway")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    add_arguments(parser)
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except FedloraError as exc:
        print(f"fedlora gateway: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
