"""The outcome of one field check and the verdict over many."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class CheckOutcome(str, enum.Enum):
    """Outcome of a check. `FAIL` makes `fedlora diag` exit non-zero; `SKIP` always says why.

    Not the wire `Status` message (fl_protocol.wire.messages.Status) a node publishes about itself.
    """

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class CheckResult:
    """One check: its name, outcome, a one-line reason a field technician can act on, and the readings."""

    name: str
    status: CheckOutcome
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (stable keys: name, status, reason, details, seconds)."""
        return {
            "name": self.name,
            "status": self.status.value,
            "reason": self.reason,
            "details": self.details,
            "seconds": round(self.seconds, 3),
        }


def passed(name: str, reason: str, **details: Any) -> CheckResult:
    """A passing result."""
    return CheckResult(name, CheckOutcome.PASS, reason, details)


def warned(name: str, reason: str, **details: Any) -> CheckResult:
    """A result that works but deserves attention."""
    return CheckResult(name, CheckOutcome.WARN, reason, details)


def failed(name: str, reason: str, **details: Any) -> CheckResult:
    """A result that stops the device from working as it should."""
    return CheckResult(name, CheckOutcome.FAIL, reason, details)


def skipped(name: str, reason: str, **details: Any) -> CheckResult:
    """A check that does not apply here (no such hardware, no config); the reason says which."""
    return CheckResult(name, CheckOutcome.SKIP, reason, details)


def verdict(results: list[CheckResult]) -> CheckOutcome:
    """FAIL if any check failed, else WARN if any warned, else PASS (skips do not count)."""
    statuses = {r.status for r in results}
    if CheckOutcome.FAIL in statuses:
        return CheckOutcome.FAIL
    if CheckOutcome.WARN in statuses:
        return CheckOutcome.WARN
    return CheckOutcome.PASS
