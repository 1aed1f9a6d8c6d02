"""`fedlora simulate` configuration (TOML + flags, strict) and its network/device model arithmetic."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from aggregator_gateway.cloud.config import CloudConfig, CloudSection
from aggregator_gateway.cloud.tasks import build_task, codec_shape
from fedlora.simulate.config import SimConfig
from fedlora.simulate.network import FLEET_MIXES, LTE_M, RoundTraffic, compute_only_s, device_round_s
from fedlora.simulate.rounds import make_task
from fl_protocol.config import BrokerSection, IdentitySection, NodeSection
from fl_protocol.errors import ConfigError
from fl_protocol.wire.messages import RoundTask


def test_toml_and_flags_merge_flags_win(tmp_path: Path) -> None:
    path = tmp_path / "sim.toml"
    path.write_text('[simulate]\ndevices = 12\nfleet_mix = "wifi"\n[codec]\nquant_bits = 8\n')
    config = SimConfig.load(path, {"simulate": {"devices": 9, "gateways": None}})
    assert (config.simulate.devices, config.simulate.fleet_mix, config.codec.quant_bits) == (9, "wifi", 8)
    assert config.codec.ring_bits == 0 and config.privacy.mechanism == "none"  # the simulator's defaults


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[simulate]\ndevice = 3\n", "unknown key(s) device"),
        ("[network]\nx = 1\n", "unknown section(s) network"),
        ('[simulate]\nuplink = "carrier"\n', "uplink must be one of"),
        ("[simulate]\ndropout = 1.5\n", "dropout must be in"),
        ('[privacy]\nmechanism = "gaussian"\nnoise_multiplier = 1.0\ntarget_epsilon = 2.0\n', "exactly one"),
    ],
)
def test_bad_files_are_one_line_config_errors(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "sim.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")) as info:
        SimConfig.load(path)
    assert "\n" not in str(info.value)


def test_privacy_override_replaces_the_default_noise() -> None:
    config = SimConfig.load(None, {"privacy": {"mechanism": "gaussian", "noise_multiplier": 1.0}})
    assert config.privacy.mechanism == "gaussian" and config.privacy.noise_multiplier == 1.0
    changed = config.with_changes(simulate={"devices": 9})
    assert changed.simulate.devices == 9 and changed.privacy == config.privacy
    quiet = changed.with_changes(privacy={"mechanism": "none"})
    assert quiet.privacy.noise_multiplier is None


def test_dense_baseline_refuses_dp() -> None:
    config = SimConfig.load(None, {"privacy": {"mechanism": "skellam", "noise_multiplier": 0.5}})
    with pytest.raises(ConfigError, match="no DP"):
        config.with_changes(simulate={"uplink": "dense_fp32"}).check_static()


def test_ring_check_counts_the_noise() -> None:
    quiet = SimConfig.load(None, {"privacy": {"mechanism": "none"}, "codec": {"ring_bits": 14}})
    quiet.check(3584)  # 3 · 2^11 < 2^13: 14 bits hold the noiseless sum
    noisy = quiet.with_changes(privacy={"mechanism": "skellam", "noise_multiplier": 0.5})
    with pytest.raises(ConfigError, match="bits of DP noise"):
        noisy.check(3584)


def test_auto_ring_is_the_smallest_the_cloud_accepts() -> None:
    auto = SimConfig.load(None, {"codec": {"quant_bits": 7, "ring_bits": 0}, "simulate": {"devices": 8}})
    assert auto.with_ring_for(3584).codec.ring_bits == 9  # 2 gateways of 4: 7 + log2(4) bits
    auto.check(3584)
    big = auto.with_changes(simulate={"devices": 200, "gateways": 2})
    assert big.with_ring_for(3584).codec.ring_bits == 14  # cohorts of 100: 7 + 7 bits
    noisy = auto.with_changes(privacy={"mechanism": "skellam", "noise_multiplier": 0.5})
    assert noisy.with_ring_for(3584).codec.ring_bits > 9  # the noise needs headroom on top
    fixed = auto.with_changes(codec={"ring_bits": 20})
    assert fixed.with_ring_for(3584) is fixed
    loud = auto.with_changes(
        codec={"quant_bits": 30}, privacy={"mechanism": "skellam", "noise_multiplier": 5.0}
    )
    with pytest.raises(ConfigError, match="no ring of at most 32 bits"):
        loud.check(3584)


def _cloud_like(sim: SimConfig) -> CloudConfig:
    """A cloud config with the simulation's sections and one gateway for all of its devices."""
    return CloudConfig(
        node=NodeSection("cloud", "cloud", "f1"),
        broker=BrokerSection(),
        identity=IdentitySection(Path("signing.key"), Path("fleet_keys.json")),
        cloud=CloudSection(
            bundle_dir=Path("bundle"),
            rounds=sim.simulate.rounds,
            gateways=("g1",),
            store_dir=Path("store"),
            total_devices=sim.simulate.devices,
        ),
        privacy=sim.privacy,
        training=sim.training,
        codec=sim.codec,
        secagg=sim.secagg,
    )


def _cloud_task(cloud: CloudConfig, dimension: int, noise_multiplier: float) -> RoundTask:
    return build_task(
        cloud,
        round_id=1,
        model_version=0,
        model_sha256=bytes(32),
        shape=codec_shape(cloud, dimension),
        noise_multiplier=noise_multiplier,
        now_ms=0,
        random_bytes=bytes,
    )


@pytest.mark.parametrize(
    "privacy", [{"mechanism": "none"}, {"mechanism": "skellam", "noise_multiplier": 0.5}]
)
def test_the_simulator_and_the_cloud_resolve_the_same_ring(privacy: dict[str, object]) -> None:
    """One gateway of 12 devices (the cloud: total_devices 12), ring_bits = 0: both pick the same ring,
    and the simulator's task carries the cloud's settings blocks (seeds aside)."""
    sim = SimConfig.load(None, {"simulate": {"devices": 12, "gateways": 1}, "privacy": privacy})
    assert sim.codec.ring_bits == 0
    dimension = 3584
    z = sim.noise_multiplier(dimension)
    cloud_task = _cloud_task(_cloud_like(sim), dimension, z)
    resolved = sim.with_ring_for(dimension).codec.ring_bits
    assert cloud_task.codec.ring_bits == resolved
    assert resolved == 11 if privacy["mechanism"] == "none" else resolved > 11  # 7 + ceil(log2 12)
    sim_task = make_task(sim, np.zeros(dimension, np.float32), 1, noise_multiplier=z)
    assert (sim_task.training, sim_task.dp, sim_task.secagg) == (
        cloud_task.training,
        cloud_task.dp,
        cloud_task.secagg,
    )
    seeds = {"index_seed": cloud_task.codec.index_seed, "rotation_seed": cloud_task.codec.rotation_seed}
    assert dataclasses.replace(sim_task.codec, **seeds) == cloud_task.codec
    assert sim_task.codec.index_seed != cloud_task.codec.index_seed  # the simulator's own seeds


def test_trusted_mode_is_not_simulated() -> None:
    config = SimConfig.load(None, {"secagg": {"mode": "trusted"}})
    with pytest.raises(ConfigError, match="mode 'trusted' is not simulated"):
        config.check_static()


def test_device_time_adds_protocol_download_compute_and_upload() -> None:
    traffic = RoundTraffic(model_bytes=125_000, control_bytes=12_500, round_trips=5)
    t = device_round_s(LTE_M, traffic=traffic, payload_bytes=250_000, steps=4, step_s=2.0)
    assert t.protocol_s == pytest.approx(5 * 0.15 + 0.1)  # 12.5 kB at 1 Mbit/s = 0.1 s
    assert t.download_s == pytest.approx(1.0 + 0.15)
    assert t.compute_s == pytest.approx(8.0)
    assert t.upload_s == pytest.approx(2.0 + 0.075)
    assert t.total_s == pytest.approx(t.protocol_s + t.download_s + t.compute_s + t.upload_s)
    assert compute_only_s(steps=4, step_s=2.0, profile=LTE_M) == 8.0


def test_fleet_mix_draws_are_reproducible_and_follow_the_shares() -> None:
    mix = FLEET_MIXES["lte-m"]
    first = mix.draw(2000, np.random.default_rng(1))
    assert first == mix.draw(2000, np.random.default_rng(1))
    stragglers = sum(p.name == "lte-m-straggler" for p in first) / 2000
    assert 0.07 < stragglers < 0.13


def test_keep_fraction_reads_its_deprecated_name_in_file_and_flag(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`[codec] sparsity_fraction` and `--sparsity-fraction` still work for one release, each warned."""
    import argparse

    from fedlora.simulate.cli import add_arguments, overrides

    path = tmp_path / "sim.toml"
    path.write_text("[codec]\nsparsity_fraction = 0.25\n")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with caplog.at_level("WARNING"):
        from_file = SimConfig.load(path)
        from_flag = SimConfig.load(None, overrides(parser.parse_args(["--sparsity-fraction", "0.125"])))
    assert (from_file.codec.keep_fraction, from_flag.codec.keep_fraction) == (0.25, 0.125)
    warned = " | ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "sparsity_fraction is deprecated" in warned and "--sparsity-fraction is deprecated" in warned
    flag_wins = SimConfig.load(path, overrides(parser.parse_args(["--keep-fraction", "0.5"])))
    assert flag_wins.codec.keep_fraction == 0.5
    with pytest.raises(ConfigError, match="give --keep-fraction only"):
        overrides(parser.parse_args(["--sparsity-fraction", "0.1", "--keep-fraction", "0.2"]))
