"""`fedlora simulate`: arguments and entry (heavy imports inside `run`).

Exit codes: 0 every round aggregated at least one gateway; 1 a fedlora error (bad configuration: one
line on stderr, before any training) or a round where every gateway aborted.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

from fl_protocol.errors import ConfigError

logger = logging.getLogger(__name__)

# flag -> (section, key, type, help)
FLAGS: dict[str, tuple[str, str, type, str]] = {
    "--model": ("simulate", "model", str, "tiny-llama | tiny-gpt2 | smollm2-135m"),
    "--bundle": ("simulate", "bundle_dir", str, "an exported bundle directory (instead of --model)"),
    "--devices": ("simulate", "devices", int, "virtual devices"),
    "--gateways": ("simulate", "gateways", int, "gateways (device i joins gateway i mod G)"),
    "--rounds": ("simulate", "rounds", int, "federated rounds"),
    "--dropout": ("simulate", "dropout", float, "fraction of each cohort that vanishes before uploading"),
    "--fleet-mix": ("simulate", "fleet_mix", str, "lte-m | lte | wifi | mixed | ideal"),
    "--deadline-s": ("simulate", "deadline_s", float, "masked-stage deadline in modelled s (0: wait)"),
    "--seed": ("simulate", "seed", int, "seed of everything random"),
    "--uplink": ("simulate", "uplink", str, "secagg (fedlora) | dense_fp32 (standard baseline)"),
    "--step-s": ("simulate", "step_s", float, "modelled s per local step (0: measure here)"),
    "--executor": ("simulate", "executor", str, "local (default) | ray (Ray actors; the ray extra)"),
    "--ray-address": ("simulate", "ray_address", str, "auto | HOST:PORT (default: a local Ray instance)"),
    "--ray-workers": ("simulate", "ray_workers", int, "Ray actors, one trainer each (0: one per CPU)"),
    "--downlink-bits": ("simulate", "downlink_bits", int, "bits of the model delta sent down (0: full)"),
    "--local-steps": ("training", "local_steps", int, "local AdamW steps per round"),
    "--learning-rate": ("training", "learning_rate", float, "device learning rate"),
    "--keep-fraction": ("codec", "keep_fraction", float, "fraction of coordinates kept (shared random-k)"),
    "--quant-bits": ("codec", "quant_bits", int, "quantization bits q"),
    "--ring-bits": ("codec", "ring_bits", int, "SecAgg ring bits b"),
    "--mechanism": ("privacy", "mechanism", str, "skellam | gaussian | none"),
    "--noise-multiplier": ("privacy", "noise_multiplier", float, "DP noise multiplier z"),
    "--clip-norm": ("privacy", "clip_norm", float, "L2 clip C"),
    "--optimizer": ("optimizer", "name", str, "fedavg | fedadam | fedyogi"),
    "--server-lr": ("optimizer", "server_lr", float, "server learning rate"),
}
# deprecated flag -> its new name: read for one release, with a warning (docs/operations.md, "Upgrading")
RENAMED_FLAGS: dict[str, str] = {"--sparsity-fraction": "--keep-fraction"}


# One line in `fedlora --help` and this command's description (fl_transport/command.py).
HELP = "N virtual devices behind G gateways through the real code, with a network model (one process)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the flags; each overrides the same key of the TOML file."""
    parser.add_argument("--config", type=Path, default=None, help="simulate.toml (docs/simulate.md)")
    for flag, (_section, _key, kind, help_text) in FLAGS.items():
        parser.add_argument(flag, type=kind, default=None, help=help_text)
    for old, new in RENAMED_FLAGS.items():
        parser.add_argument(old, type=FLAGS[new][2], default=None, help=f"deprecated name of {new}")
    parser.add_argument("--out", type=Path, default=Path("fedlora-sim"), help="output directory")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="bundle cache (default ~/.cache/fedlora)"
    )


def overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """{section: {key: value}} of the flags that were given. A deprecated flag (`RENAMED_FLAGS`) counts as
    its new name, with a warning; giving both raises ConfigError."""
    out: dict[str, dict[str, Any]] = {}
    for flag, (section, key, _kind, _help) in FLAGS.items():
        value = getattr(args, _dest(flag))
        if value is not None:
            out.setdefault(section, {})[key] = value
    for old, new in RENAMED_FLAGS.items():
        value = getattr(args, _dest(old))
        if value is None:
            continue
        section, key = FLAGS[new][:2]
        if key in out.get(section, {}):
            raise ConfigError(f"give {new} only ({old} is its deprecated name)")
        logger.warning("%s is deprecated and will be removed in the next release; use %s", old, new)
        out.setdefault(section, {})[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    """Run the simulation, print the live table, write report.json and loss.png into --out."""
    from fedlora.demo.workspace import default_cache_dir
    from fedlora.simulate.config import SimConfig
    from fedlora.simulate.report import plot, table_header, table_row, write_report
    from fedlora.simulate.run import Simulation

    config = SimConfig.load(args.config, overrides(args))
    config.check_static()
    with tempfile.TemporaryDirectory(prefix="fedlora-sim-") as tmp:
        sim = Simulation(
            config, work_dir=Path(tmp), cache_dir=args.cache_dir or default_cache_dir(), progress=print
        )
        args.out.mkdir(parents=True, exist_ok=True)
        try:
            print(table_header(), flush=True)
            result = sim.run(on_round=lambda row: print(table_row(row), flush=True))
        finally:
            sim.close()
    report_path = write_report(args.out / "report.json", result.report)
    plot_path = plot(args.out / "loss.png", {config.simulate.uplink: result.report})
    final = result.report["final"]
    print(
        f"final eval loss {final['eval_loss']:.4f} (from {final['initial_eval_loss']:.4f}); modelled "
        f"{final['modelled_s']:.1f} s (compute-only bound {final['compute_only_s']:.1f} s); "
        f"uplink {final['uplink_bytes_total']:,} B; report {report_path}; plot {plot_path}"
    )
    failed = [r["round"] for r in result.report["rounds"] if r["survivors"] == 0]
    return 1 if failed else 0


def _dest(flag: str) -> str:
    """The argparse attribute of `flag`: `--keep-fraction` -> `keep_fraction`."""
    return flag.lstrip("-").replace("-", "_")
