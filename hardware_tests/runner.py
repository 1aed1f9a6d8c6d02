"""The list of field checks, in report order, and the loop that runs them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from hardware_tests import bundle_checks, node_checks, system_checks
from hardware_tests.context import DiagContext
from hardware_tests.result import CheckOutcome, CheckResult

logger = logging.getLogger(__name__)

Check = Callable[[DiagContext], CheckResult]

# (name, function). Names are the stable `name` keys of the JSON report.
CHECKS: tuple[tuple[str, Check], ...] = (
    ("platform", system_checks.check_platform),
    ("jetson", system_checks.check_jetson),
    ("python", system_checks.check_python),
    ("config", node_checks.check_config),
    ("memory", system_checks.check_memory),
    ("disk", system_checks.check_disk),
    ("thermal", system_checks.check_thermal),
    ("cpu_governor", system_checks.check_governor),
    ("clock", node_checks.check_clock),
    ("cert_expiry", node_checks.check_cert_expiry),
    ("broker", node_checks.check_broker),
    ("bundle", bundle_checks.check_bundle),
    ("trainer", bundle_checks.check_trainer),
    ("benchmark", bundle_checks.check_benchmark),
    ("ledger", node_checks.check_ledger),
)
CHECK_NAMES = tuple(name for name, _ in CHECKS)


def run_check(name: str, check: Check, ctx: DiagContext) -> CheckResult:
    """Run one check, timing it; an unexpected exception becomes a `fail` naming it, never a crash."""
    start = time.perf_counter()
    try:
        result = check(ctx)
    except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
        logger.debug("check %s raised", name, exc_info=True)
        result = CheckResult(name, CheckOutcome.FAIL, f"check crashed: {type(exc).__name__}: {exc}")
    return CheckResult(result.name, result.status, result.reason, result.details, time.perf_counter() - start)


def run_checks(ctx: DiagContext, *, only: tuple[str, ...] = ()) -> list[CheckResult]:
    """Run every check (or those named in `only`) in report order."""
    return [run_check(name, check, ctx) for name, check in CHECKS if not only or name in only]
