"""gateway.toml loading (expected devices from fleet_keys.json, strict keys) and the SQLite round log."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from aggregator_gateway.gateway.config import load_gateway_config
from aggregator_gateway.gateway.store import RoundStore
from fl_protocol.errors import ConfigError

BASE = """[node]
id = "gw-1"
role = "gateway"
fleet = "f"
[broker]
port = 1883
[identity]
signing_key_file = "signing.key"
fleet_keys_file = "fleet_keys.json"
"""


def _write(tmp_path: Path, extra: str = "") -> Path:
    nodes = {
        "d1": {"role": "device", "gateway": "gw-1", "ed25519_public_key": "00" * 32},
        "d2": {"role": "device", "gateway": "gw-2", "ed25519_public_key": "00" * 32},
        "d3": {"role": "device", "gateway": "gw-1", "ed25519_public_key": "00" * 32},
        "gw-1": {"role": "gateway", "gateway": None, "ed25519_public_key": "00" * 32},
    }
    (tmp_path / "fleet_keys.json").write_text(json.dumps({"format": 1, "fleet": "f", "nodes": nodes}))
    (tmp_path / "config.toml").write_text(BASE + extra)
    return tmp_path / "config.toml"


def test_expected_devices_come_from_fleet_keys(tmp_path: Path) -> None:
    config = load_gateway_config(_write(tmp_path))
    assert config.expected_devices == {"d1", "d3"}
    assert config.gateway.state_db == tmp_path / "gateway-state.sqlite3"
    assert config.unmasked_sums_dir is None


def test_gateway_section_overrides_and_hook_needs_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(
        tmp_path,
        '[gateway]\nexpected_devices = ["d9"]\ngroup_count = 2\ngroup_rule = "median"\n'
        '[debug]\nunmasked_sums_dir = "sums"\n',
    )
    config = load_gateway_config(path)
    assert config.expected_devices == {"d9"} and config.gateway.group_rule == "median"
    assert config.unmasked_sums_dir is None
    monkeypatch.setenv("FEDLORA_TEST_HOOKS", "1")
    assert config.unmasked_sums_dir == tmp_path / "sums"


def test_trusted_mode_loads(tmp_path: Path) -> None:
    config = load_gateway_config(_write(tmp_path, '[gateway]\ntrusted_mode = true\ntrusted_rule = "none"\n'))
    assert config.gateway.trusted_mode and config.gateway.trusted_rule == "none"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[gateway]\nbogus = 1\n", r"unknown key\(s\) bogus"),
        ('[gateway]\ngroup_rule = "mode"\n', "group_rule must be one of"),
        ('[gateway]\ntrusted_mode = true\ntrusted_rule = "norm_filter"\n', "trusted_rule must be one of"),
        ("[gateway]\ntrusted_mode = true\ntrusted_byzantine = -1\n", "trusted_byzantine must be >= 0"),
        ("[gateway]\ntrim_fraction = 0.5\n", "need 0 <= trim_fraction < 0.5"),
        ("[other]\nx = 1\n", r"unknown section\(s\) other"),
    ],
)
def test_invalid_config_is_refused(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_gateway_config(_write(tmp_path, extra))


def test_store_log_is_unique_ordered_and_dropped_when_finished(tmp_path: Path) -> None:
    store = RoundStore(tmp_path / "state.sqlite3")
    assert stat.S_IMODE((tmp_path / "state.sqlite3").stat().st_mode) == 0o600
    store.begin_round(4, task_frame=b"task", graph_seed=b"s" * 32, now_ms=1)
    assert store.append_frame(4, "advertise", "d1", b"a")
    assert not store.append_frame(4, "advertise", "d1", b"a-again")  # never logged (or counted) twice
    store.append_close(4, "advertise")
    store.append_close(4, "advertise")
    assert [(e.kind, e.stage, e.sender) for e in store.events(4)] == [
        ("frame", "advertise", "d1"),
        ("close", "advertise", ""),
    ]
    store.close()
    reopened = RoundStore(tmp_path / "state.sqlite3")
    latest = reopened.latest_round()
    assert latest is not None and latest.state == "active" and latest.graph_seed == b"s" * 32
    reopened.finish_round(4, state="done", outcome_frame=b"partial")
    assert reopened.events(4) == []
    latest = reopened.latest_round()
    assert latest is not None and latest.state == "done" and latest.outcome_frame == b"partial"
