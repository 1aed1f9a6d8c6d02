"""The single `fedlora` entry point.

Each subcommand lives in its own module exposing `HELP` (one line), `add_arguments(parser)` and
`run(args) -> int` (fl_transport/command.py); modules are imported only when the parser is built and their
heavy dependencies only when their subcommand runs, so a device install (no torch) can still run
`fedlora device`.

Exit codes: 0 success; 1 a fedlora error (message on stderr); 2 usage error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fl_transport import command

# name -> module. Order is the order shown in --help; each module's HELP is its line there.
SUBCOMMANDS: dict[str, str] = {
    "export": "export.cli",
    "adapter": "export.adapter_cli",
    "cloud": "aggregator_gateway.cloud_cli",
    "demo": "fedlora.demo.cli",
    "diag": "hardware_tests.diag_cli",
    "simulate": "fedlora.simulate.cli",
    "device": "edge_runtime.cli",
    "gateway": "aggregator_gateway.gateway_cli",
    "provision": "fedlora.provision.cli",
}


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every registered subcommand (their arguments loaded lazily)."""
    return command.build_parser(SUBCOMMANDS, description=(__doc__ or "").splitlines()[0])


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, run the chosen subcommand and return its exit code (see the module doc)."""
    return command.run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
