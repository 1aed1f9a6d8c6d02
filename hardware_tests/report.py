"""Render check results: an aligned table for people, JSON for fleet tooling."""

from __future__ import annotations

import datetime as dt
import json
import math
import platform
import xml.etree.ElementTree as ET
from typing import Any

from hardware_tests.result import CheckOutcome, CheckResult, verdict

REPORT_FORMAT = "fedlora-diag"
REPORT_VERSION = 1
_REASON_WIDTH = 100


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats (an exhausted ε is ∞) by strings: JSON has no Infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def to_json(results: list[CheckResult], *, config_path: str | None, now_s: float) -> dict[str, Any]:
    """The JSON report: format, version, host, time, config, verdict, checks (stable keys)."""
    return _json_safe(
        {
            "format": REPORT_FORMAT,
            "version": REPORT_VERSION,
            "host": platform.node(),
            "generated_at": dt.datetime.fromtimestamp(now_s, dt.timezone.utc).isoformat(),
            "config": config_path,
            "verdict": verdict(results).value,
            "checks": [r.to_json() for r in results],
        }
    )


def dumps(report: dict[str, Any]) -> str:
    """Strict JSON text of a report (allow_nan=False: the report must parse anywhere)."""
    return json.dumps(report, indent=2, sort_keys=True, allow_nan=False) + "\n"


def table(results: list[CheckResult]) -> str:
    """Aligned human table: check, status, reason; then the verdict line."""
    width = max([len(r.name) for r in results] + [5])
    lines = [f"{'check':<{width}}  status  reason", f"{'-' * width}  ------  {'-' * 40}"]
    for r in results:
        reason = r.reason if len(r.reason) <= _REASON_WIDTH else r.reason[: _REASON_WIDTH - 1] + "…"
        lines.append(f"{r.name:<{width}}  {r.status.value.upper():<6}  {reason}")
    counts = {s: sum(1 for r in results if r.status.value == s) for s in ("pass", "warn", "fail", "skip")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    lines.append(f"verdict: {verdict(results).value.upper()} ({summary})")
    return "\n".join(lines) + "\n"


def junit_xml(results: list[CheckResult]) -> str:
    """JUnit XML (one `testcase` per check: fail -> failure, skip -> skipped, warn -> system-out) for
    device CI, written by `fedlora diag --junit` without pytest on the device."""
    suite = ET.Element(
        "testsuite",
        name="fedlora-diag",
        tests=str(len(results)),
        failures=str(sum(r.status is CheckOutcome.FAIL for r in results)),
        skipped=str(sum(r.status is CheckOutcome.SKIP for r in results)),
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    for r in results:
        case = ET.SubElement(
            suite, "testcase", classname="hardware_tests", name=r.name, time=f"{r.seconds:.3f}"
        )
        if r.status is CheckOutcome.FAIL:
            ET.SubElement(case, "failure", message=r.reason)
        elif r.status is CheckOutcome.SKIP:
            ET.SubElement(case, "skipped", message=r.reason)
        elif r.status is CheckOutcome.WARN:
            ET.SubElement(case, "system-out").text = f"warning: {r.reason}"
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
