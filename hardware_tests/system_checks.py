"""Checks of the machine itself: platform and Jetson model, Python and packages, memory, disk,
temperatures, CPU frequency governor. All read through `ctx.roots`, so tests use fake trees."""

from __future__ import annotations

import logging
import platform
import re
import shutil
import sys
from importlib import metadata
from pathlib import Path

from hardware_tests.context import DiagContext
from hardware_tests.result import CheckResult, failed, passed, skipped, warned

logger = logging.getLogger(__name__)

MIN_PYTHON = (3, 10)
REQUIRED_PACKAGES = ("fedlora", "numpy", "cryptography", "zstandard", "paho-mqtt", "tokenizers")
OPTIONAL_PACKAGES = ("onnxruntime-training-cpu", "onnxruntime-training", "onnxruntime", "torch", "tomli")
LOW_MEMORY_WARN_MB = 1024.0  # less available than this: training large bundles will struggle
NO_SWAP_WARN_TOTAL_MB = 4096.0  # small boards (Jetson Nano class) without swap get OOM-killed
DISK_FAIL_MB = 100.0
DISK_WARN_MB = 1024.0
THERMAL_WARN_MARGIN_C = 10.0
DEFAULT_MAX_TEMP_C = 85.0
SLOW_GOVERNORS = frozenset({"powersave"})


def read_os_release(etc: Path) -> dict[str, str]:
    """KEY=value pairs of `etc/os-release` (quotes stripped); empty if absent."""
    try:
        text = (etc / "os-release").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            out[key.strip()] = value.strip().strip('"').strip("'")
    return out


def read_jetson(ctx: DiagContext) -> dict[str, str]:
    """L4T release (from `/etc/nv_tegra_release`) and board model; empty when this is no Jetson."""
    info: dict[str, str] = {}
    try:
        first = (ctx.roots.etc / "nv_tegra_release").read_text().splitlines()[0]
    except (OSError, IndexError):
        first = ""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", first)
    if match:
        info["l4t_release"] = f"{match.group(1)}.{match.group(2)}"
    try:
        model = ctx.roots.device_tree_model.read_bytes().rstrip(b"\0").decode(errors="replace").strip()
    except OSError:
        model = ""
    if model and ("jetson" in model.lower() or info):
        info["model"] = model
    return info


def check_platform(ctx: DiagContext) -> CheckResult:
    """Architecture, OS and kernel: informational, fails only on an architecture without a backend."""
    osr = read_os_release(ctx.roots.etc)
    arch = platform.machine()
    details = {"arch": arch, "os": osr.get("PRETTY_NAME", "unknown"), "kernel": platform.release()}
    if arch not in ("x86_64", "aarch64", "arm64"):
        return warned("platform", f"architecture {arch} is untested (x86_64 and aarch64 are)", **details)
    return passed("platform", f"{arch}, {details['os']}", **details)


def check_jetson(ctx: DiagContext) -> CheckResult:
    """Jetson board and L4T release; skips with a reason on other machines."""
    info = read_jetson(ctx)
    if not info:
        return skipped("jetson", "not a Jetson (no /etc/nv_tegra_release, no Jetson device-tree model)")
    if "l4t_release" not in info:
        return warned("jetson", "Jetson board without a readable /etc/nv_tegra_release (L4T unknown)", **info)
    return passed("jetson", f"{info.get('model', 'Jetson')}, L4T R{info['l4t_release']}", **info)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check_python(ctx: DiagContext) -> CheckResult:
    """Python >= 3.10 and the device's packages with their versions (a required one missing: fail)."""
    del ctx
    py = ".".join(str(v) for v in sys.version_info[:3])
    packages = {name: _version(name) for name in REQUIRED_PACKAGES + OPTIONAL_PACKAGES}
    details = {
        "python": py,
        "executable": sys.executable,
        "packages": {k: v for k, v in packages.items() if v is not None},
    }
    if sys.version_info[:2] < MIN_PYTHON:
        return failed("python", f"Python {py} is too old (need >= 3.10)", **details)
    missing = [name for name in REQUIRED_PACKAGES if packages[name] is None]
    if missing:
        return failed(
            "python", f"missing packages: {', '.join(missing)} (reinstall with install.sh)", **details
        )
    return passed("python", f"Python {py}, fedlora {packages['fedlora']}", **details)


def read_meminfo(proc: Path) -> dict[str, float]:
    """`/proc/meminfo` values in MiB (kB lines only)."""
    out = {}
    for line in (proc / "meminfo").read_text().splitlines():
        match = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if match:
            out[match.group(1)] = int(match.group(2)) / 1024.0
    return out


def check_memory(ctx: DiagContext) -> CheckResult:
    """MemAvailable against the device's gate (fail) and a comfort margin (warn); swap on small boards."""
    try:
        info = read_meminfo(ctx.roots.proc)
    except OSError as exc:
        return skipped("memory", f"cannot read meminfo: {exc}")
    if "MemAvailable" not in info or "MemTotal" not in info:
        return skipped("memory", "meminfo has no MemTotal/MemAvailable")
    details = {k: round(info.get(k, 0.0), 1) for k in ("MemTotal", "MemAvailable", "SwapTotal", "SwapFree")}
    gate_mb = float(ctx.config.gates.min_free_memory_mb) if ctx.config else 256.0
    available = info["MemAvailable"]
    if available < gate_mb:
        return failed(
            "memory",
            f"{available:.0f} MiB available, below the device gate of {gate_mb:.0f} MiB: "
            "the device will skip every round",
            **details,
        )
    if available < LOW_MEMORY_WARN_MB:
        return warned("memory", f"only {available:.0f} MiB available", **details)
    if info.get("SwapTotal", 0.0) == 0.0 and info["MemTotal"] < NO_SWAP_WARN_TOTAL_MB:
        return warned("memory", f"{info['MemTotal']:.0f} MiB RAM and no swap: add a swap file", **details)
    return passed(
        "memory",
        f"{available:.0f} of {info['MemTotal']:.0f} MiB available, swap {info.get('SwapTotal', 0.0):.0f} MiB",
        **details,
    )


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(ctx: DiagContext) -> CheckResult:
    """Free space at the data directory (the state directory lives on the same device normally)."""
    if ctx.config is None:
        return skipped("disk", "no device config: data directory unknown")
    data_dir = ctx.config.device.data_dir
    where = _existing_parent(data_dir)
    usage = shutil.disk_usage(where)
    free_mb = usage.free / 2**20
    details = {
        "path": str(data_dir),
        "measured_at": str(where),
        "free_mb": round(free_mb, 1),
        "total_mb": round(usage.total / 2**20, 1),
    }
    if free_mb < DISK_FAIL_MB:
        return failed(
            "disk", f"{free_mb:.0f} MiB free at {where}: state and spool writes will fail", **details
        )
    if free_mb < DISK_WARN_MB:
        return warned("disk", f"only {free_mb:.0f} MiB free at {where}", **details)
    return passed("disk", f"{free_mb:.0f} MiB free at {where}", **details)


def read_thermal_zones(thermal: Path) -> dict[str, float]:
    """`type` (or directory name) -> temperature in °C for every readable zone."""
    zones = {}
    for zone in sorted(thermal.glob("thermal_zone*")):
        try:
            temp_c = int((zone / "temp").read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue  # some zones (e.g. disabled sensors) refuse reads
        try:
            name = (zone / "type").read_text().strip() or zone.name
        except OSError:
            name = zone.name
        zones[f"{zone.name}:{name}"] = temp_c
    return zones


def check_thermal(ctx: DiagContext) -> CheckResult:
    """Hottest zone against the device's `max_temp_c` gate (fail) and 10 °C below it (warn)."""
    zones = read_thermal_zones(ctx.roots.thermal)
    if not zones:
        return skipped("thermal", f"no readable thermal zone under {ctx.roots.thermal}")
    limit = ctx.config.gates.max_temp_c if ctx.config else DEFAULT_MAX_TEMP_C
    hottest = max(zones, key=lambda k: zones[k])
    temp = zones[hottest]
    details = {"zones_c": zones, "max_temp_c": limit}
    if temp >= limit:
        return failed(
            "thermal", f"{hottest} at {temp:.1f} °C >= gate {limit:.0f} °C: rounds are skipped", **details
        )
    if temp >= limit - THERMAL_WARN_MARGIN_C:
        return warned("thermal", f"{hottest} at {temp:.1f} °C, close to the {limit:.0f} °C gate", **details)
    return passed("thermal", f"hottest {hottest} at {temp:.1f} °C", **details)


def check_governor(ctx: DiagContext) -> CheckResult:
    """CPU frequency governors; `powersave` slows training down (warn)."""
    governors = {}
    for path in sorted(ctx.roots.cpu.glob("cpu[0-9]*/cpufreq/scaling_governor")):
        try:
            governors[path.parent.parent.name] = path.read_text().strip()
        except OSError:
            continue
    if not governors:
        return skipped("cpu_governor", f"no cpufreq scaling_governor under {ctx.roots.cpu}")
    counts: dict[str, int] = {}
    for gov in governors.values():
        counts[gov] = counts.get(gov, 0) + 1
    slow = sorted(cpu for cpu, gov in governors.items() if gov in SLOW_GOVERNORS)
    details = {"governors": counts}
    if slow:
        return warned(
            "cpu_governor",
            f"{len(slow)} CPU(s) on 'powersave' (training will be slow; Jetson: sudo nvpmodel/jetson_clocks)",
            **details,
        )
    summary = ", ".join(f"{k}×{v}" for k, v in sorted(counts.items()))
    return passed("cpu_governor", summary, **details)
