"""Participation gates against fake sysfs/procfs trees."""

from __future__ import annotations

from pathlib import Path

from edge_runtime.agent.config import GatesSection
from edge_runtime.agent.gates import check_gates, measure


def _tree(
    tmp_path: Path,
    *,
    temps_milli: tuple[int, ...] = (40000,),
    mem_kb: int | None = 2_000_000,
    battery: tuple[int, str] | None = None,
    mains_online: int | None = None,
) -> GatesSection:
    thermal, power = tmp_path / "thermal", tmp_path / "power_supply"
    thermal.mkdir(parents=True)
    power.mkdir(parents=True)
    for i, milli in enumerate(temps_milli):
        (thermal / f"thermal_zone{i}").mkdir()
        (thermal / f"thermal_zone{i}" / "temp").write_text(f"{milli}\n")
    (thermal / "cooling_device0").mkdir()  # not a zone: ignored
    meminfo = tmp_path / "meminfo"
    lines = ["MemTotal:  8000000 kB"] + ([f"MemAvailable: {mem_kb} kB"] if mem_kb is not None else [])
    meminfo.write_text("\n".join(lines) + "\n")
    if battery is not None:
        (power / "BAT0").mkdir()
        (power / "BAT0" / "type").write_text("Battery\n")
        (power / "BAT0" / "capacity").write_text(f"{battery[0]}\n")
        (power / "BAT0" / "status").write_text(f"{battery[1]}\n")
    if mains_online is not None:
        (power / "AC").mkdir()
        (power / "AC" / "type").write_text("Mains\n")
        (power / "AC" / "online").write_text(f"{mains_online}\n")
    return GatesSection(
        thermal_root=thermal,
        power_supply_root=power,
        meminfo_path=meminfo,
        max_temp_c=80.0,
        min_free_memory_mb=512,
        min_battery_percent=30.0,
    )


def test_all_pass_and_readings_are_reported(tmp_path: Path) -> None:
    gates = _tree(tmp_path, temps_milli=(41000, 55500), battery=(90, "Discharging"))
    report = check_gates(gates)
    assert report.passed and report.reason == ""
    assert report.readings.details() == {
        "temp_c": 55.5,
        "free_memory_mb": 1953.1,
        "battery_percent": 90.0,
        "charging": 0,
    }


def test_hot_device_fails_thermal(tmp_path: Path) -> None:
    report = check_gates(_tree(tmp_path, temps_milli=(30000, 91000)))
    assert not report.passed and "thermal: 91.0 C above max_temp_c=80" in report.reason


def test_low_memory_fails(tmp_path: Path) -> None:
    report = check_gates(_tree(tmp_path, mem_kb=100 * 1024))
    assert not report.passed and "memory: 100 MiB free" in report.reason


def test_low_battery_fails_unless_charging(tmp_path: Path) -> None:
    assert "battery: 10%" in check_gates(_tree(tmp_path / "a", battery=(10, "Discharging"))).reason
    assert check_gates(_tree(tmp_path / "b", battery=(10, "Charging"))).passed
    assert check_gates(_tree(tmp_path / "c", battery=(10, "Discharging"), mains_online=1)).passed


def test_require_charging(tmp_path: Path) -> None:
    from dataclasses import replace

    gates = replace(_tree(tmp_path, battery=(95, "Discharging")), require_charging=True)
    assert "require_charging" in check_gates(gates).reason


def test_missing_sensors_pass_and_are_reported_absent(tmp_path: Path) -> None:
    gates = GatesSection(
        thermal_root=tmp_path / "none", power_supply_root=tmp_path / "none", meminfo_path=tmp_path / "none"
    )
    report = check_gates(gates)
    assert report.passed
    assert set(report.readings.details().values()) == {"absent"}


def test_unreadable_values_are_treated_as_absent(tmp_path: Path) -> None:
    gates = _tree(tmp_path, temps_milli=(), mem_kb=None)
    zone = gates.thermal_root / "thermal_zone0"
    zone.mkdir()
    (zone / "temp").write_text("garbage")
    readings = measure(gates)
    assert readings.temp_c is None and readings.free_memory_mb is None
