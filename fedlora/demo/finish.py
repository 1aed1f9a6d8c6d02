"""After the rounds: evaluate every global version on held-out text, write report.json, loss.png and the
final PEFT adapter."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aggregator_gateway.cloud.store import ModelStore
from fedlora.demo.configs import DemoSettings
from fedlora.demo.report import evaluate_versions, plot_losses, write_report
from fedlora.demo.workspace import DemoData
from fl_protocol.manifest import load_manifest


def finish_demo(
    *,
    options: Any,
    out: Path,
    bundle: Path,
    store_dir: Path,
    data: DemoData,
    settings: DemoSettings,
    code: int,
    progress: Callable[[str], None],
    config: Mapping[str, Any],
    alive_at_task: Mapping[int, int],
) -> int:
    """Evaluate, report and export; returns `code`, or 1 if not every round completed."""
    rounds_file = store_dir / "rounds.json"
    records = json.loads(rounds_file.read_text()) if rounds_file.exists() else []
    if isinstance(records, dict):
        records = records.get("rounds", [])
    completed = [r for r in records if r.get("state") == "completed"]
    manifest = load_manifest(bundle)
    store = ModelStore(store_dir, bundle_id=manifest.bundle_id)
    try:
        versions = {0: store.load(0), **{r["new_version"]: store.load(r["new_version"]) for r in completed}}
    finally:
        store.close()
    progress(
        f"[5/6] evaluating {len(versions)} global versions on {len(data.eval_records)} held-out docstrings"
    )
    losses = evaluate_versions(bundle, versions, data.eval_records, tier=settings.tier)
    rounds = []
    for index, r in enumerate(completed, start=1):
        # The cloud never sees cohorts; the demo knows how many devices were up when the task went out.
        selected = max(alive_at_task.get(r["round"], r["selected"]), r["survivors"])
        rounds.append(
            {
                **r,
                "round": index,
                "round_id": r["round"],
                "eval_loss": losses[r["new_version"]],
                "selected": selected,
                "dropped": selected - r["survivors"],
            }
        )
    adapter_dir = out / "adapter"
    final: dict[str, Any] = {
        "eval_loss": rounds[-1]["eval_loss"] if rounds else losses[0],
        "initial_eval_loss": losses[0],
        "epsilon": rounds[-1]["epsilon"] if rounds else None,
        "delta": settings.delta,
        "adapter_dir": None,
        "rounds_completed": len(rounds),
        "rounds_requested": options.rounds,
    }
    progress("[6/6] writing report.json, loss.png and the PEFT adapter")
    final_vector = store_dir / "final.safetensors"
    if final_vector.exists():
        from export.adapter import write_adapter

        write_adapter(bundle, final_vector, adapter_dir)
        final["adapter_dir"] = str(adapter_dir)
    report = write_report(options.report or out / "report.json", config=config, rounds=rounds, final=final)
    plot = plot_losses(out / "loss.png", rounds, initial_eval_loss=losses[0])
    progress(
        f"held-out eval loss: {losses[0]:.4f} (v0) -> {final['eval_loss']:.4f} after {len(rounds)} rounds"
    )
    progress(f"report: {report}\nplot:   {plot}\nadapter: {final['adapter_dir']}")
    if code == 0 and len(rounds) != options.rounds:
        code = 1
    return code
