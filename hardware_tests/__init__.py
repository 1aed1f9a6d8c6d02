"""Field diagnostics run on devices: `fedlora diag` and the pytest suite `hardware_tests/test_field.py`.

Every check is a plain function `check_x(ctx) -> CheckResult` (pass / warn / fail / skip with a reason);
`hardware_tests.runner.run_checks` runs them all, `hardware_tests.report` renders a table or JSON.
docs/diagnostics.md lists the checks and their thresholds.
"""
