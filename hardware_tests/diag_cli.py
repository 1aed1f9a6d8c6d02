"""`fedlora diag`: field diagnostics of this device, as a table on stdout and optionally JSON.

Exit codes: 0 no check failed (warnings and skips allowed); 1 at least one check failed; 2 usage error.
Only the standard library is imported at module top: `fedlora --help` imports every subcommand module,
and a device must be able to run `fedlora diag` even when the packages it checks are broken.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

CONFIG_ENV = "FEDLORA_DEVICE_CONFIG"
DEFAULT_CONFIG = Path("/opt/fedlora/etc/device.toml")  # install.sh's default prefix


# One line in `fedlora --help` and this command's description (fl_transport/command.py).
HELP = "field diagnostics of this device"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `fedlora diag`."""
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"device.toml (default: ${CONFIG_ENV}, else the install's own PREFIX/etc/device.toml when "
        f"run from PREFIX/venv, else {DEFAULT_CONFIG} if it exists; without a config the node, broker "
        "and bundle checks skip)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the report as JSON to FILE ('-' for stdout instead of the table)",
    )
    parser.add_argument(
        "--junit",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write a JUnit XML report (one test case per check) for device CI; needs no pytest",
    )
    parser.add_argument("--only", default="", metavar="CHECK[,CHECK]", help="run only these checks")
    parser.add_argument("--benchmark-steps", type=int, default=5, help="training steps timed (default 5)")
    parser.add_argument(
        "--broker-timeout-s",
        type=float,
        default=5.0,
        help="TCP/TLS/CONNACK timeout of the broker check (default 5)",
    )


def install_config(venv_prefix: str | None = None) -> Path | None:
    """PREFIX/etc/device.toml of the install.sh install this interpreter belongs to (PREFIX/venv), if any."""
    prefix = Path(sys.prefix if venv_prefix is None else venv_prefix)
    if prefix.name != "venv":
        return None
    candidate = prefix.parent / "etc" / "device.toml"
    return candidate if candidate.is_file() else None


def resolve_config(
    given: Path | None, environ: dict[str, str] | None = None, venv_prefix: str | None = None
) -> Path | None:
    """The config to check: `--config`, else $FEDLORA_DEVICE_CONFIG, else the config of the install this
    `fedlora` runs from (PREFIX/venv -> PREFIX/etc/device.toml, any --prefix), else the default install's."""
    env = os.environ if environ is None else environ
    if given is not None:
        return given
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    own = install_config(venv_prefix)
    if own is not None:
        return own
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def run(args: argparse.Namespace) -> int:
    """Run the checks, print the table (or JSON with `--json -`), write `--json FILE`; 1 if any failed."""
    import time

    from hardware_tests.context import DiagContext
    from hardware_tests.report import dumps, junit_xml, table, to_json
    from hardware_tests.result import CheckOutcome, verdict
    from hardware_tests.runner import CHECK_NAMES, run_checks

    only = tuple(n.strip() for n in args.only.split(",") if n.strip())
    unknown = sorted(set(only) - set(CHECK_NAMES))
    if unknown:
        print(
            f"fedlora diag: unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECK_NAMES)}",
            file=sys.stderr,
        )
        return 2
    if args.benchmark_steps < 1 or args.broker_timeout_s <= 0:
        print("fedlora diag: --benchmark-steps must be >= 1 and --broker-timeout-s > 0", file=sys.stderr)
        return 2
    config = resolve_config(args.config)
    ctx = DiagContext.from_config_path(
        config, benchmark_steps=args.benchmark_steps, broker_timeout_s=args.broker_timeout_s
    )
    try:
        results = run_checks(ctx, only=only)
    finally:
        ctx.close()
    report = dumps(to_json(results, config_path=str(config) if config else None, now_s=time.time()))
    if args.json is not None and str(args.json) == "-":
        sys.stdout.write(report)
    else:
        sys.stdout.write(table(results))
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(report)
    if getattr(args, "junit", None) is not None:
        args.junit.parent.mkdir(parents=True, exist_ok=True)
        args.junit.write_text(junit_xml(results))
    return 1 if verdict(results) is CheckOutcome.FAIL else 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m hardware_tests.diag_cli`: the same as `fedlora diag` without the entry point."""
    parser = argparse.ArgumentParser(prog="fedlora diag", description=__doc__.splitlines()[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
