"""fl_transport/command.py: `python -m <role module>` behaves and prints exactly like `fedlora ROLE`."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fedlora import cli as fedlora_cli
from fl_protocol.errors import ConfigError
from fl_transport import command

STANDALONE = [
    ("device", "edge_runtime.cli"),
    ("gateway", "aggregator_gateway.gateway_cli"),
    ("provision", "fedlora.provision.cli"),
]


def _exit(call: Callable[[], object], code: int, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """(stdout, stderr) of `call`, which must end in argparse's SystemExit(code)."""
    with pytest.raises(SystemExit, match=f"^{code}$"):
        call()
    captured = capsys.readouterr()
    return captured.out, captured.err


@pytest.mark.parametrize(("name", "module"), STANDALONE)
def test_standalone_help_is_the_fedlora_commands_help(
    name: str, module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    umbrella = _exit(lambda: fedlora_cli.main([name, "--help"]), 0, capsys)
    alone = _exit(lambda: command.standalone(name, module, ["--help"]), 0, capsys)
    assert umbrella == alone
    assert umbrella[0].startswith(f"usage: fedlora {name} ")


@pytest.mark.parametrize(("name", "module"), STANDALONE)
def test_standalone_usage_errors_are_the_fedlora_commands_errors(
    name: str, module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    umbrella = _exit(lambda: fedlora_cli.main([name, "--no-such-flag"]), 2, capsys)
    alone = _exit(lambda: command.standalone(name, module, ["--no-such-flag"]), 2, capsys)
    assert umbrella == alone
    assert umbrella[1].startswith("usage: fedlora ") and ": error: " in umbrella[1]


def test_a_fedlora_error_is_one_line_and_its_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(args: object) -> int:
        raise ConfigError("device.toml: [node] id missing")

    monkeypatch.setattr("edge_runtime.cli.run", run)
    assert command.standalone("device", "edge_runtime.cli", ["-v", "--config", "x.toml", "--verbose"]) == 1
    assert capsys.readouterr().err == "fedlora device: error: device.toml: [node] id missing\n"


def test_verbose_flags_anywhere_reach_the_top_level_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr("aggregator_gateway.gateway_cli.run", lambda args: seen.append(args.verbose) or 0)
    assert command.standalone("gateway", "aggregator_gateway.gateway_cli", ["--config", "g.toml", "-vv"]) == 0
    assert seen == [2]


def test_an_interrupt_is_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def run(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("aggregator_gateway.cloud_cli.run", run)
    assert fedlora_cli.main(["cloud", "--config", "c.toml"]) == command.EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "fedlora cloud: interrupted\n"


def test_no_command_prints_the_help_and_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert fedlora_cli.main([]) == command.EXIT_USAGE == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: fedlora [-h] [-v] COMMAND ...")
    for name in fedlora_cli.SUBCOMMANDS:
        assert name in out
