"""bench/time_to_target.py on tiny-llama (issue 10, item 4): both presets run in one go through the
simulator with the same devices and seeds, the target comes from the baseline, and the table carries
both presets and the ratios."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.time_to_target import presets, summarize, table, target_loss  # noqa: E402
from fedlora.simulate.config import SimConfig  # noqa: E402


def _report(losses: list[float], seconds: list[float], uplink: int) -> dict:
    rows, elapsed = [], 0.0
    for i, (loss, s) in enumerate(zip(losses[1:], seconds, strict=True), start=1):
        elapsed += s
        rows.append(
            {
                "round": i,
                "eval_loss": loss,
                "modelled_elapsed_s": elapsed,
                "compute_only_s": 1.0,
                "uplink_bytes_per_device": uplink,
            }
        )
    final = {
        "initial_eval_loss": losses[0],
        "eval_loss": losses[-1],
        "uplink_bytes_total": 10 * uplink,
        "downlink_bytes_total": 5,
        "epsilon": None,
    }
    return {"rounds": rows, "final": final}


def test_target_and_time_to_target_arithmetic() -> None:
    baseline = _report([5.0, 4.5, 4.2, 4.0], [10.0, 10.0, 10.0], 1000)
    target = target_loss(baseline)
    assert target == pytest.approx(5.0 - 0.9 * 1.0)
    ours = summarize("fedlora", _report([5.0, 4.6, 4.05, 4.01], [2.0, 2.0, 2.0], 100), target)
    theirs = summarize("baseline", baseline, target)
    assert (theirs.rounds_to_target, theirs.seconds_to_target) == (3, 30.0)
    assert (ours.rounds_to_target, ours.seconds_to_target, ours.compute_only_to_target) == (2, 4.0, 2.0)
    text = table([theirs, ours], target)
    assert "0.13x" in text and "10.0x fewer bytes" in text
    never = summarize("slow", _report([5.0, 4.9, 4.8, 4.7], [1.0, 1.0, 1.0], 100), target)
    assert never.rounds_to_target is None and "not reached" in table([theirs, never], target)


def test_presets_share_everything_but_the_uplink_path() -> None:
    base = SimConfig.load(None, {"simulate": {"devices": 6, "seed": 3}, "training": {"local_steps": 3}})
    configs = presets(base, {"codec": {"quant_bits": 8, "ring_bits": 16}})
    baseline, fedlora = configs["baseline"], configs["fedlora"]
    assert (baseline.simulate.uplink, fedlora.simulate.uplink) == ("dense_fp32", "secagg")
    assert baseline.privacy.mechanism == fedlora.privacy.mechanism == "none"
    assert baseline.training == fedlora.training and fedlora.codec.quant_bits == 8
    for name in ("devices", "gateways", "rounds", "seed", "fleet_mix", "dropout"):
        assert getattr(baseline.simulate, name) == getattr(fedlora.simulate, name)


def test_a_saved_baseline_is_reused_only_with_the_same_settings(tmp_path: Path) -> None:
    from bench.time_to_target import reused_report
    from fedlora.simulate.report import config_dict

    base = SimConfig.load(None, {"simulate": {"devices": 4, "gateways": 1, "step_s": 1.5}})
    baseline = presets(base, {})["baseline"]
    saved = {"config": config_dict(baseline, dimension=3584, step_s=1.5), "rounds": [], "final": {}}
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(saved))
    assert reused_report("baseline", path, baseline)["config"]["step_s"] == 1.5
    other = presets(base.with_changes(training={"local_steps": 7}), {})["baseline"]
    with pytest.raises(ValueError, match=r"other settings \(training\)"):
        reused_report("baseline", path, other)
    faster = presets(base.with_changes(simulate={"step_s": 1.0}), {})["baseline"]
    with pytest.raises(ValueError, match=r"other settings \(simulate, step_s\)"):
        reused_report("baseline", path, faster)


def test_a_baseline_that_measured_its_step_time_is_reused_with_that_step_time_fixed(tmp_path: Path) -> None:
    from bench.time_to_target import reused_report
    from fedlora.simulate.report import config_dict

    base = SimConfig.load(None, {"simulate": {"devices": 4, "gateways": 1}})  # step_s 0: measured
    measured = presets(base, {})["baseline"]
    saved = {"config": config_dict(measured, dimension=3584, step_s=1.25), "rounds": [], "final": {}}
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(saved))
    fixed = presets(base.with_changes(simulate={"step_s": 1.25}), {})["baseline"]
    assert reused_report("baseline", path, fixed)["config"]["step_s"] == 1.25
    other = presets(base.with_changes(simulate={"step_s": 1.5}), {})["baseline"]
    with pytest.raises(ValueError, match=r"other settings \(simulate, step_s\)"):
        reused_report("baseline", path, other)


def test_the_fedlora_bundle_lever_changes_only_fedloras_bundle(tmp_path: Path) -> None:
    from bench.time_to_target import _flags, lever_changes

    args = _flags().parse_args(["--fedlora-bundle", str(tmp_path), "--quant-bits", "7"])
    base = SimConfig.load(None, {"simulate": {"devices": 4, "gateways": 1}})
    configs = presets(base, lever_changes(args))
    assert configs["baseline"].simulate.bundle_dir is None
    assert configs["fedlora"].simulate.bundle_dir == tmp_path and configs["fedlora"].codec.quant_bits == 7


def test_the_downlink_lever_and_reports_saved_before_it(tmp_path: Path) -> None:
    """--downlink-bits reaches fedlora's preset only; a saved report without the key sent full models (0),
    and the baseline's value is never compared (it always downloads float32 models)."""
    from bench.time_to_target import _flags, lever_changes, reused_report
    from fedlora.simulate.report import config_dict

    base = SimConfig.load(None, {"simulate": {"devices": 4, "gateways": 1, "step_s": 1.5}})
    assert presets(base, {})["fedlora"].simulate.downlink_bits == 8  # the cloud's default
    configs = presets(base, lever_changes(_flags().parse_args(["--downlink-bits", "4"])))
    assert configs["fedlora"].simulate.downlink_bits == 4
    for name, config in configs.items():
        resolved = config.with_ring_for(3584)  # ring_bits 0 ("auto") as the saved run resolved it
        saved = {"config": config_dict(resolved, dimension=3584, step_s=1.5), "rounds": [], "final": {}}
        del saved["config"]["simulate"]["downlink_bits"]  # written before the key existed
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(saved))
        if name == "baseline":
            assert reused_report(name, path, config)["config"]["step_s"] == 1.5
        else:
            with pytest.raises(ValueError, match=r"other settings \(simulate\)"):
                reused_report(name, path, config)  # it sent full models, the preset sends 4-bit deltas
            full = config.with_changes(simulate={"downlink_bits": 0})
            assert reused_report(name, path, full)["config"]["step_s"] == 1.5


def test_unset_flags_take_the_models_defaults_and_fedloras_preset() -> None:
    from bench.time_to_target import _flags, apply_model_defaults

    args = apply_model_defaults(_flags().parse_args(["--model", "smollm2-135m", "--rounds", "2"]))
    assert (args.rounds, args.local_steps, args.batch_size, args.devices) == (2, 16, 2, 4)
    assert (args.quant_bits, args.ring_bits, args.clip_norm, args.downlink_bits) == (7, 0, 10.0, 8)
    assert not hasattr(args, "ffa_alpha")
    tiny = apply_model_defaults(_flags().parse_args(["--model", "/some/hf-dir"]))
    assert (tiny.local_steps, tiny.batch_size, tiny.quant_bits) == (4, 8, None)


def test_a_given_bundle_keeps_the_simulators_codec_defaults(tmp_path: Path) -> None:
    from bench.time_to_target import _flags, apply_model_defaults, fedlora_bundle

    argv = ["--model", "smollm2-135m", "--bundle", str(tmp_path)]
    args = apply_model_defaults(_flags().parse_args(argv))
    assert args.local_steps == 16 and args.quant_bits is None and args.clip_norm is None
    assert fedlora_bundle(args, tmp_path / "cache") is None  # fedlora trains the given bundle too
