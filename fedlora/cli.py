"""The single `fedlora` entry point.

Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`; modules
are imported only when their subcommand runs, so a device install (no torch) can still run `fedlora device`.

Exit codes: 0 success; 1 a fedlora error (message on stderr); 2 usage error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from fl_protocol.errors import FedloraError
from fl_transport import stderr_handler

# name -> (module, one-line help). Order is the order shown in --help.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "export": ("export.cli", "export a causal LM with LoRA to an ONNX Runtime training bundle"),
    "adapter": ("export.adapter_cli", "turn a flat federated LoRA vector into a PEFT adapter directory"),
    "cloud": (
        "aggregator_gateway.cloud_cli",
        "run the cloud: rounds, root aggregation, server optimizer, model store, status page",
    ),
    "demo": ("fedlora.demo.cli", "run a whole federation (cloud, gateways, devices, broker) on this machine"),
    "diag": ("hardware_tests.diag_cli", "field diagnostics of this device"),
    "simulate": (
        "fedlora.simulate.cli",
        "N virtual devices behind G gateways through the real code, with a network model (one process)",
    ),
    "device": ("edge_runtime.cli", "run the device agent: take part in federated rounds over MQTT"),
    "gateway": (
        "aggregator_gateway.gateway_cli",
        "secure aggregation of a device cohort; signed partial sums to the cloud",
    ),
    "provision": (
        "fedlora.provision.cli",
        "fleet CA, TLS certs, Ed25519 identities, mosquitto configs and ACLs, node bundles",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every registered subcommand (their arguments loaded lazily)."""
    parser = argparse.ArgumentParser(prog="fedlora", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_module=module_name)
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    stderr_handler.install(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"), level)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, run the chosen subcommand and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _configure_logging(args.verbose)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args))
    except FedloraError as exc:
        print(f"fedlora {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"fedlora {args.command}: interrupted", file=sys.stderr)
        return 130


def standalone(command: str, argv: Sequence[str] | None = None) -> int:
    """Entry of `python -m <subcommand module>`: the same as `fedlora COMMAND ...`.

    `-v`/`--verbose` may appear anywhere in `argv`; they are moved before the command, where the
    top-level parser reads them.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = [a for a in args if a in ("-v", "-vv", "--verbose")]
    rest = [a for a in args if a not in ("-v", "-vv", "--verbose")]
    return main([*verbose, command, *rest])


if __name__ == "__main__":
    sys.exit(main())
