"""Time to target: fedlora's preset against standard federated learning, side by side in one run.

    python bench/time_to_target.py [--model tiny-llama|smollm2-135m] [--bundle DIR] [--rounds R]
        [--devices N] [--gateways G] [--fleet-mix lte-m] [--local-steps S] [--out DIR]
        [--keep-fraction F --quant-bits Q --ring-bits B --optimizer NAME --server-lr LR --downlink-bits D]
        [--fedlora-bundle DIR] [--baseline-report FILE] [--fedlora-report FILE]

    python bench/time_to_target.py --model smollm2-135m     # the docs/benchmarks.md table

Unset shared flags come from the model's row of MODEL_DEFAULTS (tiny-llama's for other models). With
neither --bundle nor --fedlora-bundle, a model with a row in FEDLORA_PRESETS gets that preset's
levers, and one in FEDLORA_FFA_ALPHA an FFA-LoRA bundle of that alpha (96 for smollm2-135m) exported
once into the cache for fedlora.

Both presets run through `fedlora simulate` (fedlora/simulate/) with the same model, data shards,
devices and their network profiles, local steps, learning rate, dropouts and seeds; the modelled local
step time is measured once on this machine and used for both.

- baseline: what Flower's FedAvg with its defaults gives: each device sends its dense float32 LoRA Δ,
  the server averages (server learning rate 1), no clipping, no DP, no compression, no secure
  aggregation; the round waits for every selected device that did not vanish.
- fedlora: the model's preset (FEDLORA_PRESETS, else the simulator's codec defaults; flags override):
  shared random-k when keep_fraction < 1, rotation, stochastic quantization, bit-packed SecAgg+ masked
  updates through the gateways, the same privacy setting as the baseline (no DP noise), FedAvg unless
  --optimizer says otherwise; each new global version goes down as a quantized delta to the devices that
  hold the previous one (the cloud's default `downlink_bits`, or --downlink-bits; 0: full zstd models,
  docs/update-codec.md "Downlink").

Target = the held-out loss the baseline reaches after 90% of its total improvement over the R rounds.
Printed per preset: rounds to target, modelled wall-clock to target, its compute-only bound (the same
rounds with infinite bandwidth and zero latency), uplink bytes per device and round (measured frames),
total uplink and downlink bytes, final held-out loss, ε; then fedlora's ratios to the baseline.

--fedlora-bundle gives fedlora's preset its own bundle of the same base model (e.g. an FFA-LoRA export,
`fedlora export --ffa`: only B trains and travels); the baseline keeps standard LoRA. --baseline-report
and --fedlora-report reuse a preset's report.json written by an earlier run (--out) with the same
settings and step_s, so trying levers does not retrain the baseline; a report with other settings is
refused. A saved fedlora report from before `downlink_bits` existed counts as `downlink_bits = 0` (it sent
full models); the baseline's `downlink_bits` is not compared (it always sends float32 models).
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

from fedlora.demo.workspace import BundleSpec, default_cache_dir, ensure_bundle  # noqa: E402
from fedlora.simulate.config import SimConfig  # noqa: E402
from fedlora.simulate.report import config_dict, plot, write_report  # noqa: E402
from fedlora.simulate.run import SEQ_LEN, Simulation  # noqa: E402
from fl_protocol.manifest import load_manifest  # noqa: E402

TARGET_FRACTION = 0.9
# Shared settings per model (both presets); flags override each.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny-llama": {
        "devices": 8,
        "gateways": 2,
        "rounds": 5,
        "local_steps": 4,
        "batch_size": 8,
        "learning_rate": 5e-3,
        "eval_records": 64,
    },
    # docs/benchmarks.md, "smollm2-135m": 16 local steps let compute dominate the (small) bytes
    "smollm2-135m": {
        "devices": 4,
        "gateways": 1,
        "rounds": 4,
        "local_steps": 16,
        "batch_size": 2,
        "learning_rate": 1e-3,
        "eval_records": 16,
    },
}
# fedlora's preset per model, used when neither --bundle nor --fedlora-bundle is given: its lever flags,
# and (FEDLORA_FFA_ALPHA) an FFA-LoRA export with that alpha for fedlora to train (the baseline keeps
# standard LoRA, alpha 16). The smollm2 rows reached the target in 0.45x the baseline's modelled time.
FEDLORA_FFA_ALPHA: dict[str, float] = {"smollm2-135m": 96.0}
FEDLORA_PRESETS: dict[str, dict[str, Any]] = {
    "smollm2-135m": {
        "clip_norm": 10.0,
        "keep_fraction": 1.0,
        "quant_bits": 7,
        "ring_bits": 0,
        "server_lr": 1.0,
        "downlink_bits": 8,
    },
}


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


def check_same_base(baseline_bundle: Path, fedlora_bundle: Path) -> None:
    """Refuse a fedlora bundle of another base model than the baseline's (BundleError / ValueError)."""
    base, ours = (load_manifest(b, verify=False).raw["model"] for b in (baseline_bundle, fedlora_bundle))
    if base["base_weights_sha256"] != ours["base_weights_sha256"]:
        raise ValueError(
            f"--fedlora-bundle {fedlora_bundle} has other base weights than {baseline_bundle}: "
            "export both from the same model"
        )


def reused_report(name: str, path: Path, config: SimConfig) -> dict[str, Any]:
    """A saved report.json of preset `name`, if it was made with `config` (ValueError otherwise).

    Its step_s must equal the configured one (set --step-s to the saved run's value); a saved run that
    measured its step_s ([simulate] step_s = 0) matches a configuration that fixes the same value. The
    baseline's [codec] and [secagg] sections are not compared (the dense_fp32 baseline uses neither);
    fedlora's ring_bits = 0 ("auto") is compared as resolved for the saved model dimension.
    """
    report: dict[str, Any] = json.loads(Path(path).read_text())
    saved = report["config"]
    dimension = saved["model_dimension"]
    config = config.with_ring_for(dimension)
    expected = config_dict(config, dimension=dimension, step_s=config.simulate.step_s)
    dense = config.simulate.uplink == "dense_fp32"
    ignored = ("codec", "secagg") if dense else ()
    saved_simulate = {"downlink_bits": 0, **saved.get("simulate", {})}  # older reports: full models
    if dense:
        saved_simulate["downlink_bits"] = expected["simulate"]["downlink_bits"]
    if saved_simulate.get("step_s") == 0.0 and saved.get("step_s") == config.simulate.step_s:
        saved_simulate["step_s"] = config.simulate.step_s  # measured then, fixed to that value now
    saved = {**saved, "simulate": saved_simulate}
    differs = sorted(k for k, v in expected.items() if k not in ignored and saved.get(k) != v)
    if differs:
        raise ValueError(f"--{name}-report {path} was made with other settings ({', '.join(differs)})")
    return report


def run_presets(
    configs: dict[str, SimConfig],
    *,
    work_dir: Path,
    cache_dir: Path,
    progress: Any = print,
    reports: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run each preset not already in `reports`; the first measures the step time, the others reuse it."""
    reports = dict(reports or {})
    step_s = next((r["config"]["step_s"] for r in reports.values()), 0.0)
    for name, config in configs.items():
        if name in reports:
            continue
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
    return {name: reports[name] for name in configs}


def _flags() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama", help="tiny-llama | smollm2-135m")
    parser.add_argument("--bundle", type=Path, default=None, help="an exported bundle instead of --model")
    parser.add_argument("--config", type=Path, default=None, help="simulate.toml shared by both presets")
    shared = parser.add_argument_group("shared settings (default: the model's row of MODEL_DEFAULTS)")
    shared.add_argument("--devices", type=int, default=None)
    shared.add_argument("--gateways", type=int, default=None)
    shared.add_argument("--rounds", type=int, default=None)
    shared.add_argument("--local-steps", type=int, default=None)
    shared.add_argument("--batch-size", type=int, default=None)
    shared.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--fleet-mix", default="lte-m")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-s", type=float, default=0.0, help="modelled s per step (0: measure)")
    parser.add_argument("--eval-records", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write both reports and loss.png here")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument(
        "--baseline-report",
        type=Path,
        default=None,
        help="reuse this baseline.json (same settings, --step-s)",
    )
    parser.add_argument(
        "--fedlora-report", type=Path, default=None, help="reuse this fedlora.json (same settings, --step-s)"
    )
    lever = parser.add_argument_group(
        "fedlora preset levers (default: the model's row of FEDLORA_PRESETS, else the simulator's defaults)"
    )
    lever.add_argument("--keep-fraction", type=float, default=None)
    lever.add_argument("--quant-bits", type=int, default=None)
    lever.add_argument("--ring-bits", type=int, default=None)
    lever.add_argument("--no-error-feedback", action="store_true")
    lever.add_argument("--clip-norm", type=float, default=None, help="C: bounds the quantization scale")
    lever.add_argument("--optimizer", default=None, help="fedavg | fedadam | fedyogi")
    lever.add_argument("--server-lr", type=float, default=None)
    lever.add_argument("--fedlora-local-steps", type=int, default=None)
    lever.add_argument("--deadline-s", type=float, default=None)
    lever.add_argument(
        "--downlink-bits", type=int, default=None, help="model delta bits (default: the cloud's; 0: full)"
    )
    lever.add_argument("--fedlora-bundle", type=Path, default=None, help="e.g. an FFA-LoRA export")
    return parser


def apply_model_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill every flag left unset from the model's rows of MODEL_DEFAULTS and FEDLORA_PRESETS."""
    filled = vars(args).copy()
    defaults = {**MODEL_DEFAULTS.get(args.model, MODEL_DEFAULTS["tiny-llama"])}
    if args.bundle is None and args.fedlora_bundle is None:
        defaults.update(FEDLORA_PRESETS.get(args.model, {}))
    for key, value in defaults.items():
        if filled.get(key) is None:
            filled[key] = value
    return argparse.Namespace(**filled)


def fedlora_bundle(args: argparse.Namespace, cache_dir: Path) -> Path | None:
    """The FFA bundle the model's fedlora preset trains (exported once into the cache), else
    --fedlora-bundle (None: fedlora uses the baseline's bundle)."""
    alpha = FEDLORA_FFA_ALPHA.get(args.model)
    if args.fedlora_bundle is not None or args.bundle is not None or alpha is None:
        return args.fedlora_bundle
    spec = BundleSpec(model=args.model, seq_len=SEQ_LEN.get(args.model, 64), ffa=True, lora_alpha=alpha)
    return ensure_bundle(spec, cache_dir, print)


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
        "privacy": {"clip_norm": args.clip_norm},
        "optimizer": {"name": args.optimizer, "server_lr": args.server_lr},
        "training": {"local_steps": args.fedlora_local_steps},
        "simulate": {
            "deadline_s": args.deadline_s,
            "downlink_bits": args.downlink_bits,
            "bundle_dir": None if args.fedlora_bundle is None else str(args.fedlora_bundle),
        },
    }
    return {n: {k: v for k, v in t.items() if v is not None} for n, t in changes.items()}


def build_configs(args: argparse.Namespace) -> dict[str, SimConfig]:
    """Both presets from the flags (the shared settings plus fedlora's levers), statically checked."""
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
    if args.fedlora_bundle is not None and args.bundle is not None:
        check_same_base(args.bundle, args.fedlora_bundle)
    return configs


def main(argv: list[str] | None = None) -> int:
    """Run both presets (or reuse saved reports) and print the comparison table."""
    args = apply_model_defaults(_flags().parse_args(argv))
    args.fedlora_bundle = fedlora_bundle(args, args.cache_dir or default_cache_dir())
    configs = build_configs(args)
    given = {"baseline": args.baseline_report, "fedlora": args.fedlora_report}
    saved = {n: reused_report(n, path, configs[n]) for n, path in given.items() if path is not None}
    with tempfile.TemporaryDirectory(prefix="fedlora-ttt-") as tmp:
        reports = run_presets(
            configs, work_dir=Path(tmp), cache_dir=args.cache_dir or default_cache_dir(), reports=saved
        )
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
        f"downlink_bits {fed['simulate']['downlink_bits']}, "
        f"clip_norm {fed['privacy']['clip_norm']}, bundle {fed['simulate']['bundle_dir'] or args.model}, "
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
