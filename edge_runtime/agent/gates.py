"""Participation gates: thermal, free memory, battery and charging, read from sysfs/procfs.

A device that is hot, short of memory or on a low battery sits a round out instead of throttling, being
OOM-killed or draining its owner's battery halfway through. Every reading is reported in the status
details (so operators see why a device skips), and a reading that does not exist on this hardware (no
thermal zone, no battery) passes its gate: a mains-powered box has no battery to protect.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.agent.config import GatesSection

logger = logging.getLogger(__name__)

_CHARGING_STATES = frozenset({"Charging", "Full"})
_MAINS_TYPES = frozenset({"Mains", "USB", "USB_C", "USB_PD"})


@dataclass(frozen=True)
class Readings:
    """What the device measured; None where the hardware has no such sensor or it was unreadable."""

    temp_c: float | None
    free_memory_mb: float | None
    battery_percent: float | None
    charging: bool | None

    def details(self) -> dict[str, float | int | str]:
        """Status details (numbers, or 'absent' for a missing sensor)."""
        out: dict[str, float | int | str] = {}
        for key, value in (
            ("temp_c", self.temp_c),
            ("free_memory_mb", self.free_memory_mb),
            ("battery_percent", self.battery_percent),
        ):
            out[key] = "absent" if value is None else round(float(value), 1)
        out["charging"] = "absent" if self.charging is None else int(self.charging)
        return out


@dataclass(frozen=True)
class GateReport:
    """Outcome of the gates: `failures` names each gate that failed, with the measured value."""

    readings: Readings
    failures: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        """True when no gate failed."""
        return not self.failures

    @property
    def reason(self) -> str:
        """One line for the status message ('' when passed)."""
        return "; ".join(self.failures)


def read_max_temp_c(thermal_root: Path) -> float | None:
    """Hottest thermal zone in °C (sysfs gives millidegrees), or None if no zone is readable."""
    temps = []
    for path in sorted(Path(thermal_root).glob("thermal_zone*/temp")):
        value = _read_number(path)
        if value is not None:
            temps.append(value / 1000.0)
    return max(temps) if temps else None


def read_free_memory_mb(meminfo_path: Path) -> float | None:
    """MemAvailable from /proc/meminfo in MiB, or None if missing or unreadable."""
    try:
        lines = Path(meminfo_path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "MemAvailable:":
            try:
                return int(parts[1]) / 1024.0  # kB -> MiB
            except ValueError:
                return None
    return None


def read_battery(power_supply_root: Path) -> tuple[float | None, bool | None]:
    """(lowest battery capacity in %, charging) from /sys/class/power_supply; (None, None) without battery.

    Charging is true if a battery reports Charging/Full or an external supply (Mains, USB) is online.
    """
    capacities: list[float] = []
    charging: bool | None = None
    for supply in sorted(Path(power_supply_root).glob("*")):
        kind = _read_text(supply / "type")
        capacity = _read_number(supply / "capacity")
        if capacity is not None and kind in (None, "Battery"):
            capacities.append(capacity)
            status = _read_text(supply / "status")
            if status is not None:
                charging = bool(charging) or status in _CHARGING_STATES
        elif kind in _MAINS_TYPES and _read_number(supply / "online") == 1:
            charging = True
    if not capacities:
        return None, charging
    return min(capacities), bool(charging)


def measure(gates: GatesSection) -> Readings:
    """Read every sensor the gates look at."""
    battery, charging = read_battery(gates.power_supply_root)
    return Readings(
        temp_c=read_max_temp_c(gates.thermal_root),
        free_memory_mb=read_free_memory_mb(gates.meminfo_path),
        battery_percent=battery,
        charging=charging,
    )


def evaluate(gates: GatesSection, readings: Readings) -> GateReport:
    """Apply the configured limits to `readings` (pure; see the module doc for missing sensors)."""
    failures = []
    if readings.temp_c is not None and readings.temp_c > gates.max_temp_c:
        failures.append(f"thermal: {readings.temp_c:.1f} C above max_temp_c={gates.max_temp_c:g}")
    if readings.free_memory_mb is not None and readings.free_memory_mb < gates.min_free_memory_mb:
        failures.append(
            f"memory: {readings.free_memory_mb:.0f} MiB free, "
            f"below min_free_memory_mb={gates.min_free_memory_mb}"
        )
    if readings.battery_percent is not None:
        if readings.battery_percent < gates.min_battery_percent and not readings.charging:
            failures.append(
                f"battery: {readings.battery_percent:.0f}% and not charging, below "
                f"min_battery_percent={gates.min_battery_percent:g}"
            )
        if gates.require_charging and not readings.charging:
            failures.append("battery: not charging and require_charging is set")
    return GateReport(readings, tuple(failures))


def check_gates(gates: GatesSection) -> GateReport:
    """Measure and evaluate in one call (what the agent does on every task)."""
    report = evaluate(gates, measure(gates))
    if not report.passed:
        logger.info("participation gates failed: %s", report.reason)
    return report


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_number(path: Path) -> float | None:
    text = _read_text(path)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None
