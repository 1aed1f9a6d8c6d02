"""Running `fedlora` subcommands: one parser, one logging set-up, one mapping of errors to exit codes.

A subcommand is a module exposing `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`. The
umbrella entry point (fedlora/cli.py) registers all of them; a role's standalone entry (`python -m
edge_runtime.cli`, `python -m aggregator_gateway.gateway_cli`) registers only its own through the same
functions, so `python -m edge_runtime.cli ARGS` behaves and prints exactly like `fedlora device ARGS`.
It lives here, below the role packages, so that no role imports the umbrella `fedlora` package
(docs/architecture.md, "Layering").

Exit codes: 0 success; 1 a fedlora error (message on stderr); 2 usage error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Mapping, Sequence

from fl_protocol.errors import FedloraError
from fl_transport import stderr_handler

PROG = "fedlora"
VERBOSE_FLAGS = ("-v", "-vv", "--verbose")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser(commands: Mapping[str, str], description: str | None = None) -> argparse.ArgumentParser:
    """The `fedlora` parser with `commands` (command name -> module name) as subcommands, in that order.

    Each module is imported here to read its `HELP` and register its arguments; a module keeps its heavy
    imports inside `run`, so building the parser stays cheap.
    """
    parser = argparse.ArgumentParser(prog=PROG, description=description)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in commands.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_module=module_name)
    return parser


def configure_logging(verbosity: int) -> None:
    """Plain-text records on the current stderr: WARNING by default, INFO with -v, DEBUG with -vv."""
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    stderr_handler.install(logging.Formatter(LOG_FORMAT), level)


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]) with `parser`, run the chosen subcommand, return its exit code.

    No command: the help, exit code 2. A `FedloraError` becomes one line on stderr and its `exit_code`;
    Ctrl-C becomes "interrupted" and 130. argparse itself exits with 2 on a usage error.
    """
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    configure_logging(args.verbose)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args))
    except FedloraError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def standalone(command: str, module_name: str, argv: Sequence[str] | None = None) -> int:
    """Entry of `python -m <module_name>`: exactly `fedlora COMMAND ...`, with only that command registered.

    `-v`/`--verbose` may appear anywhere in `argv` (default: sys.argv[1:]); they are moved before the
    command, where the top-level parser reads them.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = [a for a in args if a in VERBOSE_FLAGS]
    rest = [a for a in args if a not in VERBOSE_FLAGS]
    return run_command(build_parser({command: module_name}), [*verbose, command, *rest])
