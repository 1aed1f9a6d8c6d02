"""Time to target: fedlora's preset against standard federated learning, side by side in one run.

    python bench/time_to_target.py [--model tiny-llama|smollm2-135m] [--bundle DIR] [--rounds 5]
        [--devices 8] [--gateways 2] [--fleet-mix lte-m] [--local-steps 4] [--out DIR]
        [--keep-fraction F --quant-bits Q --ring-bits B --optimizer NAME --server-lr LR]

Both presets run through `fedlora simulate` (fedlora/simulate/) with the same model, data shards,
devices and their network profiles, local steps, learning rate, dropouts and seeds; the modelled local
step time is measured once on this machine and used for both.

- baseline: what Flower's FedAvg with its defaults gives: each device sends its dense float32 LoRA Δ,
  the server averages (server learning rate 1), no clipping, no DP, no compression, no secure
  aggregation; the round waits for every selected device that did not vanish.
- fedlora: the default preset (the demo's codec settings unless overridden by flags): shared random-k,
  rotation, stochastic quantization, bit-packed SecAgg+ masked updates through the gateways, the same
  privacy setting as the baseline (no DP noise), FedAvg unless --optimizer says otherwise.

Target = the held-out loss the baseline reaches after 90% of its total improvement over the R rounds.
Printed per preset: rounds to target, modelled wall-clock to target, its compute-only bound (the same
rounds with infinite bandwidth and zero latency), uplink bytes per device and round (measured frames),
total uplink and downlink bytes, final held-out loss, ε; then fedlora's ratios to the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedlora.demo.workspace import default_cache_dir  # noqa: E402
from fedlora.simulate.config import SimConfig  # noqa: E402
from fedlora.simulate.report import plot, write_report  # noqa: E402
from fedlora.simulate.run import Simulation  # noqa: E402

TARGET_FRACTION = 0.9


@dataclass(frozen=True)
class Summary:
    """One preset's numbers against the target."""

    name: str
    rounds_to_target: int | None
    seconds_to_target: float | None
    compute_only_to_target: float | None
    uplink_per_device_round: int
    uplink_total: int
    downlink_total: int
    final_loss: float
    epsilon: float | None


def presets(base: SimConfig, fedlora_changes: dict[str, dict[str, Any]]) -> dict[str, SimConfig]:
    """The baseline and fedlora's preset derived from one shared configuration."""
    baseline = base.with_changes(
        simulate={"uplink": "dense_fp32", "deadline_s": 0.0},
        privacy={"mechanism": "none"},
        optimizer={"name": "fedavg", "server_lr": 1.0},
    )
    changes = {n: dict(t) for n, t in fedlora_changes.items()}
    changes.setdefault("simulate", {})["uplink"] = "secagg"
    changes.setdefault("privacy", {})["mechanism"] = "none"
    fedlora = base.with_changes(**changes)
    return {"baseline": baseline, "fedlora": fedlora}


def target_loss(report: dict[str, Any]) -> float:
    """Initial loss minus 90% of the run's total improvement over its rounds."""
    initial, final = report["final"]["initial_eval_loss"], report["rounds"][-1]["eval_loss"]
    return initial - TARGET_FRACTION * (initial - final)


def summarize(name: str, report: dict[str, Any], target: float) -> Summary:
    """Rounds and modelled seconds until the held-out loss first reaches `target`."""
    rows = report["rounds"]
    hit = next((r for r in rows if r["eval_loss"] <= target), None)
    upto = rows if hit is None else rows[: hit["round"]]
    uplink = [r["uplink_bytes_per_device"] for r in rows]
    return Summary(
        name=name,
        rounds_to_target=None if hit is None else hit["round"],
        seconds_to_target=None if hit is None else hit["modelled_elapsed_s"],
        compute_only_to_target=None if hit is None else sum(r["compute_only_s"] for r in upto),
        uplink_per_device_round=round(sum(uplink) / len(uplink)),
        uplink_total=report["final"]["uplink_bytes_total"],
        downlink_total=report["final"]["downlink_bytes_total"],
        final_loss=report["final"]["eval_loss"],
        epsilon=report["final"]["epsilon"],
    )


def _fmt(value: float | int | None, spec: str) -> str:
    return "not reached" if value is None else format(value, spec)


def table(summaries: list[Summary], target: float) -> str:
    """Markdown table of both presets plus fedlora's ratios to the baseline."""
    lines = [
        f"target held-out loss {target:.4f} (baseline: {TARGET_FRACTION:.0%} of its improvement)",
        "",
        "| preset | rounds to target | modelled s to target | compute-only s | uplink B/device/round "
        "| uplink B total | downlink B total | final loss | ε |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        eps = "none (no DP)" if s.epsilon is None else f"{s.epsilon:.2f}"
        lines.append(
            f"| {s.name} | {_fmt(s.rounds_to_target, 'd')} | {_fmt(s.seconds_to_target, '.1f')} | "
            f"{_fmt(s.compute_only_to_target, '.1f')} | {s.uplink_per_device_round:,} | {s.uplink_total:,} | "
            f"{s.downlink_total:,} | {s.final_loss:.4f} | {eps} |"
        )
    base, ours = summaries[0], summaries[1]
    time_ratio = (
        f"{ours.seconds_to_target / base.seconds_to_target:.2f}x"
        if ours.seconds_to_target is not None and base.seconds_to_target
        else "n/a (target not reached)"
    )
    bound = (
        f"{ours.seconds_to_target / ours.compute_only_to_target:.2f}x"
        if ours.seconds_to_target is not None and ours.compute_only_to_target
        else "n/a"
    )
    lines += [
        "",
        f"fedlora / baseline: wall-clock to target {time_ratio}; uplink per device and round "
        f"{base.uplink_per_device_round / ours.uplink_per_device_round:.1f}x fewer bytes; final loss "
        f"{(ours.final_loss / base.final_loss - 1) * 100:+.2f}%; fedlora vs its compute-only bound {bound}",
    ]
    return "\n".join(lines)


def run_presets(
    configs: dict[str, SimConfig], *, work_dir: Path, cache_dir: Path, progress: Any = print
) -> dict[str, dict[str, Any]]:
    """Run each preset; the first one measures the local step time, the others reuse it."""
    reports: dict[str, dict[str, Any]] = {}
    step_s = 0.0
    for name, config in configs.items():
        if step_s:
            config = config.with_changes(simulate={"step_s": step_s})
        progress(f"running preset {name} ...")
        sim = Simulation(config, work_dir=work_dir / name, cache_dir=cache_dir, progress=progress)
        try:
            report = sim.run(
                on_round=lambda row, n=name: progress(
                    f"  {n} round {row['round']}: eval {row['eval_loss']:.4f}"
                )
            ).report
        finally:
            sim.close()
        step_s = report["config"]["step_s"]
        reports[name] = report
    return reports


def _flags() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama", help="tiny-llama | smollm2-135m")
    parser.add_argument("--bundle", type=Path, default=None, help="an exported bundle instead of --model")
    parser.add_argument("--config", type=Path, default=None, help="simulate.toml shared by both presets")
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=5e-3)
    parser.add_argument("--fleet-mix", default="lte-m")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-s", type=float, default=0.0, help="modelled s per step (0: measure)")
    parser.add_argument("--eval-records", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="write both reports and loss.png here")
    parser.add_argument("--cache-dir", type=Path, default=None)
    lever = parser.add_argument_group("fedlora preset levers (default: the simulator's defaults)")
    lever.add_argument("--keep-fraction", type=float, default=None)
    lever.add_argument("--quant-bits", type=int, default=None)
    lever.add_argument("--ring-bits", type=int, default=None)
    lever.add_argument("--no-error-feedback", action="store_true")
    lever.add_argument("--optimizer", default=None, help="fedavg | fedadam | fedyogi")
    lever.add_argument("--server-lr", type=float, default=None)
    lever.add_argument("--fedlora-local-steps", type=int, default=None)
    lever.add_argument("--deadline-s", type=float, default=None)
    return parser


def lever_changes(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The fedlora preset's overrides from the lever flags."""
    codec = {
        "keep_fraction": args.keep_fraction,
        "quant_bits": args.quant_bits,
        "ring_bits": args.ring_bits,
    }
    if args.no_error_feedback:
        codec["error_feedback"] = False
    changes: dict[str, dict[str, Any]] = {
        "codec": codec,
        "optimizer": {"name": args.optimizer, "server_lr": args.server_lr},
        "training": {"local_steps": args.fedlora_local_steps},
        "simulate": {"deadline_s": args.deadline_s},
    }
    return {n: {k: v for k, v in t.items() if v is not None} for n, t in changes.items()}


def main(argv: list[str] | None = None) -> int:
    """Run both presets and print the comparison table."""
    args = _flags().parse_args(argv)
    shared = {
        "simulate": {
            "model": args.model,
            "bundle_dir": None if args.bundle is None else str(args.bundle),
            "devices": args.devices,
            "gateways": args.gateways,
            "rounds": args.rounds,
            "fleet_mix": args.fleet_mix,
            "dropout": args.dropout,
            "seed": args.seed,
            "step_s": args.step_s,
            "eval_records": args.eval_records,
        },
        "training": {
            "local_steps": args.local_steps,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
        },
    }
    configs = presets(SimConfig.load(args.config, shared), lever_changes(args))
    for config in configs.values():
        config.check_static()
    with tempfile.TemporaryDirectory(prefix="fedlora-ttt-") as tmp:
        reports = run_presets(configs, work_dir=Path(tmp), cache_dir=args.cache_dir or default_cache_dir())
    target = target_loss(reports["baseline"])
    summaries = [summarize(name, report, target) for name, report in reports.items()]
    load = os.getloadavg()
    print(
        f"\n{date.today().isoformat()}  {platform.machine()}  {os.cpu_count()} CPU cores  "
        f"load {load[0]:.2f}  "
        f"model={args.model} devices={args.devices} gateways={args.gateways} rounds={args.rounds} "
        f"fleet_mix={args.fleet_mix} dropout={args.dropout} local_steps={args.local_steps} "
        f"step_s={reports['baseline']['config']['step_s']:.3f}"
    )
    fed = reports["fedlora"]["config"]
    print(
        f"fedlora preset: codec {json.dumps(fed['codec'])}, optimizer {json.dumps(fed['optimizer'])}, "
        f"local_steps {fed['training']['local_steps']}, deadline_s {fed['simulate']['deadline_s']}, "
        "privacy: none in both presets (same setting)"
    )
    print(table(summaries, target))
    if args.out is not None:
        for name, report in reports.items():
            write_report(args.out / f"{name}.json", report)
        plot(args.out / "loss.png", reports)
    return 0


if __name__ == "__main__":
    sys.exit(main())
