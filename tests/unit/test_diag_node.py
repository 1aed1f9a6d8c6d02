"""Certificate/clock checks and the privacy-ledger check with a real provisioned node."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import pytest

from edge_runtime.ledger import open_device_ledger, round_ref
from fedlora.provision.cli import add_arguments, run
from hardware_tests import diag_cli, node_checks
from hardware_tests.context import DiagContext
from hardware_tests.result import CheckOutcome
from tests.kit.tasks import dp_task

_DAY_S = 86400.0


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fleet")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert (
        run(
            parser.parse_args(
                [
                    "--out",
                    str(out / "f"),
                    "--fleet",
                    "demo",
                    "--gateways",
                    "g1",
                    "--devices",
                    "1",
                    "--valid-days",
                    "100",
                ]
            )
        )
        == 0
    )
    node = out / "f" / "nodes" / "dev-0001"
    path = node / "device.toml"
    path.write_text(
        (node / "config.toml").read_text()
        + f'\n[device]\nbundle_dir = "{out / "b"}"\ndata_dir = "{out / "d"}"\n'
        f'state_dir = "{out / "s"}"\n'
    )
    return path


def _ctx(config_path: Path, now_s: float) -> DiagContext:
    return DiagContext.from_config_path(config_path, clock=lambda: now_s)


def _not_after(config_path: Path) -> float:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((config_path.parent / "node.crt").read_bytes())
    return cert.not_valid_after_utc.timestamp()


def test_clock_and_expiry_pass_now(config_path: Path) -> None:
    ctx = _ctx(config_path, dt.datetime.now(dt.timezone.utc).timestamp())
    assert node_checks.check_config(ctx).status is CheckOutcome.PASS
    assert node_checks.check_clock(ctx).status is CheckOutcome.PASS
    expiry = node_checks.check_cert_expiry(ctx)
    assert expiry.status is CheckOutcome.PASS and 99 <= expiry.details["days_left"]["node"] <= 100


def test_unset_clock_fails(config_path: Path) -> None:
    ctx = _ctx(config_path, dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc).timestamp())
    result = node_checks.check_clock(ctx)
    assert result.status is CheckOutcome.FAIL and "before" in result.reason and "NTP" in result.reason


def test_expiry_window(config_path: Path) -> None:
    end = _not_after(config_path)
    warn = node_checks.check_cert_expiry(_ctx(config_path, end - 10 * _DAY_S))
    assert warn.status is CheckOutcome.WARN and "10 days" in warn.reason
    expired = _ctx(config_path, end + _DAY_S)
    assert node_checks.check_cert_expiry(expired).status is CheckOutcome.FAIL
    assert node_checks.check_clock(expired).status is CheckOutcome.FAIL


def test_broker_unreachable_fails(config_path: Path) -> None:
    ctx = _ctx(config_path, 0.0)
    ctx.broker_timeout_s = 1.0
    result = node_checks.check_broker(ctx)  # host "g1" does not resolve here
    assert result.status is CheckOutcome.FAIL and "cannot reach" in result.reason


def test_ledger_absent_readable_spent_and_corrupt(config_path: Path) -> None:
    ctx = _ctx(config_path, 0.0)
    assert ctx.config is not None
    state = ctx.config.device.state_dir
    assert node_checks.check_ledger(ctx).status is CheckOutcome.SKIP
    ledger = open_device_ledger(state, ctx.config.identity.signing_key_file, ctx.config.tiers)
    task = dp_task(mechanism="gaussian", noise_multiplier=3.0, tier="personal")
    ledger.charge(round_ref(task, fleet="demo", cloud_id="cloud"), task)
    ok = node_checks.check_ledger(ctx)
    assert ok.status is CheckOutcome.PASS and ok.details["tiers"]["personal"]["epsilon_spent"] > 0
    task = dp_task(mechanism="none", tier="public", round_id=2)  # no noise: ε is infinite
    ledger.charge(round_ref(task, fleet="demo", cloud_id="cloud"), task)
    spent = node_checks.check_ledger(ctx)
    assert spent.status is CheckOutcome.WARN and "public" in spent.reason
    (state / "ledger.json").write_text("{not json")
    assert node_checks.check_ledger(ctx).status is CheckOutcome.FAIL
    (state / "ledger.json").unlink()  # a deleted ledger is a failure, not "no ledger yet"
    deleted = node_checks.check_ledger(ctx)
    assert deleted.status is CheckOutcome.FAIL and "ledger-reset" in deleted.reason


def test_cli_exit_codes_and_json(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    assert diag_cli.main(["--config", str(config_path), "--only", "config,clock", "--json", str(out)]) == 0
    assert [c["name"] for c in json.loads(out.read_text())["checks"]] == ["config", "clock"]
    assert "verdict: PASS" in capsys.readouterr().out
    assert diag_cli.main(["--config", str(config_path), "--only", "broker", "--broker-timeout-s", "1"]) == 1
    assert diag_cli.main(["--only", "nonsense"]) == 2
    capsys.readouterr()
    assert diag_cli.main(["--only", "platform", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "fedlora-diag"


def test_resolve_config_order(tmp_path: Path) -> None:
    assert diag_cli.resolve_config(tmp_path / "a.toml", {}) == tmp_path / "a.toml"
    assert diag_cli.resolve_config(None, {diag_cli.CONFIG_ENV: "/x/d.toml"}) == Path("/x/d.toml")


def test_ledger_warns_near_a_tier_budget(config_path: Path, tmp_path: Path) -> None:
    """At 99.8 % of a tier's ε budget the check warns (it used to pass silently until 100 %)."""
    import shutil

    node = tmp_path / "node"  # a copy of the node without the ledger marker other tests left by its key
    node.mkdir()
    for name in ("config.toml", "ca.crt", "node.crt", "node.key", "signing.key", "fleet_keys.json"):
        shutil.copy2(config_path.parent / name, node / name)
    state = tmp_path / "s"
    base = (node / "config.toml").read_text() + (
        f'\n[device]\nbundle_dir = "{tmp_path / "b"}"\ndata_dir = "{tmp_path / "d"}"\nstate_dir = "{state}"\n'
    )
    first = node / "device.toml"
    first.write_text(base)
    ctx = DiagContext.from_config_path(first)
    assert ctx.config is not None
    ledger = open_device_ledger(state, ctx.config.identity.signing_key_file, ctx.config.tiers)
    task = dp_task(mechanism="gaussian", noise_multiplier=3.0, tier="personal")
    ledger.charge(round_ref(task, fleet="demo", cloud_id="cloud"), task)
    spent = ledger.summary()["personal"]["epsilon_spent"]
    near = node / "device-near.toml"
    near.write_text(base + f"\n[privacy.tiers.personal]\nepsilon_budget = {spent / 0.998!r}\n")
    result = node_checks.check_ledger(DiagContext.from_config_path(near))
    assert result.status is CheckOutcome.WARN and "personal 99.8%" in result.reason
    far = node / "device-far.toml"
    far.write_text(base + f"\n[privacy.tiers.personal]\nepsilon_budget = {spent * 2!r}\n")
    assert node_checks.check_ledger(DiagContext.from_config_path(far)).status is CheckOutcome.PASS


def test_diag_finds_the_config_of_its_own_install(tmp_path: Path) -> None:
    """`PREFIX/venv/bin/fedlora diag` on a custom --prefix checks PREFIX/etc/device.toml by itself."""
    prefix = tmp_path / "custom"
    (prefix / "venv").mkdir(parents=True)
    assert diag_cli.resolve_config(None, {}, venv_prefix=str(prefix / "venv")) in (
        None,
        diag_cli.DEFAULT_CONFIG,
    )
    (prefix / "etc").mkdir()
    (prefix / "etc" / "device.toml").write_text("")
    own = prefix / "etc" / "device.toml"
    assert diag_cli.resolve_config(None, {}, venv_prefix=str(prefix / "venv")) == own
    assert diag_cli.resolve_config(
        None, {diag_cli.CONFIG_ENV: "/x/d.toml"}, venv_prefix=str(prefix / "venv")
    ) == (Path("/x/d.toml"))
    assert diag_cli.resolve_config(None, {}, venv_prefix=str(tmp_path / "not-a-venv")) != own


def test_junit_report_needs_no_pytest(config_path: Path, tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    out = tmp_path / "diag.xml"
    code = diag_cli.main(
        [
            "--config",
            str(config_path),
            "--only",
            "config,clock,broker",
            "--broker-timeout-s",
            "1",
            "--junit",
            str(out),
        ]
    )
    assert code == 1  # the broker host "g1" does not resolve here
    suite = ET.parse(out).getroot()
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert list(cases) == ["config", "clock", "broker"] and suite.get("failures") == "1"
    assert cases["broker"].find("failure") is not None and cases["config"].find("failure") is None
