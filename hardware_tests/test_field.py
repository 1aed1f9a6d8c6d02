"""Field diagnostics as a pytest suite, for technicians and device CI:

    FEDLORA_DEVICE_CONFIG=/opt/fedlora/etc/device.toml pytest --pyargs hardware_tests
    pytest /path/to/hardware_tests/test_field.py          # config from $FEDLORA_DEVICE_CONFIG or the default

One test per check: `fail` fails the test, `skip` skips it with the check's reason, `warn` passes with a
warning. The same checks as `fedlora diag` (hardware_tests.runner.CHECKS).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest

from hardware_tests.context import DiagContext
from hardware_tests.diag_cli import resolve_config
from hardware_tests.result import CheckOutcome
from hardware_tests.runner import CHECKS, run_check


class FieldCheckWarning(UserWarning):
    """A check passed with a warning (e.g. certificate expiring, powersave governor)."""


@pytest.fixture(scope="module")
def diag_context() -> Iterator[DiagContext]:
    ctx = DiagContext.from_config_path(resolve_config(None))
    yield ctx
    ctx.close()


@pytest.mark.parametrize(("name", "check"), CHECKS, ids=[name for name, _ in CHECKS])
def test_field_check(name: str, check, diag_context: DiagContext) -> None:  # noqa: ANN001 - a Check
    result = run_check(name, check, diag_context)
    if result.status is CheckOutcome.SKIP:
        pytest.skip(result.reason)
    if result.status is CheckOutcome.WARN:
        warnings.warn(f"{name}: {result.reason}", FieldCheckWarning, stacklevel=1)
    assert result.status is not CheckOutcome.FAIL, f"{name}: {result.reason}"
