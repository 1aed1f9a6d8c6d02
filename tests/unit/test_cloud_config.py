"""cloud.toml: a complete file loads with resolved paths; every kind of mistake is a ConfigError naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator_gateway.cloud.config import CloudConfig
from fl_protocol.errors import ConfigError

BASE = """
[node]
id = "cloud"
role = "cloud"
fleet = "f1"

[broker]
host = "127.0.0.1"
port = 1883

[identity]
signing_key_file = "signing.key"
fleet_keys_file = "fleet_keys.json"

[cloud]
bundle_dir = "bundle"
rounds = 3
gateways = ["g1", "g2"]
store_dir = "store"
total_devices = 16

[cloud.stage_timeouts_s]
masked = 120

[privacy]
mechanism = "gaussian"
noise_multiplier = 1.1
"""


def _load(tmp_path: Path, text: str) -> CloudConfig:
    path = tmp_path / "cloud.toml"
    path.write_text(text)
    return CloudConfig.load(path)


def test_complete_config_loads(tmp_path: Path) -> None:
    extra = '\n[optimizer]\nname = "fedadam"\nserver_lr = 0.01\n\n[aggregation]\nrobust = "median"\n'
    config = _load(tmp_path, BASE + extra)
    assert config.cloud.gateways == ("g1", "g2")
    assert config.cloud.store_dir == tmp_path / "store"
    assert config.identity.signing_key_file == tmp_path / "signing.key"
    assert config.cloud.stage_timeouts_s.masked == 120.0
    assert config.cloud.stage_timeouts_s.advertise == 30.0
    assert config.optimizer.name == "fedadam" and config.aggregation.robust == "median"
    assert config.min_cohort == config.privacy.min_survivors == 2
    assert config.codec.ring_bits == 32
    assert config.cloud.downlink_bits == 8  # quantized model deltas by default
    full_only = BASE.replace("total_devices = 16", "total_devices = 16\ndownlink_bits = 0")
    assert _load(tmp_path, full_only).cloud.downlink_bits == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("[cloud]", "[cloud]\ncolour = 1"), "unknown key"),
        (("[privacy]", "[privacy]\ntarget_epsilon = 2.0"), "exactly one"),
        (("[privacy]", '[privacy]\ntier = "a/b"'), "tier"),
        (('role = "cloud"', 'role = "gateway"'), "role must be 'cloud'"),
        (('gateways = ["g1", "g2"]', 'gateways = ["g1", "g1"]'), "unique"),
        (('gateways = ["g1", "g2"]', "gateways = []"), "at least one"),
        (("rounds = 3", 'rounds = "3"'), "expected int"),
        (("masked = 120", "masked = 0"), "timeout"),
        (("total_devices = 16", "total_devices = 16\n[codec]\nring_bits = 9"), "ring_bits"),
        (("total_devices = 16", "total_devices = 16\nmin_cohort = 1"), "min_cohort"),
        (
            ("total_devices = 16", "total_devices = 16\ndownlink_bits = 1"),
            r"downlink_bits must be 0 .*, got 1",
        ),
        (
            ("total_devices = 16", "total_devices = 16\ndownlink_bits = 9"),
            r"downlink_bits must be 0 .*, got 9",
        ),
        (("total_devices = 16", 'total_devices = 16\ndownlink_bits = "8"'), "expected int"),
    ],
)
def test_config_errors(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    old, new = change
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, BASE.replace(old, new, 1))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('\n[optimizer]\nname = "sgd"\n', "optimizer name"),
        ('\n[aggregation]\nweighting = "loss"\n', "weighting"),
        ("\n[extra]\nx = 1\n", "unknown section"),
        ('\n[secagg]\nmode = "plain"\n', "mode must be one of"),
    ],
)
def test_section_errors(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, BASE + extra)


def test_secagg_mode_reaches_the_task(tmp_path: Path) -> None:
    """`[secagg] mode` defaults to secagg and is carried in every task the cloud builds."""
    from aggregator_gateway.cloud.tasks import build_task, codec_shape

    assert _load(tmp_path, BASE).secagg.mode == "secagg"
    config = _load(tmp_path, BASE + '\n[secagg]\nmode = "trusted"\n')
    task = build_task(
        config,
        round_id=1,
        model_version=0,
        model_sha256=b"\x00" * 32,
        shape=codec_shape(config, 1000),
        noise_multiplier=1.1,
        now_ms=0,
        random_bytes=lambda n: b"\x01" * n,
    )
    assert task.secagg.mode == "trusted" and task.secagg.trusted


def test_privacy_section_is_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="privacy"):
        _load(tmp_path, BASE.split("[privacy]")[0])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        CloudConfig.load(tmp_path / "nope.toml")


def test_defaults_meet_the_devices_and_the_status_page_is_on(tmp_path: Path) -> None:
    """The cloud's default task tier is the devices' default record tier; the page is on, local only."""
    from edge_runtime.agent.config import DeviceSection

    config = _load(tmp_path, BASE)
    assert (
        config.privacy.tier
        == DeviceSection(bundle_dir=Path("b"), data_dir=Path("d")).default_tier
        == "personal"
    )
    assert (config.cloud.http_host, config.cloud.http_port) == ("127.0.0.1", 8080)


def test_cloud_warns_when_its_settings_break_the_tier_policy(tmp_path: Path) -> None:
    from aggregator_gateway.cloud_cli import warn_tier_mismatch
    from fl_protocol.dp.tiers import TierConfig

    personal = TierConfig().policy("personal")
    fits = BASE.replace("noise_multiplier = 1.1", f"noise_multiplier = {personal.min_noise_multiplier}")
    assert warn_tier_mismatch(_load(tmp_path, fits)) == []  # the tier's minimum noise, clip 1.0
    weak = BASE.replace("noise_multiplier = 1.1", "noise_multiplier = 0.3\nclip_norm = 2.0")
    lines = warn_tier_mismatch(_load(tmp_path, weak))
    assert len(lines) == 2 and f"max_clip_norm {personal.max_clip_norm}" in lines[0]
    assert f"min_noise_multiplier {personal.min_noise_multiplier}" in lines[1]
    public = weak + 'tier = "public"\n'
    assert warn_tier_mismatch(_load(tmp_path, public)) == []


def test_keep_fraction_reads_its_deprecated_name_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`[codec] sparsity_fraction` (the fraction kept, under its old name) still loads for one release."""
    with caplog.at_level("WARNING", logger="fl_protocol.config"):
        old = _load(tmp_path, BASE + "\n[codec]\nsparsity_fraction = 0.25\n")
    assert old.codec.keep_fraction == 0.25
    assert old == _load(tmp_path, BASE + "\n[codec]\nkeep_fraction = 0.25\n")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "sparsity_fraction is deprecated" in warnings[0] and "rename it to keep_fraction" in warnings[0]


def test_keep_fraction_under_both_names_is_refused(tmp_path: Path) -> None:
    both = BASE + "\n[codec]\nsparsity_fraction = 0.25\nkeep_fraction = 0.5\n"
    with pytest.raises(ConfigError, match=r"\[codec\]: give keep_fraction only"):
        _load(tmp_path, both)
