"""Persisted round state (0600, atomic, withdraw on restart), residual, and the update encoding + noise."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.agent.encode import encode_for_task
from edge_runtime.agent.state import STATE_FILE, DeviceState, Phase
from fl_protocol.codec.pipeline import encode_update
from fl_protocol.errors import ConfigError
from fl_protocol.wire.task_settings import DpSettings
from tests.unit.test_device_round import make_task


def test_state_is_private_and_survives_a_restart(tmp_path: Path) -> None:
    state = DeviceState(tmp_path / "s")
    assert state.last_round == -1 and state.withdraw_interrupted() is None
    state.set(3, Phase.JOINED)
    assert stat.S_IMODE((tmp_path / "s" / STATE_FILE).stat().st_mode) == 0o600
    restarted = DeviceState(tmp_path / "s")
    assert restarted.withdraw_interrupted().phase is Phase.JOINED  # type: ignore[union-attr]
    assert restarted.record.phase is Phase.WITHDRAWN and restarted.last_round == 3  # type: ignore[union-attr]
    assert DeviceState(tmp_path / "s").withdraw_interrupted() is None  # terminal now


def test_uploaded_round_is_withdrawn_with_outbox_note(tmp_path: Path) -> None:
    DeviceState(tmp_path).set(4, Phase.UPLOADED)
    state = DeviceState(tmp_path)
    state.withdraw_interrupted()
    assert "outbox" in state.record.reason  # type: ignore[union-attr]


def test_corrupt_state_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="refusing to start"):
        DeviceState(tmp_path)


def test_residual_round_trip_and_shape_check(tmp_path: Path) -> None:
    state = DeviceState(tmp_path)
    assert state.load_residual(4) is None
    state.save_residual(np.arange(4, dtype=np.float32))
    assert np.array_equal(state.load_residual(4), np.arange(4, dtype=np.float32))  # type: ignore[arg-type]
    assert state.load_residual(5) is None
    state.save_residual(None)
    assert state.load_residual(4) is None


def _delta() -> np.ndarray:
    return np.random.default_rng(0).normal(0, 0.1, 16).astype(np.float32)


def test_codec_has_no_hook_to_add_noise_before_the_clamp() -> None:
    """Issue 11 finding 1: float noise added before the q-bit clamp was mostly clamped away."""
    task = make_task()
    with pytest.raises(TypeError, match="unexpected keyword argument 'float_noise'"):
        encode_update(
            _delta(),
            residual=None,
            settings=task.codec,
            rng=np.random.default_rng(5),
            float_noise=lambda k: np.zeros(k),  # type: ignore[call-arg]
        )


@pytest.mark.parametrize("mechanism", ["none", "skellam", "gaussian"])
def test_noise_share_per_mechanism(mechanism: str) -> None:
    task = make_task()
    sigma = 0.0 if mechanism == "none" else 1.0
    task = dataclasses.replace(
        task,
        dp=DpSettings(
            mechanism=mechanism, noise_multiplier=sigma, clip_norm=1.0, min_survivors=2, target_delta=1e-5
        ),
    )
    noisy = encode_for_task(
        _delta(),
        residual=None,
        task=task,
        rounding_rng=np.random.default_rng(1),
        noise_rng=np.random.default_rng(2),
    )
    plain = encode_update(_delta(), residual=None, settings=task.codec, rng=np.random.default_rng(1))
    assert np.array_equal(noisy.ring_values, plain.ring_values) == (mechanism == "none")
