"""`fedlora simulate` outputs: the live per-round table, report.json and the plot.

report.json keeps the demo's stable keys (fedlora/demo/report.py: config, rounds[] with round, online,
survivors, dropped, train_loss, eval_loss, eval_perplexity, uplink_bytes_per_device, dense_fp32_bytes,
epsilon, delta,
seconds; final) and adds the modelled times and byte totals. In a simulation `seconds` is the round's
MODELLED wall-clock (docs/simulate.md); the time this machine spent simulating it is `sim_seconds`.
Byte counts are measured sizes of the frames the devices sent (uplink) and of the model frames they
downloaded: the delta frame for a device that held the previous version, else the full model frame
(fedlora/simulate/downlink.py).
With a fixed `step_s` the report depends only on the configuration and the seed; `sim_seconds` and the
`measured` block are the only clock readings in it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedlora.demo.report import ROUND_KEYS, perplexity

if TYPE_CHECKING:
    from fedlora.simulate.config import SimConfig
    from fedlora.simulate.rounds import RoundOutcome, RoundRunner

CLOCK_KEYS = ("sim_seconds",)  # per-round keys that read this machine's clock


def _mean(values: Sequence[int]) -> int:
    return round(sum(values) / len(values)) if values else 0


def config_dict(config: SimConfig, *, dimension: int, step_s: float) -> dict[str, Any]:
    """The simulation's settings, section by section, plus what was derived (dimension, step_s)."""
    out: dict[str, Any] = {}
    for name in ("simulate", "training", "codec", "privacy", "secagg", "optimizer"):
        section = dataclasses.asdict(getattr(config, name))
        out[name] = {k: (str(v) if isinstance(v, Path) else v) for k, v in section.items()}
    out["model_dimension"] = dimension
    out["step_s"] = step_s
    return out


def round_row(
    outcome: RoundOutcome, eval_loss: float, *, dimension: int, elapsed_s: float, delta: float
) -> dict[str, Any]:
    """One round's report entry (stable keys first)."""
    return {
        "round": outcome.round_id,
        "online": outcome.online,
        "survivors": outcome.survivors,
        "dropped": outcome.online - outcome.survivors,
        "train_loss": outcome.train_loss,
        "eval_loss": eval_loss,
        "eval_perplexity": perplexity(eval_loss),
        "uplink_bytes_per_device": _mean(outcome.update_frame_bytes),
        "dense_fp32_bytes": 4 * dimension,
        "epsilon": outcome.epsilon,
        "delta": delta if outcome.epsilon is not None else None,
        "seconds": outcome.modelled_s,
        "compute_only_s": outcome.compute_only_s,
        "modelled_elapsed_s": elapsed_s,
        "control_bytes_per_device": _mean(outcome.control_frame_bytes),
        "downlink_bytes_per_device": _mean(outcome.download_bytes or [outcome.model_bytes]),
        "downlink_full_bytes": outcome.model_bytes,
        "downlink_delta_bytes": outcome.delta_model_bytes,
        "uplink_bytes_total": sum(outcome.update_frame_bytes) + sum(outcome.control_frame_bytes),
        "downlink_bytes_total": sum(outcome.download_bytes),
        "aborted": outcome.aborted,
        "sim_seconds": outcome.seconds,
    }


def build_report(
    config: SimConfig,
    dimension: int,
    rounds: Sequence[RoundOutcome],
    eval_losses: Sequence[float],
    runner: RoundRunner,
    *,
    step_s: float,
) -> dict[str, Any]:
    """report.json's content for the rounds played so far (eval_losses[0] is the initial model's)."""
    rows, elapsed = [], 0.0
    for outcome, loss in zip(rounds, eval_losses[1:], strict=False):
        elapsed += outcome.modelled_s
        rows.append(
            round_row(outcome, loss, dimension=dimension, elapsed_s=elapsed, delta=config.privacy.delta)
        )
    final = {
        "eval_loss": eval_losses[-1],
        "eval_perplexity": perplexity(eval_losses[-1]),
        "initial_eval_loss": eval_losses[0],
        "epsilon": rows[-1]["epsilon"] if rows else None,
        "adapter_dir": None,
        "modelled_s": elapsed,
        "compute_only_s": sum(r["compute_only_s"] for r in rows),
        "uplink_bytes_total": sum(r["uplink_bytes_total"] for r in rows),
        "downlink_bytes_total": sum(r["downlink_bytes_total"] for r in rows),
    }
    return {"config": config_dict(config, dimension=dimension, step_s=step_s), "rounds": rows, "final": final}


def without_clock_readings(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report minus what reads this machine's clock (for reproducibility checks)."""
    rounds = [{k: v for k, v in r.items() if k not in CLOCK_KEYS} for r in report["rounds"]]
    return {k: v for k, v in report.items() if k not in ("measured", "rounds")} | {"rounds": rounds}


def table_header() -> str:
    """Header of the live table."""
    return "round  surv  eval_loss  uplink B/dev  model s/round  elapsed s  epsilon"


def table_row(row: Mapping[str, Any]) -> str:
    """One live-table line."""
    eps = "-" if row["epsilon"] is None else f"{row['epsilon']:.3f}"
    return (
        f"{row['round']:>5}  {row['survivors']:>2}/{row['online']:<2} {row['eval_loss']:>9.4f}  "
        f"{row['uplink_bytes_per_device']:>12,}  {row['seconds']:>13.1f}  "
        f"{row['modelled_elapsed_s']:>9.1f}  {eps:>7}"
    )


def write_report(path: Path, report: Mapping[str, Any]) -> Path:
    """report.json, every stable round key present."""
    rounds = [{**{k: r.get(k) for k in ROUND_KEYS}, **r} for r in report["rounds"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**report, "rounds": rounds}, indent=2) + "\n")
    return path


def plot(path: Path, reports: Mapping[str, Mapping[str, Any]]) -> Path:
    """Held-out loss against modelled wall-clock (left) and against rounds (right), one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_time, by_round) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for label, report in reports.items():
        rows = report["rounds"]
        losses = [report["final"]["initial_eval_loss"]] + [r["eval_loss"] for r in rows]
        by_time.plot([0.0] + [r["modelled_elapsed_s"] for r in rows], losses, marker="o", label=label)
        by_round.plot(range(len(losses)), losses, marker="o", label=label)
    by_time.set_xlabel("modelled wall-clock (s)")
    by_round.set_xlabel("round")
    for ax in (by_time, by_round):
        ax.set_ylabel("held-out loss (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
