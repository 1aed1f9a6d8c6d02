"""After the rounds: evaluate every global version on held-out text, write report.json, loss.png and the
final PEFT adapter."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aggregator_gateway.cloud.store import ModelStore
from fedlora.demo.completions import greedy_completions, pick_prompts
from fedlora.demo.configs import DemoSettings
from fedlora.demo.presets import DemoPreset
from fedlora.demo.report import evaluate_versions, perplexity, plot_losses, write_report
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
    preset: DemoPreset,
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
    rows = f"the first {preset.eval_max_rows} rows of " if preset.eval_max_rows else ""
    progress(
        f"[5/6] evaluating {len(versions)} global versions on {rows}{len(data.eval_records)} held-out "
        f"docstrings ({settings.tier} tier)"
    )
    losses = evaluate_versions(
        bundle, versions, data.eval_records, tier=settings.tier, max_rows=preset.eval_max_rows
    )
    rounds = [_round(index, r, losses, alive_at_task) for index, r in enumerate(completed, start=1)]
    progress("[6/6] writing report.json, loss.png and the PEFT adapter")
    final = _final(options, settings, rounds, losses)
    final_vector = store_dir / "final.safetensors"
    if final_vector.exists():
        from export.adapter import write_adapter

        adapter_dir = write_adapter(bundle, final_vector, out / "adapter")
        final["adapter_dir"] = str(adapter_dir)
        prompts = pick_prompts(data.eval_records, tier=settings.tier)
        final["completions"] = greedy_completions(
            bundle, adapter_dir, prompts, new_tokens=preset.completion_tokens
        )
    report = write_report(options.report or out / "report.json", config=config, rounds=rounds, final=final)
    plot = plot_losses(
        out / "loss.png", rounds, initial_eval_loss=losses[0], title=f"fedlora demo: {options.model}"
    )
    for line in summary_lines(rounds, final):
        progress(line)
    progress(f"report: {report}\nplot:   {plot}\nadapter: {final['adapter_dir']}")
    if code == 0 and len(rounds) != options.rounds:
        code = 1
    return code


def _round(
    index: int, r: Mapping[str, Any], losses: Mapping[int, float], alive_at_task: Mapping[int, int]
) -> dict[str, Any]:
    # The cloud never sees cohorts (it counts the devices that reported); the demo knows how many devices
    # were up when the task went out.
    online = max(alive_at_task.get(r["round"], r["reported"]), r["survivors"])
    loss = losses[r["new_version"]]
    return {
        **r,
        "round": index,
        "round_id": r["round"],
        "eval_loss": loss,
        "eval_perplexity": perplexity(loss),
        "online": online,
        "dropped": online - r["survivors"],
    }


def _final(
    options: Any, settings: DemoSettings, rounds: list[dict[str, Any]], losses: Mapping[int, float]
) -> dict[str, Any]:
    final_loss = rounds[-1]["eval_loss"] if rounds else losses[0]
    epsilon = rounds[-1]["epsilon"] if rounds else None
    return {
        "eval_loss": final_loss,
        "eval_perplexity": perplexity(final_loss),
        "initial_eval_loss": losses[0],
        "initial_eval_perplexity": perplexity(losses[0]),
        "relative_improvement": (losses[0] - final_loss) / losses[0] if losses[0] else None,
        "epsilon": epsilon,
        "delta": settings.delta,
        "privacy": privacy_statement(settings, epsilon, len(rounds)),
        "completions": [],
        "adapter_dir": None,
        "rounds_completed": len(rounds),
        "rounds_requested": options.rounds,
    }


def privacy_statement(settings: DemoSettings, epsilon: float | None, rounds: int) -> dict[str, Any]:
    """Which privacy the run gave: the tier, its mechanism and noise, and ε at δ (or that there is none)."""
    noisy = settings.mechanism != "none" and settings.noise_multiplier > 0
    if not noisy:
        text = (
            f"tier '{settings.tier}': no DP noise (updates clipped to L2 norm {settings.clip_norm:g}, "
            "secure aggregation hides each device's update from the gateway and cloud; "
            "no differential-privacy guarantee, epsilon = infinity)"
        )
    else:
        eps = "infinity" if epsilon is None else f"{epsilon:.2f}"
        text = (
            f"tier '{settings.tier}': user-level DP, epsilon = {eps} at delta = {settings.delta:g} after "
            f"{rounds} rounds ({settings.mechanism} noise, noise multiplier {settings.noise_multiplier:g} "
            f"on the cohort sum when at least {settings.min_survivors} devices survive, "
            f"clip norm {settings.clip_norm:g})"
        )
    return {
        "tier": settings.tier,
        "mechanism": settings.mechanism if noisy else "none",
        "noise_multiplier": settings.noise_multiplier if noisy else 0.0,
        "clip_norm": settings.clip_norm,
        "epsilon": epsilon if noisy else None,
        "delta": settings.delta,
        "statement": text,
    }


def summary_lines(rounds: list[dict[str, Any]], final: Mapping[str, Any]) -> list[str]:
    """The console summary: loss and perplexity per version, privacy, and the completions."""
    lines = ["", "version  held-out loss  perplexity  train loss  survivors  epsilon"]
    lines.append(
        f"base     {final['initial_eval_loss']:13.4f}  {final['initial_eval_perplexity']:10.2f}"
        f"  {'':10}  {'':9}  {'':7}"
    )
    for r in rounds:
        train = "" if r.get("train_loss") is None else f"{r['train_loss']:.4f}"
        eps = "inf" if r.get("epsilon") is None else f"{r['epsilon']:.2f}"
        lines.append(
            f"v{r['new_version']:<7} {r['eval_loss']:13.4f}  {r['eval_perplexity']:10.2f}  {train:>10}"
            f"  {r['survivors']:>4}/{r['online']:<4}  {eps:>7}"
        )
    change = final.get("relative_improvement")
    if change is not None:
        lines.append(
            f"held-out loss {final['initial_eval_loss']:.4f} -> {final['eval_loss']:.4f} "
            f"nats/token: {change * 100:.1f}% below the base model"
        )
    lines.append(f"privacy: {final['privacy']['statement']}")
    for index, item in enumerate(final.get("completions") or [], start=1):
        lines.append(f"prompt {index}: {item['prompt']!r}")
        lines.append(f"  before: {item['before']!r}")
        lines.append(f"  after:  {item['after']!r}")
    lines.append("")
    return lines
