"""`fedlora simulate` on tiny-llama (issue 10, "Must show"): 6 devices behind 2 gateways, 2 rounds, 30%
dropout. Every round's gateway sums equal the sum of the survivors' quantized updates, a run with the
same seed reproduces the same report, and bad input is a one-line error before any training starts."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is not a package on sys.path

from fedlora.cli import main
from fedlora.demo.workspace import BundleSpec, ensure_bundle
from fedlora.simulate.cohort_run import survivor_sum
from fedlora.simulate.config import SimConfig
from fedlora.simulate.report import ROUND_KEYS, without_clock_readings
from fedlora.simulate.run import Simulation, SimulationResult
from fl_protocol.codec.compress import vector_sha256
from fl_protocol.codec.pack import packed_bytes
from fl_protocol.codec.settings import sparse_count
from fl_protocol.errors import ConfigError
from fl_protocol.wire.envelope import encode_message
from fl_protocol.wire.messages import GlobalModel

MUST_SHOW = {
    "simulate": {
        "devices": 6,
        "gateways": 2,
        "rounds": 2,
        "dropout": 0.3,
        "fleet_mix": "ideal",  # availability 1: exactly the 30% dropout, nothing else
        "step_s": 0.5,  # fixed: modelled times do not read this machine's clock
        "eval_records": 16,
        "seed": 7,
    },
    "training": {"local_steps": 2, "batch_size": 4},
    "privacy": {"mechanism": "skellam", "noise_multiplier": 0.5},  # distributed DP noise shares on
    "codec": {"quant_bits": 8, "ring_bits": 28},  # the cloud's ring rule: 8 + 2 + 14 noise bits <= 28
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_bundle(BundleSpec(), tmp_path_factory.mktemp("sim-cache"), lambda _line: None)


def _simulate(config: SimConfig, bundle: Path, work: Path) -> SimulationResult:
    config = config.with_changes(simulate={"bundle_dir": str(bundle)})
    sim = Simulation(config, work_dir=work, cache_dir=work / "unused")
    try:
        return sim.run()
    finally:
        sim.close()


@pytest.fixture(scope="module")
def runs(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[SimulationResult]]:
    config = SimConfig.load(None, MUST_SHOW)
    yield [_simulate(config, bundle, tmp_path_factory.mktemp(f"sim-{i}")) for i in range(2)]


def test_gateway_sums_equal_the_survivors_quantized_updates(runs: list[SimulationResult]) -> None:
    result = runs[0]
    ring_bits = SimConfig.load(None, MUST_SHOW).codec.ring_bits
    assert len(result.rounds) == 2
    for outcome in result.rounds:
        assert (outcome.online, outcome.survivors) == (6, 4)  # round(0.3 · 3) = 1 vanishes per gateway
        for cohort in outcome.cohorts:
            assert cohort.ring_sum is not None and len(cohort.survivors) == 2
            assert set(cohort.masked_inputs) == set(cohort.survivors)
            expected = survivor_sum(cohort.masked_inputs, cohort.survivors, ring_bits)
            np.testing.assert_array_equal(cohort.ring_sum, expected)
            assert not np.array_equal(cohort.ring_sum, np.zeros_like(cohort.ring_sum))


def test_same_seed_reproduces_the_report(runs: list[SimulationResult]) -> None:
    first, second = (without_clock_readings(r.report) for r in runs)
    assert first == second
    assert runs[0].report["rounds"][0]["eval_loss"] < runs[0].report["final"]["initial_eval_loss"] + 0.05


def test_report_has_the_demo_keys_and_measured_packed_bytes(runs: list[SimulationResult]) -> None:
    report = runs[0].report
    dimension = report["config"]["model_dimension"]
    k = sparse_count(dimension, report["config"]["codec"]["keep_fraction"])
    packed = packed_bytes(k, report["config"]["codec"]["ring_bits"])
    for row, outcome in zip(report["rounds"], runs[0].rounds, strict=True):
        assert set(ROUND_KEYS) <= set(row)
        assert row["dropped"] == 2 and row["dense_fp32_bytes"] == 4 * dimension
        frames = outcome.update_frame_bytes
        assert row["uplink_bytes_per_device"] == round(sum(frames) / len(frames))
        # bit-packed at the ring width: k·b/8 plus the signed frame's header (< 600 B), not 4 B per value
        assert packed < row["uplink_bytes_per_device"] < packed + 600 < 4 * k
        assert row["seconds"] >= row["compute_only_s"] == pytest.approx(2 * 0.5)
    assert report["final"]["epsilon"] > 0


def _cloud_frame(message: object) -> int:
    """The signed frame the simulated cloud publishes (fedlora/simulate/cohort_run.py's fixed key)."""
    from fedlora.simulate.cohort_run import CREATED_MS, FLEET, identity_key

    key = identity_key("cloud", 0)
    signed = encode_message(
        message,  # type: ignore[arg-type]
        fleet=FLEET,
        round_id=0,
        sender="cloud",
        created_ms=CREATED_MS,
        signing_key=key,
    )
    return len(signed)


def test_devices_that_held_the_previous_version_download_its_delta(runs: list[SimulationResult]) -> None:
    """Default downlink_bits 8: round 1 everyone downloads the full model; round 2 the four devices that
    stayed in round 1 download the delta frame, the two that vanished (dropout) the full model."""
    result = runs[0]
    first, second = result.rounds
    row1, row2 = result.report["rounds"]
    assert first.delta_model_bytes == 0 and first.download_bytes == [first.model_bytes] * 6
    assert row1["downlink_bytes_per_device"] == first.model_bytes == row1["downlink_full_bytes"]
    delta = first.published_delta
    assert delta is not None and (delta.model_version, delta.base_version, delta.bits) == (1, 0, 8)
    assert delta.model_sha256 == vector_sha256(first.new_vector)  # the next global is the reconstruction
    delta_frame = _cloud_frame(delta)
    full_frame = _cloud_frame(GlobalModel.from_vector(0, first.new_vector))
    assert second.delta_model_bytes == delta_frame == row2["downlink_delta_bytes"] < full_frame
    assert second.model_bytes == full_frame == row2["downlink_full_bytes"]
    assert sorted(second.download_bytes) == sorted([delta_frame] * 4 + [full_frame] * 2)
    assert row2["downlink_bytes_total"] == 4 * delta_frame + 2 * full_frame
    assert row2["downlink_bytes_per_device"] == round((4 * delta_frame + 2 * full_frame) / 6)


def test_downlink_bits_zero_sends_every_device_the_full_model(bundle: Path, tmp_path: Path) -> None:
    small = {
        "simulate": {**MUST_SHOW["simulate"], "devices": 3, "gateways": 1, "dropout": 0.0},
        "training": {"local_steps": 1, "batch_size": 4},
    }
    small["simulate"]["downlink_bits"] = 0  # full models only: what every device got before deltas
    result = _simulate(SimConfig.load(None, small), bundle, tmp_path)
    for outcome, row in zip(result.rounds, result.report["rounds"], strict=True):
        assert outcome.published_delta is None and row["downlink_delta_bytes"] == 0
        assert outcome.download_bytes == [outcome.model_bytes] * 3
        assert row["downlink_bytes_per_device"] == row["downlink_full_bytes"] == outcome.model_bytes
        assert row["downlink_bytes_total"] == 3 * outcome.model_bytes
    second = result.rounds[1]
    assert second.model_bytes == _cloud_frame(GlobalModel.from_vector(0, result.rounds[0].new_vector))


def _never(*_args: object) -> None:
    raise AssertionError("training must not start on a bad configuration")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"simulate": {"fleet_mix": "5g-dream"}}, "unknown fleet mix '5g-dream'"),
        ({"simulate": {"devices": 4, "gateways": 2}}, "smaller than the SecAgg threshold"),
        ({"simulate": {"devices": 9, "gateways": 3, "dropout": 0.5}}, "smaller than the SecAgg threshold"),
        ({"codec": {"quant_bits": 8, "ring_bits": 20}}, "needed for"),
    ],
)
def test_bad_input_is_refused_before_training(
    bundle: Path, tmp_path: Path, changes: dict[str, dict[str, object]], message: str
) -> None:
    config = SimConfig.load(None, MUST_SHOW)
    with pytest.raises(ConfigError, match=message):
        merged = {
            n: {**MUST_SHOW.get(n, {}), **changes.get(n, {})}
            for n in ("simulate", "training", "codec", "privacy")
        }
        config = SimConfig.load(
            None, {**merged, "simulate": {**merged["simulate"], "bundle_dir": str(bundle)}}
        )
        Simulation(config, work_dir=tmp_path, cache_dir=tmp_path, executor_factory=_never)  # type: ignore[arg-type]


def test_cli_prints_one_line_errors(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for flags, needle in (
        (["--fleet-mix", "carrier-pigeon"], "unknown fleet mix"),
        (["--devices", "4", "--gateways", "2"], "SecAgg threshold"),
        (
            [
                "--mechanism",
                "skellam",
                "--noise-multiplier",
                "0.5",
                "--quant-bits",
                "12",
                "--ring-bits",
                "22",
            ],
            "needed for",
        ),
    ):
        code = main(["simulate", "--bundle", str(bundle), "--out", "/nonexistent/never-written", *flags])
        err = capsys.readouterr().err
        assert code == 1 and needle in err and err.count("\n") == 1, err


def test_time_to_target_benchmark_runs_both_presets(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench/time_to_target.py end to end on tiny-llama (its arithmetic: test_simulate_bench.py)."""
    from bench.time_to_target import main as time_to_target

    flags = "--devices 3 --gateways 1 --rounds 2 --local-steps 1 --batch-size 4 --eval-records 8 --step-s 0.5"
    code = time_to_target([*flags.split(), "--bundle", str(bundle), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    assert "| baseline |" in out and "| fedlora |" in out and "fedlora / baseline" in out
    assert (tmp_path / "out" / "baseline.json").exists() and (tmp_path / "out" / "loss.png").exists()


def test_the_step_time_is_measured_over_a_whole_job_of_local_steps(bundle: Path, tmp_path: Path) -> None:
    """local_steps · step_s must be a device job's time, fixed costs included, so the measurement times
    a job of exactly local_steps steps (not a capped number of them)."""
    from fedlora.simulate.executor import LocalExecutor

    asked: list[int] = []

    class Recording(LocalExecutor):
        def step_seconds(self, *, steps: int, batch_size: int, learning_rate: float) -> float:
            asked.append(steps)
            return super().step_seconds(steps=steps, batch_size=batch_size, learning_rate=learning_rate)

    config = SimConfig.load(None, MUST_SHOW).with_changes(
        simulate={"bundle_dir": str(bundle), "step_s": 0.0}, training={"local_steps": 6}
    )
    sim = Simulation(config, work_dir=tmp_path, cache_dir=tmp_path, executor_factory=Recording)
    try:
        assert sim._measure_step_s() > 0
    finally:
        sim.close()
    assert asked == [6]
