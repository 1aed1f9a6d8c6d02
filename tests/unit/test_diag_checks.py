"""Field checks against fake /proc, /sys and /etc trees: pass, warn, fail and skip paths."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hardware_tests import bundle_checks, node_checks, system_checks
from hardware_tests.context import DiagContext, SystemRoots
from hardware_tests.report import dumps, table, to_json
from hardware_tests.result import CheckOutcome, CheckResult, verdict
from hardware_tests.runner import CHECK_NAMES, run_check, run_checks


def _ctx(tmp_path: Path, config: object = None) -> DiagContext:
    roots = SystemRoots(proc=tmp_path / "proc", sys=tmp_path / "sys", etc=tmp_path / "etc")
    for root in (roots.proc, roots.sys, roots.etc):
        root.mkdir(parents=True, exist_ok=True)
    return DiagContext(config=config, roots=roots)  # type: ignore[arg-type]


def _meminfo(ctx: DiagContext, total_mb: int, available_mb: int, swap_mb: int) -> None:
    (ctx.roots.proc / "meminfo").write_text(
        f"MemTotal:       {total_mb * 1024} kB\nMemFree:  1 kB\nMemAvailable:   {available_mb * 1024} kB\n"
        f"SwapTotal:      {swap_mb * 1024} kB\nSwapFree:       {swap_mb * 1024} kB\n"
    )


@pytest.mark.parametrize(
    ("total", "available", "swap", "status"),
    [
        (8192, 6000, 2048, CheckOutcome.PASS),
        (8192, 600, 2048, CheckOutcome.WARN),
        (2048, 1800, 0, CheckOutcome.WARN),
        (8192, 100, 2048, CheckOutcome.FAIL),
    ],
)
def test_memory(tmp_path: Path, total: int, available: int, swap: int, status: CheckOutcome) -> None:
    ctx = _ctx(tmp_path)
    _meminfo(ctx, total, available, swap)
    result = system_checks.check_memory(ctx)
    assert result.status is status, result.reason
    assert result.details["MemAvailable"] == pytest.approx(available)


def test_memory_gate_comes_from_the_config(tmp_path: Path) -> None:
    config = SimpleNamespace(gates=SimpleNamespace(min_free_memory_mb=4000, max_temp_c=85.0))
    ctx = _ctx(tmp_path, config)
    _meminfo(ctx, 8192, 3000, 2048)
    assert system_checks.check_memory(ctx).status is CheckOutcome.FAIL


def test_memory_skips_without_meminfo(tmp_path: Path) -> None:
    assert system_checks.check_memory(_ctx(tmp_path)).status is CheckOutcome.SKIP


def _zone(ctx: DiagContext, index: int, kind: str, millideg: str) -> None:
    zone = ctx.roots.thermal / f"thermal_zone{index}"
    zone.mkdir(parents=True)
    (zone / "type").write_text(kind + "\n")
    (zone / "temp").write_text(millideg + "\n")


@pytest.mark.parametrize(
    ("temps", "status"),
    [
        (["45000", "50500"], CheckOutcome.PASS),
        (["45000", "78000"], CheckOutcome.WARN),
        (["90000"], CheckOutcome.FAIL),
        (["garbage"], CheckOutcome.SKIP),
        ([], CheckOutcome.SKIP),
    ],
)
def test_thermal(tmp_path: Path, temps: list[str], status: CheckOutcome) -> None:
    ctx = _ctx(tmp_path)
    for i, temp in enumerate(temps):
        _zone(ctx, i, f"zone{i}", temp)
    result = system_checks.check_thermal(ctx)
    assert result.status is status, result.reason
    if status is CheckOutcome.PASS:
        assert result.details["zones_c"] == {"thermal_zone0:zone0": 45.0, "thermal_zone1:zone1": 50.5}


def _governors(ctx: DiagContext, values: list[str]) -> None:
    for i, gov in enumerate(values):
        path = ctx.roots.cpu / f"cpu{i}" / "cpufreq"
        path.mkdir(parents=True)
        (path / "scaling_governor").write_text(gov + "\n")


@pytest.mark.parametrize(
    ("values", "status"),
    [
        (["schedutil", "schedutil"], CheckOutcome.PASS),
        (["performance", "powersave"], CheckOutcome.WARN),
        ([], CheckOutcome.SKIP),
    ],
)
def test_governor(tmp_path: Path, values: list[str], status: CheckOutcome) -> None:
    ctx = _ctx(tmp_path)
    ctx.roots.cpu.mkdir(parents=True)
    (ctx.roots.cpu / "cpufreq").mkdir()  # not a cpuN directory: ignored
    _governors(ctx, values)
    result = system_checks.check_governor(ctx)
    assert result.status is status, result.reason


def test_jetson_detected_from_l4t_and_device_tree(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    (ctx.roots.etc / "nv_tegra_release").write_text(
        "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64\n"
    )
    (ctx.roots.proc / "device-tree").mkdir()
    (ctx.roots.proc / "device-tree" / "model").write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\0")
    result = system_checks.check_jetson(ctx)
    assert result.status is CheckOutcome.PASS
    assert result.details == {"l4t_release": "35.4.1", "model": "NVIDIA Jetson Orin Nano Developer Kit"}


def test_jetson_skips_elsewhere_and_ignores_other_boards(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    assert system_checks.check_jetson(ctx).status is CheckOutcome.SKIP
    (ctx.roots.proc / "device-tree").mkdir()
    (ctx.roots.proc / "device-tree" / "model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\0")
    result = system_checks.check_jetson(ctx)
    assert result.status is CheckOutcome.SKIP and "not a Jetson" in result.reason


def test_jetson_without_l4t_file_warns(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    (ctx.roots.proc / "device-tree").mkdir()
    (ctx.roots.proc / "device-tree" / "model").write_bytes(b"NVIDIA Jetson Nano Developer Kit\0")
    assert system_checks.check_jetson(ctx).status is CheckOutcome.WARN


def test_platform_reads_os_release(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    (ctx.roots.etc / "os-release").write_text('NAME="Ubuntu"\nPRETTY_NAME="Ubuntu 22.04.4 LTS"\n')
    result = system_checks.check_platform(ctx)
    assert result.status is CheckOutcome.PASS and result.details["os"] == "Ubuntu 22.04.4 LTS"


def test_python_check_passes_in_this_environment(tmp_path: Path) -> None:
    result = system_checks.check_python(_ctx(tmp_path))
    assert result.status is CheckOutcome.PASS and "numpy" in result.details["packages"]


def test_config_dependent_checks_skip_without_config(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    for check in (
        system_checks.check_disk,
        node_checks.check_config,
        node_checks.check_clock,
        node_checks.check_cert_expiry,
        node_checks.check_broker,
        node_checks.check_ledger,
        bundle_checks.check_bundle,
        bundle_checks.check_trainer,
        bundle_checks.check_benchmark,
    ):
        result = check(ctx)
        assert result.status is CheckOutcome.SKIP and result.reason, check.__name__


def test_bad_config_is_a_failed_check_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "device.toml"
    path.write_text('[node]\nid = "d1"\nrole = "device"\nfleet = "f"\ngateway = "g1"\n[bogus]\nx = 1\n')
    ctx = DiagContext.from_config_path(path)
    result = node_checks.check_config(ctx)
    assert result.status is CheckOutcome.FAIL and "bogus" in result.reason


def test_disk_thresholds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = SimpleNamespace(device=SimpleNamespace(data_dir=tmp_path / "not" / "yet"))
    ctx = _ctx(tmp_path, config)
    for free_mb, status in ((50, CheckOutcome.FAIL), (500, CheckOutcome.WARN), (5000, CheckOutcome.PASS)):
        usage = SimpleNamespace(free=free_mb * 2**20, total=10**11, used=0)
        monkeypatch.setattr(system_checks.shutil, "disk_usage", lambda _p, u=usage: u)
        result = system_checks.check_disk(ctx)
        assert result.status is status
        assert result.details["measured_at"] == str(tmp_path)  # nearest existing parent


def test_run_check_turns_a_crash_into_a_fail(tmp_path: Path) -> None:
    def broken(_ctx: DiagContext) -> CheckResult:
        raise KeyError("boom")

    result = run_check("broken", broken, _ctx(tmp_path))
    assert result.status is CheckOutcome.FAIL and "KeyError" in result.reason


def test_report_json_and_table(tmp_path: Path) -> None:
    results = run_checks(_ctx(tmp_path))
    assert [r.name for r in results] == list(CHECK_NAMES)
    infinite = CheckResult("ledger", CheckOutcome.WARN, "spent", {"eps": float("inf")})
    report = json.loads(dumps(to_json([*results, infinite], config_path=None, now_s=0.0)))
    assert report["verdict"] == "warn" and report["checks"][-1]["details"]["eps"] == "inf"
    text = table(results)
    assert text.splitlines()[-1].startswith("verdict: ")
    assert (
        verdict([CheckResult("a", CheckOutcome.PASS, ""), CheckResult("b", CheckOutcome.FAIL, "")])
        is CheckOutcome.FAIL
    )
    assert verdict([CheckResult("a", CheckOutcome.SKIP, "")]) is CheckOutcome.PASS


def test_reference_batch_matches_export() -> None:
    onnx_graph = pytest.importorskip("export.onnx_graph")
    expected = onnx_graph.example_batch(batch_size=2, seq_len=16, vocab_size=260, seed=1234)
    got = bundle_checks.torch_reference_batch(260)
    assert got is not None
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value.numpy())
