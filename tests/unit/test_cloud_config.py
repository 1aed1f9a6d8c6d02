"""cloud.toml: a complete file loads with resolved paths; every kind of mistake is a ConfigError naming it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from aggregator_gateway.cloud.config import CloudConfig
from aggregator_gateway.cloud.global_step import check_task_ring
from aggregator_gateway.cloud.tasks import build_task, codec_shape
from fl_protocol.errors import ConfigError
from fl_protocol.wire.messages import RoundTask

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
    # 7-bit values in the smallest ring (docs/benchmarks.md, "smollm2-135m")
    assert (config.codec.quant_bits, config.codec.ring_bits) == (7, 0)
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
    assert _load(tmp_path, BASE).secagg.mode == "secagg"
    config = _load(tmp_path, BASE + '\n[secagg]\nmode = "trusted"\n')
    task = _task(config)
    assert task.secagg.mode == "trusted" and task.secagg.trusted


def _task(config: CloudConfig, *, dimension: int = 1000, noise_multiplier: float = 1.1) -> RoundTask:
    return build_task(
        config,
        round_id=1,
        model_version=0,
        model_sha256=b"\x00" * 32,
        shape=codec_shape(config, dimension),
        noise_multiplier=noise_multiplier,
        now_ms=0,
        random_bytes=lambda n: b"\x01" * n,
    )


def test_a_task_carries_the_resolved_ring(tmp_path: Path) -> None:
    """ring_bits = 0 (the default): every task carries q + ceil(log2 16) + the noise's headroom bits for
    the 16 devices of total_devices, in both its codec and its SecAgg block; an explicit ring as given."""
    config = _load(tmp_path, BASE)
    task = _task(config)
    sigma = 1.1 * 1.0 * codec_shape(config, 1000).scale * math.sqrt(16 / 2)  # z C s sqrt(n / min_survivors)
    expected = 7 + 4 + math.ceil(math.log2(12 * sigma + 1)) + 1
    assert task.codec.ring_bits == task.secagg.ring_bits == expected
    assert 8 <= expected <= 32
    assert RoundTask.from_fields(task.to_fields()) == task  # a concrete ring goes on the wire
    quiet = _load(
        tmp_path, BASE.replace('mechanism = "gaussian"\nnoise_multiplier = 1.1', 'mechanism = "none"')
    )
    assert _task(quiet, noise_multiplier=0.0).codec.ring_bits == 7 + 4
    explicit = _load(tmp_path, BASE + "\n[codec]\nquant_bits = 8\nring_bits = 32\n")
    assert _task(explicit).codec.ring_bits == _task(explicit).secagg.ring_bits == 32


def test_max_cohort_is_total_devices_or_the_wire_cap(tmp_path: Path) -> None:
    assert _load(tmp_path, BASE).max_cohort == 16
    quiet = BASE.replace('mechanism = "gaussian"\nnoise_multiplier = 1.1', 'mechanism = "none"')
    assert _load(tmp_path, quiet.replace("total_devices = 16", "total_devices = 0")).max_cohort == 16_384
    assert _load(tmp_path, quiet.replace("total_devices = 16", "total_devices = 100000")).max_cohort == 16_384
    unknown = _load(tmp_path, quiet.replace("total_devices = 16\n", ""))
    assert unknown.max_cohort == 16_384
    assert _task(unknown, noise_multiplier=0.0).codec.ring_bits == 7 + 14  # no DP: 21 bits for 16,384


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # explicit rings: the sum of 16 devices' 7-bit values plus the least noise any model gets
        # (s = qmax / C = 63: σ = 1.1 · 63 · sqrt(16 / 2) ≈ 196, 13 noise bits), 7 + 4 + 13 = 24 bits
        ("[codec]\nring_bits = 10", r"\[codec\].ring_bits=10 < 24 needed for 16 clients' 7-bit values"),
        ("[codec]\nring_bits = 23", r"\[codec\].ring_bits=23 < 24 needed .* 13 bits of DP noise"),
        ("[codec]\nring_bits = 5", r"ring_bits must be 0 \(the smallest ring\) or in 8..32, got 5"),
        ("[codec]\nquant_bits = 12\nring_bits = 10", r"quant_bits must be in 2..10 \(ring_bits\), got 12"),
        ("[codec]\nquant_bits = 1", r"quant_bits must be in 2..32"),
        # ring 0 with settings that no ring of at most 32 bits holds
        (
            "[codec]\nquant_bits = 20",
            r"no ring of at most 32 bits holds 16 clients' 20-bit values .* \[codec\] ring_bits = 0 with "
            r"quant_bits = 20: lower quant_bits, the noise or \[cloud\].total_devices$",
        ),
    ],
)
def test_rings_no_model_can_use_are_refused_at_load(tmp_path: Path, change: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _load(tmp_path, BASE + "\n" + change + "\n")
    assert "\n" not in str(info.value)


def test_ring_zero_without_total_devices_asks_for_it(tmp_path: Path) -> None:
    """Unset, a cohort is bounded only by the wire (16,384 devices): noise for that many fits no ring."""
    with pytest.raises(
        ConfigError, match=r"16384 clients' 7-bit values .* set \[cloud\].total_devices"
    ) as info:
        _load(tmp_path, BASE.replace("total_devices = 16\n", ""))
    assert "\n" not in str(info.value)


def test_the_full_ring_check_at_start_counts_the_model(tmp_path: Path) -> None:
    """At load the scale is its least value qmax / C; at start the model's dimension fixes it. 256
    devices with z = 1.1 fit a small model's ring, but not SmolLM2-135M's (s ≈ 4,300 with rotation)."""
    config = _load(tmp_path, BASE.replace("total_devices = 16", "total_devices = 256"))
    check_task_ring(config, codec_shape(config, 1000), 1.1)
    with pytest.raises(ConfigError, match="no ring of at most 32 bits holds 256 clients' 7-bit values"):
        check_task_ring(config, codec_shape(config, 460_800), 1.1)
    explicit = _load(tmp_path, BASE + "\n[codec]\nring_bits = 25\n")
    check_task_ring(explicit, codec_shape(explicit, 1000), 1.1)
    with pytest.raises(ConfigError, match="bits of DP noise"):
        check_task_ring(explicit, codec_shape(explicit, 460_800), 1.1)


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
