"""Strict config loading: unknown keys, wrong types and missing keys are errors that name the key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from fl_protocol.config import BrokerSection, NodeSection, read_toml, section_from_table
from fl_protocol.errors import ConfigError


@dataclass(frozen=True)
class _Gates:
    max_temp_c: float = 80.0
    tiers: tuple[str, ...] = ("public",)


@dataclass(frozen=True)
class _Example:
    name: str
    gates: _Gates = _Gates()
    data_dir: Path | None = None


def test_reads_nested_sections_and_coerces() -> None:
    cfg = section_from_table(
        _Example,
        {"name": "d1", "gates": {"max_temp_c": 70, "tiers": ["a", "b"]}, "data_dir": "data"},
        "device",
    )
    assert cfg == _Example("d1", _Gates(70.0, ("a", "b")), Path("data"))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"name": "d1", "nmae": "x"}, r"\[device\]: unknown key\(s\) nmae"),
        ({}, r"missing required key name"),
        ({"name": 3}, r"device.name: expected str"),
        ({"name": "d", "gates": {"max_temp_c": "hot"}}, r"device.gates.max_temp_c"),
        ({"name": "d", "gates": {"bogus": 1}}, r"\[device.gates\]: unknown key\(s\) bogus"),
    ],
)
def test_rejects_bad_tables(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        section_from_table(_Example, table, "device")


def test_section_validation_becomes_config_error() -> None:
    with pytest.raises(ConfigError, match="must name its gateway"):
        section_from_table(NodeSection, {"id": "d", "role": "device", "fleet": "f"}, "node")
    with pytest.raises(ConfigError, match="port must be"):
        section_from_table(BrokerSection, {"port": 0}, "broker")


def test_read_toml_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\nid = 1")
    with pytest.raises(ConfigError, match="bad.toml"):
        read_toml(bad)


@dataclass(frozen=True)
class _Paths:
    given: Path
    default: Path = Path("state")
    absolute: Path = Path("/sys/class/thermal")
    optional: Path | None = None


def test_base_dir_resolves_every_relative_path_including_defaults(tmp_path: Path) -> None:
    cfg = section_from_table(_Paths, {"given": "keys/node.key"}, "node", base_dir=tmp_path)
    assert cfg == _Paths(tmp_path / "keys/node.key", tmp_path / "state", Path("/sys/class/thermal"), None)
