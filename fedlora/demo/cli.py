"""`fedlora demo`: arguments and entry (heavy imports inside `run`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the demo flags (DESIGN.md §3)."""
    parser.add_argument("--devices", type=int, default=8, help="device processes (default 8)")
    parser.add_argument("--gateways", type=int, default=2, help="gateways (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="federated rounds (default 5)")
    parser.add_argument(
        "--dropout",
        type=float,
        default=0.25,
        help="fraction of devices killed at a random point of each round (default 0.25)",
    )
    parser.add_argument(
        "--broker",
        default="embedded",
        help="'embedded' (in-process amqtt, default) or mqtt://HOST:PORT of a real broker",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("fedlora-out"), help="output directory (default fedlora-out)"
    )
    parser.add_argument(
        "--report", type=Path, default=None, help="report.json path (default OUT/report.json)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for data shards and dropouts (default 0)")
    parser.add_argument("--local-steps", type=int, default=None, help="local training steps per round")
    parser.add_argument("--learning-rate", type=float, default=None, help="device learning rate")
    parser.add_argument(
        "--noise-multiplier",
        type=float,
        default=None,
        help="DP noise multiplier of the cohort sum (0 disables DP noise)",
    )
    parser.add_argument(
        "--weighting",
        choices=("uniform", "qffl", "datasize"),
        default=None,
        help="device weights inside the secure sum: q-FFL fairness or data size (default uniform)",
    )
    parser.add_argument(
        "--verbose-nodes", action="store_true", help="INFO-level logs from every node (OUT/work/logs)"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="bundle cache (default ~/.cache/fedlora)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo and return its exit code."""
    from fedlora.demo.runner import DemoOptions, run_demo
    from fedlora.demo.workspace import default_cache_dir

    overrides: dict[str, object] = {}
    if args.local_steps is not None:
        overrides["local_steps"] = args.local_steps
    if args.learning_rate is not None:
        overrides["learning_rate"] = args.learning_rate
    if args.weighting is not None:
        overrides["weighting"] = args.weighting
        if args.weighting == "datasize":
            overrides["weight_reference"] = 500.0  # rows of 64 tokens at which a device weighs fully
    if args.noise_multiplier is not None:
        overrides["noise_multiplier"] = args.noise_multiplier
        if args.noise_multiplier == 0:
            overrides["mechanism"] = "none"
    if args.weighting not in (None, "uniform") and overrides.get("mechanism") != "none":
        from fl_protocol.errors import ConfigError

        raise ConfigError("--weighting qffl/datasize needs --noise-multiplier 0: weighted rounds refuse DP")
    options = DemoOptions(
        devices=args.devices,
        gateways=args.gateways,
        rounds=args.rounds,
        dropout=args.dropout,
        broker=args.broker,
        out_dir=args.out,
        report=args.report,
        seed=args.seed,
        cache_dir=args.cache_dir or default_cache_dir(),
        settings_overrides=overrides,
        verbose=args.verbose_nodes,
    )
    return run_demo(options, progress=lambda line: print(line, flush=True))
